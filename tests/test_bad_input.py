"""The bad-input matrix: every row is refused with one clear message and no partial output.

One test (or parametrised group) per row of the matrix. Where a CLI path exists the input
goes through the real entry point ``resrank.cli.main``: the test asserts exit status 2, a
single ``resrank: error:`` message on stderr that names the file (and line) or config key,
says what is wrong and what to do, and that the command's output path does not exist
afterwards. Rows without a CLI path (a candidate list longer than the reranker depth, a
checkpoint loaded in Python) go through the library function and expect ``ResRankError``.

Everything runs on small synthetic files in ``tmp_path`` and on tiny random models.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from resrank.cli import main
from resrank.config import load_config, merge
from resrank.data.prepared import write_prepared
from resrank.data.types import Dataset, Passage, Query
from resrank.errors import ResRankError
from resrank.io import write_trec_qrels, write_trec_run

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- helpers

BASE_CONFIG: dict[str, Any] = {
    "profile": "badinput",
    "seed": 3,
    "datasets": {"eval": ["toy"]},
    "encoder": {"model": "tiny-bert", "max_length": 32, "query_max_length": 16, "batch_size": 8},
    "reranker": {"model": "tiny-bert", "max_query_length": 16, "depth": 4, "batch_size": 2},
    "train": {
        "stage_order": ["s1"],
        "stages": {
            "s1": {
                "datasets": ["toy"],
                "steps": 3,
                "lr": 1.0e-3,
                "warmup_ratio": 0.0,
                "queries_per_step": 2,
                "list_size": 4,
                "hard_negatives": 1,
                "checkpoint_every": 1,
            }
        },
    },
    "variants": {"resrank": {}},
}


def write_config(tmp_path: Path, overrides: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
    """A valid profile config (results under tmp_path) with ``overrides`` deep-merged in."""
    data = merge(BASE_CONFIG, {"results_dir": str(tmp_path / "results")})
    data = merge(data, overrides or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    """Run the real CLI entry point; return (exit status, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def refused(rc: int, err: str, *patterns: str, absent: tuple[Path, ...] = ()) -> str:
    """Exit status 2, exactly one error message and no traceback, every pattern in it, outputs absent."""
    assert rc == 2, f"expected exit status 2, got {rc}; stderr:\n{err}"
    assert err.count("resrank: error: ") == 1, err
    assert "Traceback" not in err, err
    message = err[err.index("resrank: error: ") :]
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"
    for path in absent:
        assert not path.exists(), f"partial output left behind: {path}"
    return message


def lines(*rows: Any) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


GOOD_CORPUS = lines(
    {"_id": "d1", "title": "Sorting", "text": "sort a list in place"},
    {"_id": "d2", "title": "", "text": "open a file for reading"},
    {"_id": "d3", "title": "Sockets", "text": "connect a tcp socket"},
)
GOOD_QUERIES = lines({"_id": "q1", "text": "how to sort a list"}, {"_id": "q2", "text": "read a file"})
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def beir_folder(
    root: Path,
    corpus: str | bytes = GOOD_CORPUS,
    queries: str | bytes = GOOD_QUERIES,
    qrels: str | bytes = GOOD_QRELS,
) -> Path:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) with the given file contents."""
    folder = root / "beir-toy"
    (folder / "qrels").mkdir(parents=True)
    for path, content in ((folder / "corpus.jsonl", corpus), (folder / "queries.jsonl", queries),
                          (folder / "qrels" / "test.tsv", qrels)):
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def beir_spec(folder: Path) -> dict[str, Any]:
    return {"source": "beir", "path": str(folder), "split": "test", "first_stage": "bm25", "purpose": "eval"}


def trec_files(root: Path, topics: str | bytes, qrels: str, run: str, gz: bool = False) -> dict[str, Any]:
    """TREC topics / qrels / run files and the registry spec that reads them."""
    root.mkdir(parents=True, exist_ok=True)
    topics_path = root / ("topics.tsv.gz" if gz else "topics.tsv")
    raw = topics if isinstance(topics, bytes) else topics.encode("utf-8")
    topics_path.write_bytes(gzip.compress(raw) if gz else raw)
    (root / "qrels.txt").write_text(qrels, encoding="utf-8")
    (root / "run.trec").write_text(run, encoding="utf-8")
    return {"source": "trec", "topics": str(topics_path), "qrels": str(root / "qrels.txt"),
            "run": str(root / "run.trec"), "first_stage": "run", "purpose": "eval"}


GOOD_TOPICS = "q1\thow to sort a list\nq2\tread a file\n"
GOOD_TREC_QRELS = "q1 0 d1 1\nq2 0 d2 1\n"
GOOD_RUN = "q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0 bm25\nq2 Q0 d2 1 3.0 bm25\nq2 Q0 d3 2 0.5 bm25\n"


def retrieve_results_spec(root: Path, entries: Any, qrels: str = GOOD_TREC_QRELS) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.json").write_text(json.dumps(entries), encoding="utf-8")
    (root / "qrels.txt").write_text(qrels, encoding="utf-8")
    return {"source": "retrieve_results", "path": str(root / "top.json"), "qrels": str(root / "qrels.txt"),
            "first_stage": "candidates", "purpose": "eval"}


def hit(qid: Any, docid: Any, rank: int, content: str = "some passage text") -> dict[str, Any]:
    return {"content": content, "qid": qid, "docid": docid, "rank": rank, "score": 10.0 - rank}


def prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: dict[str, Any],
            overrides: dict[str, Any] | None = None, *flags: str) -> tuple[int, str, Path]:
    """``resrank data prepare`` of a dataset defined in the config; returns (status, stderr, out)."""
    cfg = write_config(tmp_path, merge({"datasets": {"definitions": {"mine": spec}}}, overrides or {}))
    out = tmp_path / "prepared" / "mine"
    rc, err = cli(capsys, "data", "prepare", "--config", cfg, "--dataset", "mine", "--out", out, *flags)
    return rc, err, out


TOY_TEXTS = {
    "d0": "sort a python list in place",
    "d1": "open and read a text file",
    "d2": "connect a tcp socket to a server",
    "d3": "parse a json document",
    "d4": "compress bytes with gzip",
    "d5": "format a date as a string",
}


def toy_prepared(tmp_path: Path, texts: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A prepared dataset ``toy`` (corpus, 2 queries) and its first-stage run; returns (data dir, run)."""
    texts = TOY_TEXTS if texts is None else texts
    dataset = Dataset(
        name="toy",
        queries=[Query("q1", "sort a list"), Query("q2", "read a file")],
        qrels={"q1": {"d0": 1, "d2": 0}, "q2": {"d1": 2}},
        corpus={d: Passage(d, t) for d, t in texts.items()},
    )
    data_dir = tmp_path / "data" / "toy"
    write_prepared(dataset, data_dir, source="test")
    run = {q: {d: float(len(texts) - i + (q == "q2")) for i, d in enumerate(sorted(texts))} for q in ("q1", "q2")}
    run_path = tmp_path / "runs" / "toy" / "bm25.trec"
    write_trec_run(run_path, run, tag="bm25")
    return data_dir, run_path


def fake_embeddings(path: Path, cfg_path: Path, checkpoint: Path | None, dim: int = 32) -> Path:
    """A passage-embedding file as `resrank encode` writes it, keyed to ``checkpoint``."""
    from safetensors.torch import save_file

    from resrank.rerank import checkpoint_key

    docids = sorted(TOY_TEXTS)
    key = checkpoint_key(load_config(cfg_path), checkpoint)
    save_file({"vectors": torch.randn(len(docids), dim)}, str(path),
              metadata={"docids": json.dumps(docids), "checkpoint": key})
    return path


def tiny_model(hidden: int | None = None, depth: int = 4) -> Any:
    """A ResRankModel of two tiny random BERTs (hidden 32 by default)."""
    from resrank.config import resolve
    from resrank.model.resrank import ResRankModel

    name = "tiny-bert" if hidden is None else f"tiny-bert-h{hidden}"
    cfg = resolve(merge(BASE_CONFIG, {"encoder": {"model": name}, "reranker": {"model": name, "depth": depth}}))
    torch.manual_seed(0)
    return ResRankModel.from_config(cfg.encoder, cfg.reranker), cfg


@pytest.fixture(scope="module")
def depth4_model() -> Any:
    """A tiny ResRankModel with reranker.depth = 4."""
    return tiny_model(depth=4)[0]


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    """The safetensors bytes of a tiny ResRankModel that matches BASE_CONFIG."""
    import tempfile

    model, _ = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        model.save_checkpoint(path)
        return path.read_bytes()


def rerank_args(cfg: Path, data_dir: Path, run: Path, emb: Path, checkpoint: Path | None,
                out: Path) -> list[Any]:
    which = ["--checkpoint", checkpoint] if checkpoint is not None else ["--untrained"]
    return ["rerank", "--config", cfg, *which, "--data", data_dir, "--first-stage", run, "--embeddings", emb,
            "--out", out / "run.trec", "--stats", out / "stats.json"]


# --------------------------------------------------------------------------- unknown names


def test_unknown_dataset_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    out = tmp_path / "prepared" / "nope"
    rc, err = cli(capsys, "data", "prepare", "--config", cfg, "--dataset", "dl91", "--out", out)
    refused(rc, err, r"unknown dataset 'dl91'", r"known datasets: .*\bdl19\b", r"datasets\.definitions",
            absent=(out, out.parent))


def test_unknown_variant_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"variants": {"no-residual": {"reranker": {"residual": False}}}})
    data_dir, run = toy_prepared(tmp_path)
    out = tmp_path / "out"
    argv = rerank_args(cfg, data_dir, run, tmp_path / "emb.safetensors", None, out)
    rc, err = cli(capsys, *argv[:3], "--variant", "no-residaul", *argv[3:])
    refused(rc, err, re.escape(str(cfg)), r"unknown variant 'no-residaul'", r"known variants: no-residual, resrank",
            absent=(out,))


@pytest.mark.parametrize(
    ("section", "name", "pattern"),
    [
        ("reranker", "tiny-brt", r"unknown model 'tiny-brt'.*short names: .*tiny-bert"),
        ("encoder", "./models/missing", r"model path './models/missing' is not a directory; pass an existing model"),
    ],
    ids=["unknown-short-name", "missing-folder"],
)
def test_unknown_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, name: str,
                            pattern: str) -> None:
    cfg = write_config(tmp_path, {section: {"model": name}})
    data_dir, run = toy_prepared(tmp_path)
    out = tmp_path / "emb.safetensors"
    rc, err = cli(capsys, "encode", "--config", cfg, "--untrained", "--data", data_dir, "--first-stage", run,
                  "--out", out)
    refused(rc, err, pattern, absent=(out,))


# --------------------------------------------------------------------------- config schema


@pytest.mark.parametrize(
    ("overrides", "key", "what"),
    [
        ({"retrieval": {"k1": -0.5}}, "retrieval.k1", r"less than or equal to the minimum of 0"),
        ({"retrieval": {"b": 1.5}}, "retrieval.b", r"greater than the maximum of 1"),
        ({"reranker": {"depth": 0}}, "reranker.depth", r"less than the minimum of 1"),
        ({"train": {"stages": {"s1": {"lr": 3}}}}, "train.stages.s1.lr", r"greater than the maximum of 1"),
        ({"reranker": {"depth": "ten"}}, "reranker.depth", r"'ten' is not of type 'integer'"),
        ({"reranker": {"depth": 12.5}}, "reranker.depth", r"12.5 is not of type 'integer'"),
        ({"reranker": {"residual": "yes"}}, "reranker.residual", r"'yes' is not of type 'boolean'"),
        ({"encoder": {"pooling": "max"}}, "encoder.pooling", r"'max' is not one of"),
        ({"seed": -1}, "seed", r"less than the minimum of 0"),
        ({"reranker": {"deepth": 10}}, "reranker", r"'deepth' was unexpected"),
    ],
    ids=["k1-range", "b-range", "depth-range", "lr-range", "depth-str", "depth-float", "bool-str", "enum",
         "seed-range", "unknown-key"],
)
def test_config_value_out_of_range_or_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 overrides: dict[str, Any], key: str, what: str) -> None:
    folder = beir_folder(tmp_path)
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder), overrides)
    refused(rc, err, re.escape(str(tmp_path / "config.yaml")), rf"config key '{re.escape(key)}'", what,
            r"see config/schema\.yaml for allowed values", absent=(out,))


def test_config_bad_value_in_a_variant_names_variant_and_key(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"variants": {"deep": {"reranker": {"depth": 5000}}}})
    out = tmp_path / "stage"
    rc, err = cli(capsys, "train", "--config", cfg, "--variant", "deep", "--stage", "s1", "--data-dir",
                  tmp_path / "data", "--runs-dir", tmp_path / "runs", "--out", out)
    refused(rc, err, r"\(variant 'deep'\): config key 'reranker\.depth'", r"5000 is greater than the maximum of 1000",
            r"see config/schema\.yaml", absent=(out,))


def test_config_dataset_definition_of_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path)
    rc, err, out = prepare(capsys, tmp_path, {**beir_spec(folder), "source": "beer"})
    refused(rc, err, r"config key 'datasets\.definitions\.mine': 'source' must be one of beir, trec",
            r"got 'beer'", absent=(out,))
    rc, err, out = prepare(capsys, tmp_path, {**beir_spec(folder), "folder": "x"})
    refused(rc, err, r"config key 'datasets\.definitions\.mine': unknown key\(s\) folder; allowed: ", absent=(out,))


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"profile: [unclosed\n", r"malformed YAML"),
        (b"- just\n- a list\n", r"top level must be a mapping of config keys"),
        (b"profile: caf\xe9\n", r"not valid UTF-8"),
    ],
    ids=["malformed", "not-a-mapping", "latin-1"],
)
def test_config_file_unparsable(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                pattern: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(content)
    out = tmp_path / "prepared"
    rc, err = cli(capsys, "data", "prepare", "--config", cfg, "--dataset", "embedded", "--out", out)
    refused(rc, err, re.escape(str(cfg)), pattern, absent=(out,))


# --------------------------------------------------------------------------- missing / unreadable files


def test_missing_run_and_qrels_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qrels = tmp_path / "qrels.txt"
    write_trec_qrels(qrels, {"q1": {"d1": 1}})
    out = tmp_path / "metrics.json"
    missing = tmp_path / "runs" / "bm25.trec"
    rc, err = cli(capsys, "evaluate", "--run", missing, "--qrels", qrels, "--out", out)
    refused(rc, err, re.escape(f"{missing}: file not found; check the path"), absent=(out,))
    run = tmp_path / "run.trec"
    write_trec_run(run, {"q1": {"d1": 1.0}}, tag="t")
    rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", tmp_path / "nope.txt", "--out", out)
    refused(rc, err, re.escape(f"{tmp_path / 'nope.txt'}: file not found"), absent=(out,))


def test_data_path_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.trec"
    write_trec_run(run, {"q1": {"d1": 1.0}}, tag="t")
    folder = tmp_path / "qrels.txt"
    folder.mkdir()
    out = tmp_path / "metrics.json"
    rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", folder, "--out", out)
    refused(rc, err, re.escape(f"{folder}: not a regular file"), r"pass the path of a file", absent=(out,))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qrels = tmp_path / "qrels.txt"
    write_trec_qrels(qrels, {"q1": {"d1": 1}})
    run = tmp_path / "run.trec"
    write_trec_run(run, {"q1": {"d1": 1.0}}, tag="t")
    run.chmod(0)
    out = tmp_path / "metrics.json"
    try:
        rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", qrels, "--out", out)
    finally:
        run.chmod(0o644)
    refused(rc, err, re.escape(f"{run}: file is not readable; check its permissions"), absent=(out,))


def test_beir_folder_missing_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path)
    (folder / "corpus.jsonl").unlink()
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, rf"BEIR folder {re.escape(str(folder))} lacks corpus\.jsonl; re-download or re-extract",
            absent=(out,))
    (folder / "corpus.jsonl").write_text(GOOD_CORPUS, encoding="utf-8")
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "dev.tsv")
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, r"has no qrels for split 'test'", r"splits present: dev", absent=(out,))


def test_missing_embeddings_and_incomplete_prepared_folder(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    data_dir, run = toy_prepared(tmp_path)
    out = tmp_path / "out"
    emb = tmp_path / "emb.safetensors"
    rc, err = cli(capsys, *rerank_args(cfg, data_dir, run, emb, None, out))
    refused(rc, err, re.escape(f"{emb}: embeddings not found; run `resrank encode` first"), absent=(out,))
    (data_dir / "manifest.json").unlink()  # an interrupted `data prepare`
    bm25 = tmp_path / "bm25.trec"
    rc, err = cli(capsys, "retrieve", "bm25", "--config", cfg, "--data", data_dir, "--out", bm25)
    refused(rc, err, re.escape(f"incomplete prepared data in {data_dir}; re-run `resrank data prepare`"),
            absent=(bm25,))


def test_missing_dataset_files_are_recorded_as_unavailable_then_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Absent data: `data prepare` exits 2 naming the path and how to provide it, leaving nothing;
    with --record-unavailable it records the reason in a manifest and exits 0, and the first step
    that needs the data is refused with exit status 2 and writes nothing."""
    spec = {**beir_spec(tmp_path / "absent"), "how_to_provide": "unzip it here"}
    rc, err, out = prepare(capsys, tmp_path, spec)
    refused(rc, err, r"dataset 'mine' is unavailable: missing path .*How to provide it: unzip it here", absent=(out,))
    rc, err, out = prepare(capsys, tmp_path, spec, None, "--record-unavailable")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["available"] is False
    assert f"dataset 'mine' is unavailable: missing path {tmp_path / 'absent'}" in manifest["reason"]
    assert "How to provide it: unzip it here" in manifest["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    run = tmp_path / "bm25.trec"
    rc, err = cli(capsys, "retrieve", "bm25", "--config", tmp_path / "config.yaml", "--data", out, "--out", run)
    refused(rc, err, r"dataset 'mine' was not prepared: .*unzip it here", absent=(run,))


# --------------------------------------------------------------------------- malformed records


@pytest.mark.parametrize(
    ("file", "content", "pattern"),
    [
        ("corpus", GOOD_CORPUS + '{"_id": "d4", "text": "half a line\n', r"corpus\.jsonl:4: malformed JSON line"),
        ("corpus", GOOD_CORPUS + '["d4", "an array"]\n', r"corpus\.jsonl:4: expected a JSON object per line, got list"),
        ("corpus", lines({"_id": "d1", "text": "x"}, {"text": "no id"}),
         r"corpus\.jsonl:2: missing required key '_id'"),
        ("corpus", lines({"_id": "d1", "text": 7}), r"corpus\.jsonl:1: 'text' must be a string, got int"),
        ("queries", lines({"_id": "q1", "text": "x"}, {"_id": ["q2"], "text": "y"}),
         r"queries\.jsonl:2: '_id' must be a string or integer, got list"),
    ],
    ids=["truncated-line", "array-line", "missing-id", "text-not-string", "id-not-scalar"],
)
def test_malformed_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, content: str,
                         pattern: str) -> None:
    folder = beir_folder(tmp_path, **{file: content})
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, re.escape(str(folder)), pattern, r"(fix|every line needs|must be|expected)", absent=(out,))


def test_malformed_tsv_qrels_and_topics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\n")
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, re.escape(str(folder / "qrels" / "test.tsv")) + r":3: malformed qrels line",
            r"expected 'qid 0 docid rel' or 'qid docid rel'", absent=(out,))
    spec = trec_files(tmp_path / "trec", "q1\thow to sort a list\nq2 read a file\n", GOOD_TREC_QRELS, GOOD_RUN)
    rc, err, out = prepare(capsys, tmp_path, spec)
    refused(rc, err, r"topics\.tsv:2: malformed topic line \(expected 'qid<TAB>text'\)", absent=(out,))


@pytest.mark.parametrize(
    ("run", "pattern"),
    [
        ("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0\n", r"run\.trec:2: malformed TREC run line \(expected 6 fields "
                                                r"'qid Q0 docid rank score tag', got 5\)"),
        ("q1 Q0 d1 1 high bm25\n", r"run\.trec:1: score 'high' is not a number; the 5th field must be the score"),
        ("q1 Q0 d1 1 nan bm25\n", r"run\.trec:1: score 'nan' is not finite; regenerate the run"),
        ("\n\n", r"run\.trec: the run file is empty; regenerate it or pass the right file"),
    ],
    ids=["five-fields", "score-word", "score-nan", "empty"],
)
def test_malformed_trec_run_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str], run: str,
                                  pattern: str) -> None:
    qrels = tmp_path / "qrels.txt"
    write_trec_qrels(qrels, {"q1": {"d1": 1}})
    (tmp_path / "run.trec").write_text(run, encoding="utf-8")
    out = tmp_path / "metrics.json"
    rc, err = cli(capsys, "evaluate", "--run", tmp_path / "run.trec", "--qrels", qrels, "--out", out)
    refused(rc, err, pattern, absent=(out,))


def test_malformed_trec_run_as_first_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = trec_files(tmp_path / "trec", GOOD_TOPICS, GOOD_TREC_QRELS, GOOD_RUN + "q2 Q0 d9 3 x bm25\n")
    rc, err, out = prepare(capsys, tmp_path, spec)
    refused(rc, err, r"run\.trec:5: score 'x' is not a number", absent=(out,))


@pytest.mark.parametrize(
    ("qrels", "pattern"),
    [
        ("q1 0 d1 1\nq1 0 d2 relevant\n", r"qrels\.txt:2: relevance 'relevant' is not an integer; the last field "
                                          r"must be the relevance grade"),
        ("q1 0 d1 1 extra\n", r"qrels\.txt:1: malformed qrels line \(expected 'qid 0 docid rel' or 'qid docid rel'\)"),
        ("q1 0 d1 inf\n", r"qrels\.txt:1: relevance 'inf' is not an integer"),
        ("", r"qrels\.txt: the qrels file is empty; pass the complete qrels file"),
    ],
    ids=["word", "five-fields", "infinite", "empty"],
)
def test_malformed_qrels_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str], qrels: str,
                               pattern: str) -> None:
    run = tmp_path / "run.trec"
    write_trec_run(run, {"q1": {"d1": 1.0}}, tag="t")
    (tmp_path / "qrels.txt").write_text(qrels, encoding="utf-8")
    out = tmp_path / "metrics.json"
    rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", tmp_path / "qrels.txt", "--out", out)
    refused(rc, err, pattern, absent=(out,))


def test_malformed_retrieve_results_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [{"query": "sort", "hits": [hit("q1", "d1", 1), {"content": "x", "qid": "q1", "rank": 2, "score": 1}]}]
    rc, err, out = prepare(capsys, tmp_path, retrieve_results_spec(tmp_path / "rr", entries))
    refused(rc, err, r"top\.json: entry 0 hit 1: missing key 'docid' \(needs content, qid, docid, rank, score\)",
            absent=(out,))


# --------------------------------------------------------------------------- duplicates, empties, encodings


def test_duplicate_doc_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path, corpus=GOOD_CORPUS + lines({"_id": "d2", "text": "again"}))
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, r"corpus\.jsonl:4: duplicate document id 'd2' \(first seen on line 2\)",
            r"remove or rename the duplicate", absent=(out,))

    entries = [{"query": "sort", "hits": [hit("q1", "d1", 1), hit("q1", 7, 2), hit("q1", "7", 3)]}]
    rc, err, out = prepare(capsys, tmp_path, retrieve_results_spec(tmp_path / "rr", entries))
    refused(rc, err, r"top\.json: entry 0 hit 2: duplicate docid '7' in the same entry", absent=(out,))

    run = tmp_path / "dup.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", encoding="utf-8")
    (tmp_path / "qrels.txt").write_text(GOOD_TREC_QRELS, encoding="utf-8")
    metrics = tmp_path / "metrics.json"
    rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", tmp_path / "qrels.txt", "--out", metrics)
    refused(rc, err, r"dup\.trec:2: duplicate document 'd1' for query 'q1'; .*remove the duplicate line",
            absent=(metrics,))


def test_duplicate_query_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path, queries=GOOD_QUERIES + lines({"_id": "q1", "text": "again"}))
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, r"queries\.jsonl:3: duplicate query id 'q1' \(first seen on line 1\)", absent=(out,))


def test_queries_with_no_candidates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_without_q2 = "q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0 bm25\n"
    spec = trec_files(tmp_path / "trec", GOOD_TOPICS, GOOD_TREC_QRELS, run_without_q2)
    rc, err, out = prepare(capsys, tmp_path, spec)
    refused(rc, err, re.escape(str(tmp_path / "trec" / "run.trec")),
            r"no candidates for 1 judged topic\(s\) \(e\.g\. q2\)", r"do not belong together", absent=(out,))

    entries = [{"query": "sort", "hits": [hit("q1", "d1", 1)]}, {"query": "read a file", "hits": []}]
    rc, err, out = prepare(capsys, tmp_path, retrieve_results_spec(tmp_path / "rr", entries))
    refused(rc, err, r"top\.json: entry 1: 'hits' must be a non-empty list", absent=(out,))


def test_empty_query_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = beir_folder(tmp_path, queries=lines({"_id": "q1", "text": "sort"}, {"_id": "q2", "text": "  "}))
    rc, err, out = prepare(capsys, tmp_path, beir_spec(folder))
    refused(rc, err, r"queries\.jsonl:2: query 'q2' has empty text; fix the file", absent=(out,))


def test_empty_passages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    data_dir, run = toy_prepared(tmp_path, {**TOY_TEXTS, "d3": "  "})
    out = tmp_path / "emb.safetensors"
    rc, err = cli(capsys, "encode", "--config", cfg, "--untrained", "--data", data_dir, "--first-stage", run,
                  "--out", out)
    refused(rc, err, r"toy: 1 passages have empty text \(e\.g\. 'd3'\); remove them or provide their text",
            absent=(out,))


@pytest.mark.parametrize("where", ["corpus", "queries", "topics-gz", "retrieve-results"])
def test_non_utf8_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    latin1 = '{"_id": "d4", "text": "caf\xe9"}\n'.encode("latin-1")
    if where in ("corpus", "queries"):
        good = GOOD_CORPUS if where == "corpus" else GOOD_QUERIES
        folder = beir_folder(tmp_path, **{where: good.encode() + latin1})
        spec, pattern = beir_spec(folder), rf"{where}\.jsonl:\d: not valid UTF-8 text; re-encode the file as UTF-8"
    elif where == "topics-gz":
        spec = trec_files(tmp_path / "trec", b"q1\tsort\nq2\tcaf\xe9 au lait\n", GOOD_TREC_QRELS, GOOD_RUN, gz=True)
        pattern = r"topics\.tsv\.gz:2: not valid UTF-8 text; re-encode the file as UTF-8"
    else:
        spec = retrieve_results_spec(tmp_path / "rr", [])
        Path(spec["path"]).write_bytes(b'[{"query": "caf\xe9", "hits": []}]')
        pattern = r"top\.json: not valid UTF-8 text \(byte \d+\); re-encode the file as UTF-8"
    rc, err, out = prepare(capsys, tmp_path, spec)
    refused(rc, err, pattern, absent=(out,))


def test_non_utf8_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.trec"
    run.write_bytes(b"q1 Q0 d1 1 2.0 t\nq1 Q0 caf\xe9 2 1.0 t\n")
    (tmp_path / "qrels.txt").write_text(GOOD_TREC_QRELS, encoding="utf-8")
    out = tmp_path / "metrics.json"
    rc, err = cli(capsys, "evaluate", "--run", run, "--qrels", tmp_path / "qrels.txt", "--out", out)
    refused(rc, err, r"run\.trec:2: not valid UTF-8 text; re-encode the file as UTF-8", absent=(out,))


# --------------------------------------------------------------------------- model inputs and checkpoints


@pytest.mark.parametrize("method", ["forward", "rank_autoregressive", "teacher_forced_logits", "score_texts"])
def test_candidate_list_longer_than_depth(method: str, depth4_model: Any) -> None:
    model = depth4_model
    queries = ["sort a list", "read a file"]
    embeddings = [torch.randn(3, 32), torch.randn(5, 32)]  # the second list exceeds depth 4
    with torch.no_grad(), pytest.raises(ResRankError, match=r"candidate list of 5 exceeds reranker\.depth=4"):
        if method == "teacher_forced_logits":
            model.teacher_forced_logits(queries, embeddings, [[0, 1, 2], [4, 3, 2, 1, 0]])
        elif method == "score_texts":
            model.score_texts(queries, [["a", "b", "c"], ["a", "b", "c", "d", "e"]])
        else:
            getattr(model, method)(queries, embeddings)
    # exactly depth candidates is fine
    with torch.no_grad():
        out = model(queries, [torch.randn(3, 32), torch.randn(4, 32)])
    assert out.scores.shape == (2, 4) and bool(torch.isfinite(out.scores[1]).all())


def _save(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(content)
    return folder


@pytest.mark.parametrize("keep", [0.5, 0.999, 6, 0], ids=["half", "last-byte-missing", "header-cut", "empty"])
def test_truncated_checkpoint_library(tmp_path: Path, checkpoint_bytes: bytes, keep: float) -> None:
    from resrank.model.resrank import ResRankModel

    n = int(len(checkpoint_bytes) * keep) if isinstance(keep, float) else keep
    ckpt = _save(tmp_path / "stage", checkpoint_bytes[:n])
    cfg = load_config(write_config(tmp_path))
    with pytest.raises(ResRankError, match=r"model\.safetensors: not a readable safetensors checkpoint .*"
                                           r"(re-run|re-train|copy)"):
        ResRankModel.from_checkpoint(cfg.encoder, cfg.reranker, ckpt / "model.safetensors")


def test_truncated_checkpoint_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint_bytes: bytes) -> None:
    cfg = write_config(tmp_path)
    data_dir, run = toy_prepared(tmp_path)
    ckpt = _save(tmp_path / "stage", checkpoint_bytes[: len(checkpoint_bytes) // 2])
    emb = fake_embeddings(tmp_path / "emb.safetensors", cfg, ckpt)
    out = tmp_path / "out"
    rc, err = cli(capsys, *rerank_args(cfg, data_dir, run, emb, ckpt, out))
    refused(rc, err, re.escape(str(ckpt / "model.safetensors")), r"not a readable safetensors checkpoint",
            absent=(out,))


def test_truncated_init_checkpoint_for_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESRANK_NO_PROGRESS", "1")
    cfg = write_config(tmp_path)
    toy_prepared(tmp_path)
    init = _save(tmp_path / "stage0", checkpoint_bytes[:-100])
    out = tmp_path / "stages" / "s1"
    rc, err = cli(capsys, "train", "--config", cfg, "--stage", "s1", "--data-dir", tmp_path / "data",
                  "--runs-dir", tmp_path / "runs", "--init", init, "--out", out)
    refused(rc, err, re.escape(str(init / "model.safetensors")), r"not a readable safetensors checkpoint",
            r"re-run the stage that wrote it", absent=(out / "model.safetensors", out / "DONE"))
    assert not out.exists() or not any(out.iterdir())


def test_checkpoint_from_another_model_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from resrank.model.resrank import ResRankModel

    other, _ = tiny_model(hidden=48)  # trained with 48-dim backbones; the config says 32
    ckpt = tmp_path / "stage"
    ckpt.mkdir()
    other.save_checkpoint(ckpt / "model.safetensors")
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    with pytest.raises(ResRankError, match=r"model\.safetensors: tensor '.*' has shape \(\d+, 48\) but the model "
                                           r"built from the config expects \(\d+, 32\).*other encoder/reranker"):
        ResRankModel.from_checkpoint(cfg.encoder, cfg.reranker, ckpt / "model.safetensors")

    data_dir, run = toy_prepared(tmp_path)
    emb = fake_embeddings(tmp_path / "emb.safetensors", cfg_path, ckpt)
    out = tmp_path / "out"
    rc, err = cli(capsys, *rerank_args(cfg_path, data_dir, run, emb, ckpt, out))
    refused(rc, err, re.escape(str(ckpt / "model.safetensors")), r"has shape .* but the model built from the config",
            r"was the checkpoint trained with other encoder/reranker models or projector\?", absent=(out,))


def test_checkpoint_with_missing_tensors(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    from safetensors.torch import load, save_file

    from resrank.model.resrank import ResRankModel

    state = load(checkpoint_bytes)
    dropped = sorted(k for k in state if k.startswith("reranker."))[0]
    del state[dropped]
    ckpt = tmp_path / "model.safetensors"
    save_file(state, str(ckpt))
    cfg = load_config(write_config(tmp_path))
    with pytest.raises(ResRankError, match=rf"checkpoint does not match the model built from the config: "
                                           rf"missing tensors \['{re.escape(dropped)}'\]"):
        ResRankModel.from_checkpoint(cfg.encoder, cfg.reranker, ckpt)


# --------------------------------------------------------------------------- offline downloads


def test_offline_ir_datasets_download_is_refused(tmp_path: Path) -> None:
    """An ir_datasets id whose files are not cached, with downloads refused (RESRANK_OFFLINE=1).

    Runs in a fresh interpreter because ir_datasets fixes its cache folder at first import.
    `data prepare` is refused (exit 2, nothing written, no download); with --record-unavailable
    it records the dataset as unavailable (exit 0, only a manifest) and the next step that needs
    it is refused with exit status 2.
    """
    cfg = write_config(tmp_path)
    home = tmp_path / "irds-home"
    home.mkdir()
    out = tmp_path / "prepared" / "scifact-irds"
    env = {k: v for k, v in os.environ.items() if k not in ("RESRANK_DATA", "IR_DATASETS_HOME")}
    env.update(RESRANK_OFFLINE="1", HF_HUB_OFFLINE="1", IR_DATASETS_HOME=str(home), PYTHONPATH=str(REPO))
    code = "import sys; from resrank.cli import main; sys.exit(main(sys.argv[1:]))"

    def run_cli(*argv: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *map(str, argv)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)

    done = run_cli("data", "prepare", "--config", cfg, "--dataset", "scifact-irds", "--out", out)
    assert done.returncode == 2, done.stderr
    assert "ir_datasets could not download 'beir/scifact/test'" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    done = run_cli("data", "prepare", "--config", cfg, "--dataset", "scifact-irds", "--out", out,
                   "--record-unavailable")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["available"] is False
    reason = manifest["reason"]
    assert "ir_datasets could not download 'beir/scifact/test'" in reason
    assert "offline mode is on (RESRANK_OFFLINE / HF_HUB_OFFLINE)" in reason
    assert f"IR_DATASETS_HOME with a seeded cache (currently {home})" in reason
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert not any(p.is_file() and p.stat().st_size > 0 for p in home.rglob("*")), "something was downloaded"

    run = tmp_path / "bm25.trec"
    done = run_cli("retrieve", "bm25", "--config", cfg, "--data", out, "--out", run)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("resrank: error: ") == 1 and "Traceback" not in done.stderr
    assert re.search(r"dataset 'scifact-irds' was not prepared: .*ir_datasets could not download 'beir/scifact/test'",
                     done.stderr)
    assert not run.exists()


def test_offline_hub_model_not_in_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "resrank-tests/no-such-model-3f9c"
    cfg = write_config(tmp_path, {"encoder": {"model": hub_id}})
    data_dir, run = toy_prepared(tmp_path)
    out = tmp_path / "emb.safetensors"
    rc, err = cli(capsys, "encode", "--config", cfg, "--untrained", "--data", data_dir, "--first-stage", run,
                  "--out", out)
    refused(rc, err, rf"model '{hub_id}' \({hub_id}\) is not in the local Hugging Face cache and offline mode is set",
            rf"huggingface-cli download {hub_id}", absent=(out,))


# --------------------------------------------------------------------------- numerical guards


def test_non_finite_scores_never_reach_a_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint whose weights hold a NaN: reranking stops before writing the run or the stats."""
    model, _ = tiny_model()
    with torch.no_grad():
        model.reranker.embeddings.LayerNorm.weight[0] = float("nan")
    ckpt = tmp_path / "stage"
    ckpt.mkdir()
    model.save_checkpoint(ckpt / "model.safetensors")
    cfg = write_config(tmp_path)
    data_dir, run = toy_prepared(tmp_path)
    emb = fake_embeddings(tmp_path / "emb.safetensors", cfg, ckpt)
    out = tmp_path / "out"
    rc, err = cli(capsys, *rerank_args(cfg, data_dir, run, emb, ckpt, out))
    refused(rc, err, r"non-finite score for query 'q1'; the checkpoint may be corrupt", absent=(out,))


def test_nan_retrieval_loss_stops_cli_training_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resrank train` where the InfoNCE term turns NaN at step 2: exit 2 naming stage and step,
    the step-1 checkpoint kept for inspection, and no final weights or DONE marker."""
    import resrank.train.trainer as trainer

    monkeypatch.setenv("RESRANK_NO_PROGRESS", "1")
    calls: list[int] = []
    real = trainer.info_nce

    def info_nce_nan_at_step_2(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(trainer, "info_nce", info_nce_nan_at_step_2)
    cfg = write_config(tmp_path)
    toy_prepared(tmp_path)
    out = tmp_path / "stages" / "s1"
    rc, err = cli(capsys, "train", "--config", cfg, "--stage", "s1", "--data-dir", tmp_path / "data",
                  "--runs-dir", tmp_path / "runs", "--out", out)
    refused(rc, err, r"non-finite loss at s1 step 2: rank_loss=[-\d.e]+, retrieval_loss=nan",
            r"lower the learning rate / check inputs", absent=(out / "model.safetensors", out / "DONE"))
    assert len(calls) == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in log] == [1] and all(math.isfinite(r["loss"]) for r in log)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-0000001"]
