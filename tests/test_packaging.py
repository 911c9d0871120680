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
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+[^:]*)$", line) or re.match(r"^      - ([A-Za-z][A-Za-z0-9_.\-]*.*)$", line)  # conda, pip
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


def test_regular_install_carries_the_embedded_data(tmp_path):
    """`pip install .` (no -e) carries data/bandai.npz inside the package: load_embedded works from the
    installed copy alone, with neither the repository on sys.path nor its folder as cwd."""
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"  # a copy of what a build reads, so no build/ or egg-info lands in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "cagelib", src / "cagelib", ignore=shutil.ignore_patterns("__pycache__", "_data",
                                                                                 "_notebooks"))
    shutil.copytree(ROOT / "notebooks", src / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (src / "data").mkdir()
    shutil.copy(ROOT / "data" / "bandai.npz", src / "data" / "bandai.npz")
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", str(src), "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--target", str(target)], capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and "No module named" in build.stderr and "setuptools" in build.stderr:
        pytest.skip(f"cannot build offline: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "cagelib" / "_data" / "bandai.npz").is_file()
    code = ("import cagelib, cagelib.data as d, cagelib.data.bandai as b; "
            "assert str(cagelib.__file__).startswith(%r), cagelib.__file__; "
            "print(len(d.load_embedded()), b.embedded_path())" % str(target))
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    count, where = run.stdout.split()
    assert int(count) == 819 and where == str(target / "cagelib" / "_data" / "bandai.npz")
    # the notebooks and the presets travel too: `python -m cagelib reproduce` finds them in the installed package
    shipped = sorted(p.name for p in (target / "cagelib" / "_notebooks").glob("*.ipynb"))
    assert shipped == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    code = ("from cagelib.lab import reproduce as r; print(r.notebooks_dir()); "
            "from cagelib.experiment import load, preset_names; "
            "assert 'reproduce/paper' in preset_names() and load('reproduce/small').variants; "
            "from cagelib.lab.workbench import resolve_path; print(resolve_path('outputs/reproduce'))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    notebooks, outputs = run.stdout.split()
    assert notebooks == str(target / "cagelib" / "_notebooks")
    assert outputs == str(tmp_path.resolve() / "outputs" / "reproduce")  # where the user is, not site-packages


def test_an_installation_without_notebooks_says_how_to_get_them(monkeypatch, tmp_path):
    from cagelib.lab import reproduce

    monkeypatch.setattr(reproduce, "repo_root", lambda: tmp_path / "site-packages")
    monkeypatch.setattr(reproduce, "PACKAGED_NOTEBOOKS", tmp_path / "site-packages" / "cagelib" / "_notebooks")
    with pytest.raises(FileNotFoundError) as err:
        reproduce.notebooks_dir()
    message = str(err.value)
    assert str(tmp_path / "site-packages" / "notebooks") in message and "_notebooks" in message
    assert "pip install -e" in message and "pip install ." in message
    from cagelib import cli

    with pytest.raises(SystemExit):
        cli.main(["reproduce", f"out={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_missing_embedded_data_names_where_it_looked(monkeypatch, tmp_path):
    from cagelib.data import bandai

    monkeypatch.setattr(bandai, "PACKAGED_PATH", tmp_path / "pkg" / "bandai.npz")
    monkeypatch.setattr(bandai, "EMBEDDED_PATH", tmp_path / "repo" / "bandai.npz")
    with pytest.raises(FileNotFoundError) as err:
        bandai.load_embedded()
    assert str(tmp_path / "pkg" / "bandai.npz") in str(err.value) and str(tmp_path / "repo" / "bandai.npz") in str(err.value)
