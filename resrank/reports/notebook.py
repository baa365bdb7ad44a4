"""Execute the report notebook with papermill and convert it to a standalone HTML page."""

from __future__ import annotations

from pathlib import Path

from resrank.errors import ResRankError
from resrank.io import atomic_write


def error_outputs(notebook_path: Path) -> list[str]:
    """Tracebacks left in an executed notebook (an executed report must have none)."""
    import nbformat

    nb = nbformat.read(notebook_path, as_version=4)
    errors = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
    return errors


def render_report(template: Path, out_dir: Path, profile: str, executed: Path, html: Path) -> None:
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    if not template.is_file():
        raise ResRankError(f"{template}: report notebook not found")
    tmp = executed.with_name(f".{executed.name}.tmp.ipynb")
    try:
        papermill.execute_notebook(str(template), str(tmp), parameters={"profile": profile, "out_dir": str(out_dir)},
                                   kernel_name="python3", progress_bar=False, cwd=str(Path.cwd()))
    except papermill.PapermillExecutionError as err:
        raise ResRankError(f"report notebook failed in cell {err.exec_count}: {err.ename}: {err.evalue}") from None
    errors = error_outputs(tmp)
    if errors:
        raise ResRankError(f"executed report has error outputs: {'; '.join(errors)}")
    tmp.replace(executed)
    body, _ = HTMLExporter(exclude_input=False).from_notebook_node(nbformat.read(executed, as_version=4))
    with atomic_write(html) as handle:
        handle.write(body)
