"""The project's own set-up files stay consistent: pyproject.toml <-> environment.yml, notebooks clean."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch", "opentsne": "opentsne"}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    return dict(_split(r) for r in reqs)


def _conda_requirements() -> dict[str, str]:
    reqs = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+[^:]*)$", line)
        if not m or m.group(1).strip() in ("pip",) or m.group(1).startswith("python="):
            continue
        name, spec = _split(m.group(1))
        reqs[CONDA_TO_PYPI.get(name, name)] = spec
    return reqs


def test_environment_yml_matches_pyproject():
    pyproject, conda = _pyproject_requirements(), _conda_requirements()
    assert conda == pyproject, (
        f"environment.yml and pyproject.toml disagree: only in environment.yml "
        f"{sorted(set(conda.items()) - set(pyproject.items()))}, only in pyproject.toml "
        f"{sorted(set(pyproject.items()) - set(conda.items()))}"
    )


def test_environment_yml_installs_the_checkout_with_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text
    assert re.search(r"- pip:\s*\n\s*- -e \.", text)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; strip them (make strip)"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: holds widget state"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_have_one_parameters_cell(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
