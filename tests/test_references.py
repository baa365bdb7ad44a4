"""The versioned reference figures equal the published ones transcribed in shared/docs/method.md §5."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from resrank.reports.tables import REFERENCES

ROWS = {  # method.md row label -> key in resources/references.yaml
    "BM25 (Pyserini 2CR)": "bm25-pyserini",
    "BM25 row as printed by RankGPT-lineage papers": "bm25-rankgpt",
    "RankGPT (gpt-4)": "rankgpt-gpt4",
    "RankZephyr 7B (BM25 top-100)": "rankzephyr",
    "FirstMistral": "firstmistral",
    "MonoT5-3B": "monot5-3b",
}


@pytest.fixture(scope="module")
def method_md() -> str:
    root = os.environ.get("RESRANK_DATA")
    path = Path(root).parent / "docs" / "method.md" if root else None
    if path is None or not path.is_file():
        pytest.skip("shared/docs/method.md not reachable (set RESRANK_DATA=../shared/data)")
    return path.read_text(encoding="utf-8")


def test_every_reference_has_a_source() -> None:
    refs = yaml.safe_load(REFERENCES.read_text())
    for system in refs["systems"]:
        assert system["source"] in refs["sources"], system["name"]
        assert system.get("ndcg@10") or system.get("beir_average"), system["name"]


def test_reference_figures_match_method_md(method_md: str) -> None:
    refs = yaml.safe_load(REFERENCES.read_text())
    by_key = {s["key"]: s for s in refs["systems"]}
    table = method_md.split("## 5.", 1)[1].split("##", 1)[0]
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    expected = ["DL19", "DL20", "covid", "nfc", "touche", "dbpedia", "scifact", "signal", "news", "robust04"]
    assert header[1:11] == expected
    checked = 0
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] not in ROWS:
            continue
        ours = by_key[ROWS[cells[0]]]["ndcg@10"]
        for column, cell in zip(refs["columns"], cells[1:11], strict=True):
            if cell:
                assert ours[column] == pytest.approx(float(cell), abs=1e-9), (cells[0], column)
                checked += 1
            else:
                assert column not in ours, (cells[0], column)
    assert checked == 10 + 10 + 2 * 4
    averages = dict(zip(("bm25", "dense", "rrf"), re.findall(r"\.(\d{4}) \((?:BM25|dense|RRF) candidates\)",
                                                              method_md), strict=True))
    assert by_key["resrank-paper-bm25"]["beir_average"] == float("0." + averages["bm25"])
    assert by_key["resrank-paper-dense"]["beir_average"] == float("0." + averages["dense"])
    assert by_key["resrank-paper-rrf"]["beir_average"] == float("0." + averages["rrf"])
    assert f"{by_key['resrank-paper-no-retrieval-loss']['beir_average']:.4f}" in method_md
