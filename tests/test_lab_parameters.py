"""Notebook parameters checked in one place (cagelib.lab.parameters), and the experiment notebooks' overrides
checked by the experiment tree (``load(preset, overrides, source=<notebook>)``): each bad kind fails at once,
with the notebook, the parameter or override (and its dotted key) and the problem in the message, and before
any file is written."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from notebook_code import notebook_until_load
from cagelib.errors import CagelibError, ParameterError
from cagelib.experiment import load
from cagelib.lab import workbench as wb
from cagelib.lab.parameters import NOTEBOOK_PARAMETERS, check_parameters, injected_names

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPERIMENT_NOTEBOOKS = ("03_pretrain", "04_evaluate")  # they take a preset and overrides


def cells(notebook: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]


def defaults(notebook: str) -> dict:
    (cell,) = [c for c in cells(notebook) if "parameters" in c["metadata"].get("tags", [])]
    values: dict = {}
    exec("".join(cell["source"]), {}, values)
    return values


def pretrain_from_notebook(injected: dict, outputs: Path) -> None:
    """Notebook 03's order: its check cell (parameters, then the experiment), then the run (its cell 4, without
    the live plot)."""
    ns = notebook_until_load("03_pretrain", {"outputs": str(outputs), **injected})
    wb.pretrain_run(ns["experiment"], run_dir=ns["run_dir"], outputs=ns["outputs"], progress=False)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_PARAMETERS))
def test_declared_parameters_are_the_notebooks_and_their_defaults_pass(notebook):
    values = defaults(notebook)
    assert list(values) == list(NOTEBOOK_PARAMETERS[notebook])  # same names, same order
    assert check_parameters(notebook, values) == values


@pytest.mark.parametrize("notebook", EXPERIMENT_NOTEBOOKS)
def test_the_experiment_notebooks_defaults_are_the_notebook_preset(notebook):
    values = defaults(notebook)
    assert (values["preset"], values["overrides"]) == ("notebook", [])
    assert notebook_until_load(notebook, {})["experiment"] == load("notebook", [], source=notebook)


def test_every_notebook_checks_its_parameters_first():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", [])
        source = "".join(code[1]["source"])
        assert f'check_parameters("{path.stem}", globals())' in source, path.name
        if path.stem in EXPERIMENT_NOTEBOOKS:  # then the experiment, in the same cell, before anything runs
            check = source.index(f'check_parameters("{path.stem}", globals())')
            experiment = source.index(f'experiment = load(preset, overrides, source="{path.stem}")')
            assert check < experiment, path.name
            for later in ("run_data(", "pretrain_run(", "find_run(", "evaluate_run("):
                assert later not in source[:experiment], f"{path.name}: {later} before the experiment is checked"


def test_a_good_override_reaches_the_run(tmp_path):
    """The positive control of the cases below: through the same steps, a valid override trains and writes a
    run that records it."""
    pretrain_from_notebook({"overrides": ["pretrain.epochs=1", "data.max_pretrain_windows=64"]}, tmp_path)
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / wb.EXPERIMENT_FILE).read_text())
    assert saved["experiment"]["pretrain"]["epochs"] == 1 and saved["experiment"]["data"]["max_pretrain_windows"] == 64
    assert saved["experiment"]["overrides"] == ["pretrain.epochs=1", "data.max_pretrain_windows=64"]
    assert json.loads((run / "config.json").read_text())["epochs"] == 1


# The old parameters of notebook 03 are settings of the tree now, given as overrides. Not refused any more, so
# not here: milestones beyond the epochs (pretrain.milestones=[1, 5] with 2 epochs: never reached), and
# pretrain.lr=nan and pretrain.device="gpu" (accepted by load; the run fails later, after writing its folder).
@pytest.mark.parametrize("override, problem", [
    ('pretrain.epochs="3"', "'pretrain.epochs': expected an integer, got '3'"),  # was: '<' not supported
    ("pretrain.epochs=2.5", "'pretrain.epochs': expected an integer, got 2.5"),  # was: after config.json
    ("pretrain.epochs=x", "'pretrain.epochs': expected an integer, got 'x'"),
    ("pretrain.contrast.method=cagee", "'pretrain.contrast.method': ContrastConfig: unknown method 'cagee'; use one of geclr"),
    ("pretrain.fast=yes", "'pretrain.fast': 'yes' is not a preset of FastConfig"),
    ("pretrain.fast=true", "'pretrain.fast': expected an object (FastConfig) or null, got True"),
    ('data.representation="first frame"', "representation must be one of ('first_frame'"),
    ("pretrain.seed=3", "'pretrain.seed': is set from seeds, not on its own"),
])
def test_a_bad_override_names_notebook_override_key_and_problem_and_writes_nothing(tmp_path, override, problem):
    with pytest.raises(ParameterError) as err:
        pretrain_from_notebook({"overrides": [override]}, tmp_path)
    assert str(err.value).startswith(f"03_pretrain: override {override!r}: "), str(err.value)
    assert problem in str(err.value)
    assert isinstance(err.value, CagelibError) and isinstance(err.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_the_override_named_is_the_one_that_is_bad(tmp_path):
    """With several overrides of one section, the message names the bad one, not the first of its section."""
    bad = 'data.representation="first frame"'
    with pytest.raises(ParameterError) as err:
        pretrain_from_notebook({"overrides": ["data.window=48", bad]}, tmp_path)
    assert str(err.value).startswith(f"03_pretrain: override {bad!r}: "), str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_override_key_is_refused_with_the_closest_key(tmp_path):
    with pytest.raises(ParameterError, match=r"^03_pretrain: override 'pretrain.epoch=3': 'pretrain.epoch': is not "
                                             r"a setting of PretrainConfig; did you mean 'pretrain.epochs'\?"):
        pretrain_from_notebook({"overrides": ["pretrain.epoch=3"]}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_parameter_is_refused_with_the_closest_name(tmp_path):
    with pytest.raises(ParameterError, match=r"^03_pretrain: parameter 'override': is not a parameter of this "
                                             r"notebook; did you mean 'overrides'\?"):
        pretrain_from_notebook({"override": ["pretrain.epochs=3"]}, tmp_path)
    # an old parameter (a setting of the tree now): refused, with the notebook's parameters
    with pytest.raises(ParameterError, match=r"^03_pretrain: parameter 'epoch': is not a parameter of this "
                                             r"notebook; its parameters: preset, overrides"):
        pretrain_from_notebook({"epoch": 300}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_in_a_kernel_only_the_injected_names_count():
    """globals() of a kernel holds IPython's history ``In`` and the notebook's own variables: only the
    names papermill injected (its cell starts with "# Parameters") are compared with the declared ones."""
    kernel = {**defaults("04_evaluate"), "In": ["", "run_dir = ''",
                                               "# Parameters\noverrides = ['folds=5']\noverride = ['folds=5']\n"],
              "Markdown": object, "rows": [1, 2]}
    assert injected_names(kernel) == ["overrides", "override"]
    with pytest.raises(ParameterError, match="parameter 'override': is not a parameter.*did you mean 'overrides'"):
        check_parameters("04_evaluate", kernel)
    kernel["In"][2], kernel["overrides"] = "# Parameters\noverrides = ['folds=5']\n", ["folds=5"]  # as it ran
    assert check_parameters("04_evaluate", kernel)["overrides"] == ["folds=5"]  # "rows", "Markdown": its own
    assert injected_names({"overrides": []}) is None  # a plain dict: every key must be a parameter
    with pytest.raises(ParameterError, match="parameter 'rows': is not a parameter"):
        check_parameters("04_evaluate", {**defaults("04_evaluate"), "rows": [1, 2]})


@pytest.mark.parametrize("notebook, change, message", [
    ("03_pretrain", {"preset": "notbook"}, "parameter 'preset': must be one of cage_study, demo, long"),
    ("03_pretrain", {"overrides": "pretrain.epochs=3"}, "parameter 'overrides': must be a list of strings"),
    ("04_evaluate", {"overrides": [3]}, "parameter 'overrides': element 0: must be a string, got 3 (int)"),
    ("04_evaluate", {"threads": -1}, "parameter 'threads': must be an integer >= 0, got -1 (int)"),
    ("05_tsne", {"methods": ["cage", "moco"]}, "parameter 'methods': element 1: must be one of"),
    ("02_ambiguity_samples", {"speed_up_rate": 3}, "parameter 'speed_up_rate': must be one of 2, 4, 8"),
    ("02_ambiguity_samples", {"figure_frames": [0, 60]}, "parameter 'figure_frames': must be below window"),
    ("01_data", {"window": True}, "parameter 'window': must be an integer >= 1, got True (bool)"),
    ("06_your_gait", {"fps": 0}, "parameter 'fps': must be a number > 0"),
])
def test_other_notebooks(notebook, change, message):
    with pytest.raises(ParameterError, match=f"^{notebook}: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_parameters(notebook, {**defaults(notebook), **change})


# Notebook 04's old parameters (protocols, folds, label_fractions) are settings of the tree now.
@pytest.mark.parametrize("override, problem", [
    ('protocols=["linear", "svm"]', "protocols must be one or more of ('linear', 'knn'"),
    ("folds=9", "folds must be in 2..7"),
    ("label_fractions=0.5", "'label_fractions': expected a list, got 0.5"),
    ("finetune.lr=nan", "lr must be a finite number > 0, got nan"),
])
def test_notebook_04_overrides(override, problem):
    with pytest.raises(ParameterError) as err:
        notebook_until_load("04_evaluate", {"overrides": [override]})
    assert str(err.value).startswith(f"04_evaluate: override {override!r}: "), str(err.value)
    assert problem in str(err.value)


def test_unknown_notebook():
    with pytest.raises(ParameterError, match="notebook '07_x': has no declared parameters"):
        check_parameters("07_x", {})


def papermill_03(tmp_path, parameters: dict):
    """Notebook 03 run by papermill with ``parameters``, expected to fail in its check cell: the error."""
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOKS / "03_pretrain.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                                   progress_bar=False, execution_timeout=120)
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert "injected-parameters" in code[1]["metadata"]["tags"]
    assert ast.parse("".join(code[1]["source"]))  # papermill's cell, then the check cell failed
    assert any(o.get("ename") == "ParameterError" for o in code[2]["outputs"])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code[3:])  # nothing after it ran
    return err.value


def test_papermill_run_with_a_misspelt_parameter_fails_before_writing(tmp_path):
    outputs = tmp_path / "outputs"
    err = papermill_03(tmp_path, {"epoch": 3, "outputs": str(outputs)})
    assert err.ename == "ParameterError"
    assert "03_pretrain: parameter 'epoch': is not a parameter of this notebook" in err.evalue
    assert not outputs.exists()


def test_papermill_run_with_a_bad_override_fails_before_writing(tmp_path):
    outputs = tmp_path / "outputs"
    err = papermill_03(tmp_path, {"overrides": ["pretrain.epochs=x"], "outputs": str(outputs)})
    assert err.ename == "ParameterError"
    assert "03_pretrain: override 'pretrain.epochs=x': 'pretrain.epochs': expected an integer, got 'x'" in err.evalue
    assert not outputs.exists()
