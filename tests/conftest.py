"""Shared fixtures: real data is reached only through RESRANK_DATA and skipped when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder of real IR data (../shared/data in CI); skip with a reason when absent."""
    value = os.environ.get("RESRANK_DATA")
    if not value:
        pytest.skip("RESRANK_DATA is not set: real-data test skipped (export RESRANK_DATA=../shared/data)")
    root = Path(value)
    if not root.is_dir():
        pytest.skip(f"RESRANK_DATA={value} is not a folder: real-data test skipped")
    return root


def require(root: Path, *relative: str) -> list[Path]:
    """Paths under the data root, skipping the test when any of them is missing."""
    paths = [root / rel for rel in relative]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data file(s) missing: {', '.join(missing)}")
    return paths
