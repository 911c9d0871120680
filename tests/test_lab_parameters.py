"""Notebook parameters checked in one place (cagelib.lab.parameters): each bad kind fails at once, with the
notebook, the parameter and the problem in the message, and before any file is written."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cagelib.errors import CagelibError, ParameterError
from cagelib.lab.parameters import NOTEBOOK_PARAMETERS, check_parameters, injected_names
from cagelib.lab.settings import RunSettings, pretrain_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def defaults(notebook: str) -> dict:
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values: dict = {}
    exec("".join(cell["source"]), {}, values)
    return values


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_PARAMETERS))
def test_declared_parameters_are_the_notebooks_and_their_defaults_pass(notebook):
    values = defaults(notebook)
    assert list(values) == list(NOTEBOOK_PARAMETERS[notebook])  # same names, same order
    assert check_parameters(notebook, values) == values


def test_every_notebook_checks_its_parameters_first():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", [])
        assert f'check_parameters("{path.stem}", globals())' in "".join(code[1]["source"]), path.name


def pretrain_after_check(namespace: dict, outputs: Path) -> None:
    """Notebook 03's order: check, then build the settings and write the run."""
    values = check_parameters("03_pretrain", namespace)
    pretrain_run(RunSettings.from_dict(values), outputs=outputs, progress=False)


@pytest.mark.parametrize("change, parameter, problem", [
    ({"epochs": "3"}, "epochs", "must be an integer >= 1, got '3' (str)"),  # was: '<' not supported
    ({"epochs": 2.5}, "epochs", "must be an integer >= 1, got 2.5 (float)"),  # was: after config.json
    ({"method": "cagee"}, "method", "must be one of 'geclr'"),  # was: a run folder, then the error
    ({"lr": float("nan")}, "lr", "must be a number > 0 (finite)"),
    ({"milestones": [1, 5]}, "milestones", "must be below epochs (2), got [5]"),
    ({"fast": "yes"}, "fast", "must be True or False"),
    ({"device": "gpu"}, "device", "torch device name"),
    ({"representation": "first frame"}, "representation", "must be one of 'first_frame'"),
])
def test_a_bad_value_names_notebook_parameter_and_problem_and_writes_nothing(tmp_path, change, parameter,
                                                                           problem):
    with pytest.raises(ParameterError) as err:
        pretrain_after_check({**defaults("03_pretrain"), **change}, tmp_path)
    assert str(err.value).startswith(f"03_pretrain: parameter {parameter!r}: ")
    assert problem in str(err.value)
    assert isinstance(err.value, CagelibError) and isinstance(err.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_parameter_is_refused_with_the_closest_name(tmp_path):
    with pytest.raises(ParameterError, match=r"^03_pretrain: parameter 'epoch': is not a parameter of this "
                                             r"notebook; did you mean 'epochs'\?"):
        pretrain_after_check({**defaults("03_pretrain"), "epoch": 300}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_in_a_kernel_only_the_injected_names_count():
    """globals() of a kernel holds IPython's history ``In`` and the notebook's own variables: only the
    names papermill injected (its cell starts with "# Parameters") are compared with the declared ones."""
    kernel = {**defaults("04_evaluate"), "In": ["", "run_dir = ''", "# Parameters\nfolds = 5\nfold = 3\n"],
              "Markdown": object, "rows": [1, 2]}
    assert injected_names(kernel) == ["folds", "fold"]
    with pytest.raises(ParameterError, match="parameter 'fold': is not a parameter.*did you mean 'folds'"):
        check_parameters("04_evaluate", kernel)
    kernel["In"][2], kernel["folds"] = "# Parameters\nfolds = 5\n", 5  # as the kernel ran it
    assert check_parameters("04_evaluate", kernel)["folds"] == 5  # "rows", "Markdown": the notebook's own
    assert injected_names({"folds": 5}) is None  # a plain dict: every key must be a parameter


@pytest.mark.parametrize("notebook, change, message", [
    ("04_evaluate", {"protocols": ["linear", "svm"]}, "parameter 'protocols': element 1: must be one of"),
    ("04_evaluate", {"folds": 9}, "parameter 'folds': must be an integer >= 2 and <= 7, got 9"),
    ("04_evaluate", {"label_fractions": 0.5}, "parameter 'label_fractions': must be a list of numbers"),
    ("05_tsne", {"methods": ["cage", "moco"]}, "parameter 'methods': element 1: must be one of"),
    ("02_ambiguity_samples", {"speed_up_rate": 3}, "parameter 'speed_up_rate': must be one of 2, 4, 8"),
    ("02_ambiguity_samples", {"figure_frames": [0, 60]}, "parameter 'figure_frames': must be below window"),
    ("01_data", {"window": True}, "parameter 'window': must be an integer >= 1, got True (bool)"),
    ("06_your_gait", {"fps": 0}, "parameter 'fps': must be a number > 0"),
])
def test_other_notebooks(notebook, change, message):
    with pytest.raises(ParameterError, match=f"^{notebook}: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_parameters(notebook, {**defaults(notebook), **change})


def test_unknown_notebook():
    with pytest.raises(ParameterError, match="notebook '07_x': has no declared parameters"):
        check_parameters("07_x", {})


def test_papermill_run_with_a_misspelt_parameter_fails_before_writing(tmp_path):
    import papermill

    outputs = tmp_path / "outputs"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOKS / "03_pretrain.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"epoch": 3, "outputs": str(outputs)}, cwd=str(NOTEBOOKS),
                                   kernel_name="python3", progress_bar=False, execution_timeout=120)
    assert err.value.ename == "ParameterError"
    assert "parameter 'epoch': is not a parameter of this notebook; did you mean 'epochs'?" in err.value.evalue
    assert not outputs.exists()
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert "injected-parameters" in code[1]["metadata"]["tags"]
    assert ast.parse("".join(code[1]["source"]))  # papermill's cell, then the check cell failed
    assert any(o.get("ename") == "ParameterError" for o in code[2]["outputs"])
