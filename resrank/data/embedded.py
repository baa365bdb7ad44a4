"""The offline "stdlib docstrings" collection: the default profile's dataset.

Built deterministically from the running Python's standard-library sources (parsed with
``ast``, never imported), so the smoke profile needs no network and no data files.

Construction, over every docstring in sorted file order (``test``/``idlelib``/... folders,
private modules and unparsable files skipped):

* **query/passage pair** (public functions and classes, public methods of public classes):
  the query is the docstring's summary line, or its first sentence when that line wraps
  (>= 4 words, not a status note like "Deprecated ..." or a C-style signature line); the
  relevant passage is the signature (``def name(args)`` / ``class Name(bases)``) followed
  by the rest of the docstring (>= 12 words), so it never contains the query itself.
* **distractor**: every other docstring, whole (module docstrings, private and nested
  definitions, items whose summary or remaining text is unusable, ambiguous items).
* **ambiguity rule** ("drop all"): a summary is used as a query only if it occurs in no
  *other* docstring (case and whitespace folded, anywhere in the text); otherwise every
  item with it becomes a distractor, since keeping one would leave an equally relevant
  (or verbatim-matching) unjudged passage. Passages with identical text keep only the
  first (sorted order); a later pair whose passage duplicates one is dropped with its query.
* **ids**: ``doc-``/``q-`` + first 12 hex digits of sha1(qualified name); a repeated
  qualified name (e.g. a property and its setter) gets ``#2``, ``#3``... before hashing.
* **split**: by top-level module, ``sha1(name) mod 100 < 20`` -> test, so no module
  contributes queries to both splits; every split searches the whole corpus.

The collection depends on the exact Python version (docstrings change between releases);
``collection_stats()["fingerprint"]`` identifies it.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import json
import os
import platform
import re
import sysconfig
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from resrank.data.types import Dataset, Passage, Qrels, Query
from resrank.errors import DataUnavailableError, ResRankError

Split = Literal["train", "test", "all"]

SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "__pycache__"}
)
"""Folders whose docstrings are test scaffolding, IDE internals or third-party code."""

TEST_PERCENT = 20
"""Share of top-level modules (by hash) whose queries form the test split."""

MIN_QUERY_WORDS = 4
"""Shorter summaries ("Return self.", "Close the file.") are too generic to be a query."""

MIN_PASSAGE_WORDS = 12
"""The rest of the docstring must say something beyond the summary to be retrievable."""

_UNINFORMATIVE = re.compile(
    r"""^(?:
        deprecated | obsolete | undocumented | internal | private | helper\ (?:for|function|method)\b
        | xxx | todo | fixme
        | see\b | same\ as | alias\b | override | overrides | abstract\ method | not\ implemented
        | dummy | stub | placeholder | implement\ of | implementation\ of | for\ internal
        | this\ (?:method|function|class)\ (?:is|was)\ deprecated
    )""",
    re.IGNORECASE | re.VERBOSE,
)
"""Summary openings that describe the code's status rather than what it does."""

_SIGNATURE_LINE = re.compile(r"^[\w.]+\s*\(.*\)\s*(?:->.*)?$")
"""Summaries that are call signatures (``name(a, b) -> c``), as C-style docstrings start."""


@dataclass(frozen=True)
class _Doc:
    """One docstring found in the sources, before pairing and deduplication."""

    qualname: str  # module dotted path + qualname, e.g. "json.JSONEncoder.encode"
    module: str  # top-level module, the unit of the train/test split
    signature: str  # "" for module docstrings
    docstring: str  # cleaned (inspect.cleandoc) text


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard-library sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not (root / "os.py").is_file():
        raise DataUnavailableError(
            f"the embedded dataset needs the standard-library sources, but {root} has no os.py; "
            "use a Python installation that ships its .py files"
        )
    return root


def _module_files(root: Path) -> list[tuple[str, Path]]:
    """``(dotted module name, path)`` of every public stdlib source file, sorted by name parts."""
    found: list[tuple[tuple[str, ...], Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        # prune in place so os.walk does not descend; sorted for a reproducible walk
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("_") and d.isidentifier())
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            stem = name[:-3]
            if stem == "__init__":
                parts = rel
            elif stem.startswith("_") or not stem.isidentifier():
                continue
            else:
                parts = (*rel, stem)
            if parts:
                found.append((parts, Path(dirpath) / name))
    found.sort(key=lambda item: item[0])
    return [(".".join(parts), path) for parts, path in found]


_Def = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
"""Definitions that carry docstrings (besides the module itself)."""


def _signature(node: _DefNode) -> str:
    """``def name(args) -> ret`` or ``class Name(bases)``, as written in the source."""
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
        return f"class {node.name}({', '.join(bases)})" if bases else f"class {node.name}"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _docs_of_module(module: str, path: Path) -> list[_Doc]:
    """Every docstring of one file, in source order, marking which ones may form pairs.

    Pairable (``signature`` set): public functions and classes at module level and public
    methods of such classes, also when defined under a module-level ``if``/``try``. All
    others (module docstring, private or nested definitions) are kept as distractors.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. in old sources
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return []
    top = module.split(".")[0]
    docs: list[_Doc] = []
    text = ast.get_docstring(tree, clean=True)
    if text:
        docs.append(_Doc(module, top, "", text))

    def visit(node: ast.AST, scope: list[_DefNode], prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, _Def):
                visit(child, scope, prefix)  # blocks (if/try/with...) do not open a scope
                continue
            qualname = f"{prefix}.{child.name}"
            public = not any(s.name.startswith("_") for s in [*scope, child])
            is_method = (
                len(scope) == 1
                and isinstance(scope[0], ast.ClassDef)
                and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
            pairable = public and (not scope or is_method)
            text = ast.get_docstring(child, clean=True)
            if text:
                docs.append(_Doc(qualname, top, _signature(child) if pairable else "", text))
            inner = qualname if isinstance(child, ast.ClassDef) else f"{qualname}.<locals>"
            visit(child, [*scope, child], inner)

    visit(tree, [], module)
    return docs


def _fold(text: str) -> str:
    """Case- and whitespace-insensitive form used to detect repeated lines and texts."""
    return " ".join(text.split()).casefold().rstrip(".")


_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.?!](?=\s|$)")
"""End of a sentence; common abbreviations are not ends."""

MAX_QUERY_WORDS = 40
"""A wrapped summary longer than this is a paragraph, not a query."""


def _split_summary(docstring: str) -> tuple[str, str]:
    """``(summary, rest)`` of a docstring; ``rest`` starts right after the summary.

    The summary is the first non-empty line. When that line is wrapped (it does not end a
    sentence and its paragraph goes on), the summary runs to the end of the first sentence
    instead, so the query is not cut mid-phrase and the passage does not start mid-sentence.
    """
    lines = docstring.strip().splitlines()
    first = lines[0].strip()
    paragraph = 1
    while paragraph < len(lines) and lines[paragraph].strip():
        paragraph += 1
    if paragraph == 1 or first.endswith(":") or any(m.end() == len(first) for m in _SENTENCE_END.finditer(first)):
        return first, "\n".join(lines[1:]).strip()
    head = "\n".join(lines[:paragraph])
    end = _SENTENCE_END.search(head)
    cut = end.end() if end else len(head)
    summary = " ".join(head[:cut].split())
    rest = head[cut:].strip() + "\n" + "\n".join(lines[paragraph:])
    return summary, rest.strip()


def _usable_summary(summary: str) -> bool:
    """Whether a summary line can stand alone as a search query."""
    words = summary.split()
    if not MIN_QUERY_WORDS <= len(words) <= MAX_QUERY_WORDS:
        return False
    if _UNINFORMATIVE.match(summary) or _SIGNATURE_LINE.match(summary):
        return False
    # at least a few alphabetic words: rejects ASCII art, tables, doctest prompts, URLs
    return sum(1 for w in words if w.isalpha()) >= MIN_QUERY_WORDS - 1 and not summary.startswith(">>>")


def is_test_module(module: str) -> bool:
    """Split assignment of a top-level module: stable across runs, platforms and hash seeds."""
    return int(hashlib.sha1(module.encode("utf-8")).hexdigest(), 16) % 100 < TEST_PERCENT


@dataclass(frozen=True)
class _Collection:
    """The whole built collection; splits are views of it."""

    passages: dict[str, Passage]
    queries: list[tuple[Query, str, str]]  # (query, relevant docid, top-level module)
    n_files: int


def _assign_ids(docs: list[_Doc]) -> list[str]:
    """Stable hash ids from qualified names, disambiguating repeats in encounter order."""
    seen: Counter[str] = Counter()
    ids: list[str] = []
    used: set[str] = set()
    for doc in docs:
        seen[doc.qualname] += 1
        key = doc.qualname if seen[doc.qualname] == 1 else f"{doc.qualname}#{seen[doc.qualname]}"
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
        while digest in used:  # a sha1 prefix collision: rehash deterministically
            key += "#"
            digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
        used.add(digest)
        ids.append(digest)
    return ids


@functools.lru_cache(maxsize=1)
def _build_collection() -> _Collection:
    """Parse the stdlib once per process and form pairs and distractors (takes a few seconds)."""
    files = _module_files(stdlib_root())
    docs = [doc for module, path in files for doc in _docs_of_module(module, path)]
    if not docs:
        raise DataUnavailableError(f"no docstrings found under {stdlib_root()}; the stdlib sources look incomplete")
    ids = _assign_ids(docs)

    splits = [_split_summary(doc.docstring) for doc in docs]
    # A summary that also occurs in another docstring (as a summary, a line or inside a
    # sentence) cannot identify one passage: count it in all docstrings at once.
    haystack = "\x00".join(_fold(doc.docstring) for doc in docs)

    passages: dict[str, Passage] = {}
    queries: list[tuple[Query, str, str]] = []
    seen_texts: set[str] = set()
    for doc, hid, (summary, rest) in zip(docs, ids, splits, strict=True):
        paired = (
            bool(doc.signature)
            and _usable_summary(summary)
            and len(rest.split()) >= MIN_PASSAGE_WORDS
            and _fold(summary) not in _fold(rest)
            and haystack.count(_fold(summary)) == 1
        )
        text = f"{doc.signature}\n\n{rest}" if paired else doc.docstring
        folded = _fold(text)
        if folded in seen_texts:
            continue  # identical passage already in the corpus (and its query, if any, is ambiguous)
        seen_texts.add(folded)
        docid = f"doc-{hid}"
        passages[docid] = Passage(docid=docid, text=text, title=doc.qualname)
        if paired:
            queries.append((Query(qid=f"q-{hid}", text=summary), docid, doc.module))
    return _Collection(passages=passages, queries=queries, n_files=len(files))


def build_embedded(split: Split = "test") -> Dataset:
    """The stdlib-docstrings dataset: one split's queries against the whole corpus.

    ``test`` is named "embedded" (the default profile evaluates on it), ``train``
    "embedded-train", ``all`` "embedded-all". Qrels give grade 1 to the single relevant
    passage; there is no candidate file, so the first stage is computed.
    """
    if split not in ("train", "test", "all"):
        raise ResRankError(f"embedded dataset split must be 'train', 'test' or 'all', got {split!r}")
    coll = _build_collection()
    chosen = [
        (query, docid)
        for query, docid, module in coll.queries
        if split == "all" or (split == "test") == is_test_module(module)
    ]
    name = {"test": "embedded", "train": "embedded-train", "all": "embedded-all"}[split]
    qrels: Qrels = {query.qid: {docid: 1} for query, docid in chosen}
    return Dataset(
        name=name,
        queries=[query for query, _ in chosen],
        qrels=qrels,
        corpus=dict(coll.passages),
        candidates=None,
    )


def _fingerprint(coll: _Collection) -> str:
    """sha256 over a canonical JSON-lines serialisation of queries (with split), qrels and passages."""
    digest = hashlib.sha256()
    for query, docid, module in sorted(coll.queries, key=lambda item: item[0].qid):
        split = "test" if is_test_module(module) else "train"
        record = {"qid": query.qid, "text": query.text, "split": split, "qrels": {docid: 1}}
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    for docid in sorted(coll.passages):
        passage = coll.passages[docid]
        record = {"docid": docid, "title": passage.title, "text": passage.text}
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def collection_stats() -> dict[str, Any]:
    """Counts and a fingerprint that identify the built collection (for manifests and reports).

    A fresh copy each call, so a caller that edits it cannot corrupt the cached one.
    """
    return copy.deepcopy(_stats())


@functools.lru_cache(maxsize=1)
def _stats() -> dict[str, Any]:
    coll = _build_collection()
    test_modules = sorted({m for _, _, m in coll.queries if is_test_module(m)})
    train_modules = sorted({m for _, _, m in coll.queries if not is_test_module(m)})
    n_test = sum(1 for _, _, m in coll.queries if is_test_module(m))
    return {
        "python_version": platform.python_version(),
        "source_files": coll.n_files,
        "passages": len(coll.passages),
        "relevant_passages": len(coll.queries),
        "distractors": len(coll.passages) - len(coll.queries),
        "queries": {"train": len(coll.queries) - n_test, "test": n_test, "all": len(coll.queries)},
        "modules": {"train": len(train_modules), "test": len(test_modules)},
        "fingerprint": _fingerprint(coll),
    }
