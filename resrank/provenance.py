"""What produced a result: config hash, git commit, package versions, data checksums, hardware.

Recorded in every metrics file and table so a number can always be traced back.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("resrank", "torch", "transformers", "ranx", "bm25s", "rank-bm25", "ir-datasets", "numpy", "snakemake")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The source tree's commit (with ``-dirty`` when modified); 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or "unknown",
    }
    # Threads and GPUs matter only to jobs that ran a model, which have imported torch;
    # importing it here would add ~1.5 s to every evaluate/fuse/table job.
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    return info


def provenance(config_fingerprint: str | None = None, data_checksums: dict[str, str] | None = None,
               **extra: Any) -> dict[str, Any]:
    """One dict recorded beside every result."""
    record: dict[str, Any] = {
        "config_sha256": config_fingerprint,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "hardware": hardware(),
        "data_sha256": dict(sorted((data_checksums or {}).items())),
        "argv": sys.argv[1:],
    }
    record.update(extra)
    return record
