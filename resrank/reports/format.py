"""Write one table three ways (Markdown, CSV, LaTeX) with its caption and provenance."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from resrank.io import atomic_write


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def write_table(stem: Path, header: list[str], rows: list[list[Any]], caption: str,
                notes: list[str] | None = None, prov: dict[str, Any] | None = None,
                formats: tuple[str, ...] = ("md", "csv", "tex")) -> list[Path]:
    """``stem``.md/.csv/.tex (those in ``formats``); CSV keeps raw values, Markdown and LaTeX format them."""
    notes = notes or []
    prov_line = _provenance_line(prov)
    md = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    md += [""] + [f"{n}  " for n in notes]
    if prov_line:
        md.append(f"<sub>{prov_line}</sub>")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[("" if c is None else c) for c in row] for row in rows])
    tex = [f"% {prov_line}" if prov_line else "%", "\\begin{table}[t]", "\\centering",
           f"\\caption{{{_tex(caption)}}}", "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
           " & ".join(_tex(h) for h in header) + " \\\\", "\\midrule"]
    tex += [" & ".join(_tex(fmt(c)) for c in row) + " \\\\" for row in rows]
    tex += ["\\bottomrule", "\\end{tabular}"]
    tex += [f"\\\\[2pt]\\footnotesize {_tex(n)}" for n in notes]
    tex += ["\\end{table}"]
    texts = {"md": "\n".join(md) + "\n", "csv": buffer.getvalue(), "tex": "\n".join(tex) + "\n"}
    paths = [stem.with_suffix(f".{kind}") for kind in formats]
    for path, kind in zip(paths, formats, strict=True):
        with atomic_write(path) as handle:
            handle.write(texts[kind])
    if prov is not None:
        with atomic_write(stem.with_suffix(".provenance.json")) as handle:
            json.dump(prov, handle, indent=2)
    return paths


def _provenance_line(prov: dict[str, Any] | None) -> str:
    if not prov:
        return ""
    versions = prov.get("versions", {})
    return (f"config sha256 {str(prov.get('config_sha256'))[:12]}, commit {str(prov.get('git_commit'))[:12]}, "
            f"resrank {versions.get('resrank')}, torch {versions.get('torch')}, ranx {versions.get('ranx')}")


def _tex(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                 ("$", "\\$"), ("@", "\\char64{}")):
        text = text.replace(a, b)
    return text
