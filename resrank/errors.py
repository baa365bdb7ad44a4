"""One exception type for bad input, so the CLI can print one clear line and exit non-zero."""

from __future__ import annotations


class ResRankError(Exception):
    """Bad input or an unmet precondition the user can fix.

    The message names the file (and line) or config key, what is wrong, and what to do.
    The CLI prints it without a traceback and exits with status 2.
    """


class DataUnavailableError(ResRankError):
    """A dataset's files cannot be reached (no data root, no network, no cache).

    Distinct from malformed data so the workflow can report "not run: data unavailable"
    instead of failing the whole run.
    """
