"""Run a notebook's own code as papermill would, up to the line that builds its experiment (tests only)."""
from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cells(notebook: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]


def notebook_until_load(notebook: str, injected: dict) -> dict:
    """Run ``notebook``'s own code as papermill would with ``injected`` parameters: its parameters cell, the
    injected cell (in the kernel's history ``In``, so only those names are compared with the declared ones),
    then its code cells up to and including the line ``experiment = load(...)`` (IPython magics left out).
    Returns the kernel's globals (``experiment``: what the notebook runs)."""
    code = [c for c in cells(notebook) if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    injected_cell = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items())
    namespace: dict = {"In": ["", "".join(code[0]["source"]), injected_cell]}
    exec("".join(code[0]["source"]), namespace)
    exec(injected_cell, namespace)
    for cell in code[1:]:
        lines = []
        for line in "".join(cell["source"]).splitlines():
            if not line.lstrip().startswith("%"):
                lines.append(line)
            if line.startswith("experiment = load("):
                exec("\n".join(lines), namespace)
                return namespace
        exec("\n".join(lines), namespace)
    raise AssertionError(f"{notebook}: no line 'experiment = load(...)'")
