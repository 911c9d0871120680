"""Every notebook's parameters, declared and checked in one place, before the notebook writes anything.

The experiment notebooks (03 and 04) take a preset and dotted overrides (``cagelib.experiment``), which the
experiment tree checks itself (``load``); the others take their own few parameters, declared here.

papermill injects parameters as a cell after a notebook's ``parameters`` cell; by itself it accepts any
type (``epochs="3"`` later fails with ``'<' not supported``), checks no range (``epochs=2.5`` fails only
after ``config.json`` is written), and only logs a misspelt name (``epoch=300``) while the notebook
runs on with its defaults. Each notebook's first cell after its parameters therefore calls

    check_parameters("03_pretrain", globals())

which raises ``cagelib.errors.ParameterError`` (a ``ValueError``) reading
``"03_pretrain: parameter 'epochs': must be an integer >= 1, got 2.5 (float)"``.

``NOTEBOOK_PARAMETERS`` declares, per notebook, each parameter's type and allowed values (``Param``);
``tests/test_lab_parameters.py`` keeps it equal to the notebooks' ``parameters`` cells and checks that
their defaults pass. Unknown names: in a notebook kernel (``globals()`` holds IPython's ``In``), the
names assigned in papermill's injected cell (its source starts with ``# Parameters``) that the notebook
does not declare; for a plain dict (``cagelib.lab.reproduce``, tests), every key not declared.
"""
from __future__ import annotations

import ast
import difflib
import math
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ParameterError
from ..experiment import preset_names, settings_help
from ..methods.body_augment import VIEWS
from ..methods.registry import available_methods
from .skeleton_plots import CAMERAS

STREAMS = ("auto", "cartesian", "spherical", "both")  # the encoder read (Experiment.stream)

RENAMED = {"02_ambiguity_samples": {"view": "camera"}}  # parameters renamed so that each name has one meaning
INJECTED_HEADER = "# Parameters"  # first line of papermill's injected-parameters cell (Python kernels)


@dataclass(frozen=True)
class Param:
    """One parameter: its type (``int``, ``float``, ``str``, ``bool`` or ``list``), the element type of a
    list (``item``), allowed values (``choices``: a tuple, or a function giving one) and a closed range
    ``low .. high`` (``low_open``: ``low`` itself excluded)."""

    kind: type
    item: type | None = None
    choices: tuple | Callable[[], tuple] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    device: bool = False  # a torch device name: "auto", "cpu", "cuda", "cuda:1", "mps"

    def allowed(self) -> tuple | None:
        return tuple(self.choices()) if callable(self.choices) else self.choices


def Int(low=None, high=None, choices=None) -> Param:  # noqa: N802 (reads like a type)
    return Param(int, low=low, high=high, choices=choices)


def Float(low=None, high=None, low_open=False) -> Param:  # noqa: N802
    return Param(float, low=low, high=high, low_open=low_open)


def Str(choices=None) -> Param:  # noqa: N802
    return Param(str, choices=choices)


def List(item, choices=None, low=None, high=None, low_open=False) -> Param:  # noqa: N802
    return Param(list, item=item, choices=choices, low=low, high=high, low_open=low_open)


BOOL, PATH, DEVICE, SEED, THREADS = Param(bool), Str(), Param(str, device=True), Int(0), Int(0)
METHOD = Str(available_methods)

NOTEBOOK_PARAMETERS: dict[str, dict[str, Param]] = {
    "01_data": {
        "egait_features": PATH, "egait_labels": PATH, "window": Int(1), "stride": Int(1),
        "example_clip": Str(), "plot_frames": Int(1), "plot_stride": Int(1), "figures_dir": PATH},
    "02_ambiguity_samples": {
        "window": Int(2), "per_class": Int(1, 7), "seed": SEED, "speed_up_rate": Int(choices=(2, 4, 8)),
        "speed_down_rate": Float(0.05, 1.0), "shear_amplitude": Float(0.0, 1.0), "views": Str(VIEWS),
        "camera": Str(CAMERAS), "figure_sample": Int(0), "figure_frames": List(int, low=0), "figures_dir": PATH},
    "03_pretrain": {"preset": Str(), "overrides": List(str), "variant": Str(), "run_dir": PATH, "threads": THREADS,
                    "outputs": PATH},
    "04_evaluate": {"preset": Str(), "overrides": List(str), "run_dir": PATH, "threads": THREADS, "outputs": PATH},
    "05_tsne": {
        "run_dirs": List(str), "methods": List(str, choices=available_methods), "stream": Str(STREAMS),
        "perplexity": Float(0.0, low_open=True), "seed": SEED, "device": DEVICE, "threads": THREADS,
        "outputs": PATH, "figure_path": PATH},
    "06_your_gait": {
        "run_dir": PATH, "method": METHOD, "recording": PATH, "example_clip": Str(), "fps": Float(0.0, low_open=True),
        "probe_epochs": Int(1), "device": DEVICE, "threads": THREADS, "outputs": PATH},
}


def _cross_checks(notebook: str, v: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(parameter, problem)`` for a combination the single-parameter checks cannot see, else None."""
    if "preset" in v and v["preset"] not in preset_names() and not (
            v["preset"].endswith(".toml") and Path(v["preset"]).is_file()):
        return "preset", f"must be one of {', '.join(preset_names())} or a .toml file, got {v['preset']!r}"
    if notebook == "02_ambiguity_samples":
        late = [t for t in v["figure_frames"] if t >= v["window"]]
        if late:
            return "figure_frames", f"must be below window ({v['window']}), got {late}"
        if v["figure_sample"] >= 4 * v["per_class"]:
            return "figure_sample", f"must be below 4 x per_class = {4 * v['per_class']}, got {v['figure_sample']}"
    return None


def _type_name(kind: type, plural: bool = False) -> str:
    if plural:
        return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}[kind]
    return {int: "an integer", float: "a number", str: "a string", bool: "True or False", list: "a list"}[kind]


def _range_text(p: Param) -> str:
    parts = []
    if p.low is not None:
        parts.append(f"{'>' if p.low_open else '>='} {p.low:g}")
    if p.high is not None:
        parts.append(f"<= {p.high:g}")
    return " and ".join(parts)


def _value_problem(value: Any, kind: type, p: Param) -> str | None:
    """What is wrong with one value of type ``kind`` under ``p``'s choices and range, or None."""
    got = f"got {value!r} ({type(value).__name__})"
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        bounds = _range_text(p)
        return f"must be {_type_name(kind)}{' ' + bounds if bounds else ''}{' (finite)' if kind is float else ''}, {got}"
    allowed = p.allowed()
    if allowed is not None and value not in allowed:
        return f"must be one of {', '.join(repr(a) for a in allowed)}; {got}"
    too_low = p.low is not None and (value <= p.low if p.low_open else value < p.low)
    if too_low or (p.high is not None and value > p.high):
        return f"must be {_type_name(kind)} {_range_text(p)}, {got}"
    if p.device and value != "auto":
        import torch

        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            return f"must be 'auto' or a torch device name ('cpu', 'cuda', 'cuda:1', 'mps'), {got}"
    return None


def parameter_problem(value: Any, p: Param) -> str | None:
    """What is wrong with ``value`` as a value of ``p``, or None."""
    if p.kind is not list:
        return _value_problem(value, p.kind, p)
    if not isinstance(value, (list, tuple)):
        return f"must be a list of {_type_name(p.item, plural=True)}, got {value!r} ({type(value).__name__})"
    for i, element in enumerate(value):
        problem = _value_problem(element, p.item, p)
        if problem:
            return f"element {i}: {problem}"
    return None


def injected_names(namespace: Mapping[str, Any]) -> list[str] | None:
    """Names assigned in papermill's injected-parameters cell, read from IPython's input history ``In``
    (``[]`` when none was injected); None when ``namespace`` is not a notebook kernel's globals."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    names = []
    for source in history:
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_HEADER):
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def check_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Check the parameters of ``notebook`` (a key of ``NOTEBOOK_PARAMETERS``) in ``namespace`` (the
    notebook's ``globals()``, or a plain dict of parameters); return them as a dict.

    Raises ``ParameterError`` ``"<notebook>: parameter '<name>': <problem>"``: an unknown name (with the
    closest known one), a wrong type, a value outside its range or choices, an inconsistent pair.
    """
    if notebook not in NOTEBOOK_PARAMETERS:
        raise ParameterError("check_parameters", f"notebook {notebook!r}", "has no declared parameters",
                             f"choose from {', '.join(NOTEBOOK_PARAMETERS)}")
    declared = NOTEBOOK_PARAMETERS[notebook]
    given = injected_names(namespace)
    for name in (list(namespace) if given is None else given):
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + f"its parameters: {', '.join(declared)}"
            if name in RENAMED.get(notebook, {}):
                hint = f"it is called {RENAMED[notebook][name]!r} now"
            setting = [k for k, _, _ in settings_help() if k == name or k.endswith("." + name)]
            if "overrides" in declared and setting:  # a setting of the experiment, given the old way
                value = namespace[name]
                hint = (f"a setting of the experiment is an override: overrides=[\"{setting[0]}={value!r}\"]"
                        + (f" (or {', '.join(setting[1:3])})" if len(setting) > 1 else ""))
            raise ParameterError(notebook, f"parameter {name!r}", "is not a parameter of this notebook", hint)
    values = {}
    for name, p in declared.items():
        if name not in namespace:
            raise ParameterError(notebook, f"parameter {name!r}", "is missing")
        problem = parameter_problem(namespace[name], p)
        if problem:
            raise ParameterError(notebook, f"parameter {name!r}", problem)
        values[name] = namespace[name]
    pair = _cross_checks(notebook, values)
    if pair:
        raise ParameterError(notebook, f"parameter {pair[0]!r}", pair[1])
    return values
