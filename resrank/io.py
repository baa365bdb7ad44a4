"""Readers and writers for the field's file formats.

Every reader names the file and line of the first malformed record; every writer writes
to a temporary file beside the target and renames it, so a killed job never leaves a
half-written output behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from resrank.data.types import Qrels, Run
from resrank.errors import ResRankError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give outputs the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, ensure_ascii=False)
        handle.write("\n")


def read_json(path: str | Path) -> Any:
    path = _existing(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        obj = json.loads(text)
        _refuse_lone_surrogates(text, obj, str(path))
        return obj
    except json.JSONDecodeError as err:
        raise ResRankError(f"{path}:{err.lineno}: malformed JSON ({err.msg}); fix or regenerate the file") from None
    except UnicodeDecodeError as err:
        raise ResRankError(f"{path}: not valid UTF-8 text (byte {err.start}); re-encode the file as UTF-8") from None
    except (ValueError, RecursionError) as err:  # an integer of > 4300 digits, nesting deeper than Python's stack
        raise ResRankError(f"{path}: unreadable JSON ({str(err)[:100]}); fix or regenerate the file") from None


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 text file, transparently decompressing ``.gz``."""
    path = _existing(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` without the newline, refusing non-UTF-8 input clearly.

    Lines are decoded one at a time so the error names the offending line.
    """
    path = _existing(path)
    compressed = path.suffix == ".gz"
    opener = gzip.open if compressed else open
    lineno = 0
    try:
        with opener(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ResRankError(f"{path}:{lineno}: not valid UTF-8 text; re-encode the file as UTF-8") from None
                yield lineno, line.rstrip("\n").rstrip("\r")
    except (OSError, EOFError, zlib.error) as err:
        if not compressed:
            raise
        raise ResRankError(
            f"{path}:{lineno + 1}: not a valid gzip file ({err}); re-download it or compress it again with gzip"
        ) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResRankError(
                f"{path}:{lineno}: malformed JSON line ({err.msg}); each line must be one complete JSON object: "
                "fix the line or regenerate the file"
            ) from None
        except (ValueError, RecursionError) as err:  # an integer of > 4300 digits, nesting deeper than the stack
            raise ResRankError(f"{path}:{lineno}: unreadable JSON line ({str(err)[:100]}); fix the line") from None
        if not isinstance(obj, dict):
            raise ResRankError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        _refuse_lone_surrogates(line, obj, f"{path}:{lineno}")
        yield lineno, obj


def _refuse_lone_surrogates(text: str, obj: Any, where: str) -> None:
    """JSON may escape half a UTF-16 pair (``"\\ud800"``); such a string cannot be written as UTF-8 again."""
    if "\\ud" not in text.lower():
        return  # fast path: no surrogate escape at all
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ResRankError(
            f"{where}: a JSON string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not valid "
            "Unicode; fix the escaping (a character outside the BMP needs both halves of its pair)"
        ) from None


def write_jsonl(path: str | Path, rows: Any) -> None:
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``)."""
    run: Run = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ResRankError(
                f"{path}:{lineno}: malformed TREC run line (expected 6 fields 'qid Q0 docid rank score tag', "
                f"got {len(parts)}): {line[:80]!r}"
            )
        qid, _, docid, _, score, _ = parts
        try:
            value = float(score)
        except ValueError:
            raise ResRankError(
                f"{path}:{lineno}: score {score!r} is not a number; the 5th field must be the score"
            ) from None
        if not math.isfinite(value):
            raise ResRankError(f"{path}:{lineno}: score {score!r} is not finite; regenerate the run with finite scores")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise ResRankError(
                f"{path}:{lineno}: duplicate document {docid!r} for query {qid!r}; a document may appear once per "
                "query: remove the duplicate line"
            )
        docs[docid] = value
    if not run:
        raise ResRankError(f"{path}: the run file is empty; regenerate it or pass the right file")
    return run


def write_trec_run(path: str | Path, run: Run, tag: str) -> None:
    """Write a run sorted by descending score (ties by docid), refusing non-finite scores."""
    with atomic_write(path) as handle:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                if not math.isfinite(score):
                    raise ResRankError(f"refusing to write {path}: query {qid!r} doc {docid!r} has score {score}")
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (``qid iter docid rel``); also accepts BEIR TSV (``qid docid rel`` with header)."""
    qrels: Qrels = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) == 3:
            if lineno == 1 and parts[0] == "query-id":
                continue  # BEIR header
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise ResRankError(
                f"{path}:{lineno}: malformed qrels line (expected 'qid 0 docid rel' or 'qid docid rel'): {line[:80]!r}"
            )
        try:
            grade = int(float(rel))
        except (ValueError, OverflowError):
            raise ResRankError(
                f"{path}:{lineno}: relevance {rel!r} is not an integer; the last field must be the relevance grade"
            ) from None
        qrels.setdefault(qid, {})[docid] = grade
    if not qrels:
        raise ResRankError(f"{path}: the qrels file is empty; pass the complete qrels file")
    return qrels


def write_trec_qrels(path: str | Path, qrels: Qrels) -> None:
    with atomic_write(path) as handle:
        for qid in sorted(qrels):
            for docid, rel in sorted(qrels[qid].items()):
                handle.write(f"{qid} 0 {docid} {rel}\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ResRankError(f"{path}: file not found; check the path (relative paths resolve against the data root)")
    if not path.is_file():
        raise ResRankError(f"{path}: not a regular file; pass the path of a file, not a folder")
    if not os.access(path, os.R_OK):
        raise ResRankError(f"{path}: file is not readable; check its permissions")
    return path
