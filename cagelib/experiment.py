"""One experiment, declared once: the configuration tree that every job of the workbench runs.

    Experiment                         what is compared, on which seeds, where it goes (this module)
    ├── data: DataConfig               tasks, windows, representation, corpus        cagelib.data.tasks
    ├── pretrain: PretrainConfig       optimiser, schedule, device, fast, health      cagelib.pretrain.config
    │   ├── model: AGCNConfig          the encoder                                    cagelib.methods.encoders
    │   ├── contrast: ContrastConfig   the method and its MoCo settings               cagelib.methods.cage
    │   └── options                    the method's own settings (its registry entry) cagelib.methods.<method>
    └── linear, finetune, supervised: EvalConfig   the probes' recipes            cagelib.evaluate.protocols

A preset is a TOML file in ``cagelib/configs/`` (``preset_names()``): ``demo``, ``long``, ``peers``, ``notebook``,
``paper``, ``reproduce/*``. It may start with ``extends = "<preset>"``. Overrides are dotted
(``pretrain.contrast.queue_size=1024``) or nested dicts; a section may be given by the name of one of its
class's presets (``pretrain.model = "paper"``: ``AGCNConfig.paper()``; ``pretrain = "paper:mamp"``:
``PretrainConfig.paper("mamp")``; ``finetune = "paper:finetune"``). ``load(preset, overrides)`` checks every
key, type and value before anything runs, naming the preset or override, the dotted key and the problem.
``Experiment.from_dict({})`` is ``Experiment()``; an experiment records its preset and overrides, and a run
folder keeps the resolved tree (``experiment.json``).
"""
from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from .data.tasks import DataConfig
from .errors import ParameterError
from .evaluate.protocols import EvalConfig
from .methods.registry import method as registered_method
from .pretrain.config import PretrainConfig, _type_problem

PRESETS_DIR = Path(__file__).resolve().parent / "configs"
SCHEMA = 1  # the layout of experiment.json
PROBES = ("linear", "knn", "finetune", "semi-supervised")  # Experiment.protocols
STREAM_READS = ("auto", "cartesian", "spherical", "both", "each")  # Experiment.stream
# Settings of the sections that a run takes from elsewhere in the tree: not overridable (ParameterError), skipped by
# settings_help. key -> where it comes from.
DERIVED = {"pretrain.seed": "seeds", "pretrain.run_dir": "out / runs and the cell", "pretrain.progress": "the job",
           "pretrain.representation": "data.representation",
           **{f"{s}.{k}": v for s in ("linear", "finetune", "supervised") for k, v in
              (("seed", "seeds"), ("protocol", "the probe"), ("input_transform", "the encoder's stream"))}}


@dataclass
class Experiment:
    """An experiment: pretrain ``pretrain`` on ``data``'s corpus once per seed (and per variant), then read the
    encoder with ``protocols`` beside its controls on ``data.tasks`` over clip-grouped folds."""

    name: str = "experiment"  # the preset that declared it
    overrides: tuple = ()  # the dotted overrides given on top of the preset (re-applied to every variant)
    data: DataConfig = field(default_factory=DataConfig)  # tasks, windows, representation, pretraining corpus
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # method, encoder, optimiser, schedule
    protocols: tuple = ("linear", "knn")  # probes of the pretrained encoder and of its random init (PROBES)
    linear: EvalConfig = field(default_factory=lambda: EvalConfig.paper("linear"))  # linear probe (and k-NN's k)
    finetune: EvalConfig = field(default_factory=lambda: EvalConfig.paper("finetune"))  # finetune, semi-supervised
    supervised: EvalConfig = field(default_factory=lambda: EvalConfig.paper("supervised"))  # the supervised reference
    supervised_tasks: tuple = ()  # the tasks where the supervised reference row runs (none: no such row)
    folds: int = 4  # clip-grouped folds per repeat (7 clips per emotion: at most 7)
    repeats: int = 1  # repeats of the fold assignment
    label_fractions: tuple = (0.5,)  # semi-supervised: fractions of the training clips with labels
    stream: str = "auto"  # the encoder read: auto (the method's first), cartesian, spherical, both (CAGE);
    #                       each (grid cells: every stream of the method, and all of them concatenated)
    seeds: tuple = (0, 1, 2)  # one pretraining and one fold draw per seed (paired across methods)
    workers: int = 1  # parallel processes (seeds, cells), one torch thread each
    threads: int = 1  # torch CPU threads of a process that runs alone (0: one per core)
    out: str = "outputs/experiment"  # results (tables, reports, cell files)
    runs: str = ""  # pretraining run folders; "" = inside out
    variants: dict = field(default_factory=dict)  # a grid: name -> overrides of each variant; {} = this one alone

    def __post_init__(self) -> None:
        for name in ("overrides", "protocols", "supervised_tasks", "label_fractions", "seeds"):
            setattr(self, name, tuple(getattr(self, name)))
        bad = [p for p in self.protocols if p not in PROBES]
        if bad or not self.protocols:
            raise ValueError(f"Experiment: protocols must be one or more of {PROBES}, got {list(self.protocols)}")
        for name, ok, need in (("folds", 2 <= self.folds <= 7, "in 2..7 (7 clips per emotion)"),
                               ("repeats", self.repeats >= 1, ">= 1"), ("workers", self.workers >= 1, ">= 1"),
                               ("threads", self.threads >= 0, ">= 0 (0: one per core)")):
            if not ok:
                raise ValueError(f"Experiment: {name} must be {need}, got {getattr(self, name)}")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ValueError(f"Experiment: label_fractions must be in (0, 1], got {list(self.label_fractions)}")
        if self.stream not in STREAM_READS:
            raise ValueError(f"Experiment: stream must be one of {', '.join(STREAM_READS)}, got {self.stream!r}")
        if self.pretrain.epochs < 1:
            raise ValueError(f"Experiment: pretrain.epochs must be >= 1 (a run trains), got {self.pretrain.epochs}")
        unknown = [t for t in self.supervised_tasks if t not in self.data.tasks]
        if unknown:
            raise ValueError(f"Experiment: supervised_tasks {unknown} are not among data.tasks {list(self.data.tasks)}")
        seeds = list(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ValueError(f"Experiment: seeds must be distinct integers >= 0 (one pretraining each), got {seeds}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps({**asdict(self), "schema": SCHEMA}, default=str))

    @classmethod
    def from_dict(cls, d: Mapping, source=None) -> "Experiment":
        """The experiment of ``d`` (missing keys: their defaults; ``from_dict({}) == Experiment()``); every key,
        type and value checked (``ParameterError(source, "'<dotted key>'", problem)``)."""
        d = dict(d)
        if d.pop("schema", SCHEMA) != SCHEMA:
            raise ParameterError(source, "'schema'", f"not {SCHEMA}: written by another cagelib version")
        return build(cls, d, source)

    def cell(self, variant: str | None = None) -> "Experiment":
        """This experiment as one variant runs it (``variants[variant]``, then ``overrides`` again on top)."""
        if not variant:
            return replace(self, variants={})
        if variant not in self.variants:
            raise ParameterError(self.name, "variant", f"{variant!r} is not one of {list(self.variants)}")
        tree = merge(Experiment, self.to_dict(), {**self.variants[variant], "variants": {}}, self.name)
        for text in self.overrides:
            tree = merge(Experiment, tree, parse_overrides([text]), "overrides")
        try:
            return Experiment.from_dict(tree, self.name)
        except ParameterError as err:
            raise err.located(f"variant {variant!r}") from None

    def pretrain_config(self, seed: int, run_dir, progress: bool = False) -> PretrainConfig:
        """What a run of ``seed`` trains: ``pretrain`` seeded, in ``run_dir``, on ``data``'s representation, as
        its method trains it (``PretrainConfig.adapted``)."""
        return replace(self.pretrain, seed=seed, run_dir=str(run_dir), progress=progress,
                       representation=self.data.representation).adapted()

    def eval_config(self, protocol: str, seed: int, input_transform: str = "cartesian") -> EvalConfig:
        """The recipe of ``protocol`` (linear and knn: ``linear``; finetune and semi-supervised: ``finetune``;
        supervised: ``supervised``) with the seed and the encoder's input coordinates."""
        recipe = {"linear": self.linear, "knn": self.linear, "supervised": self.supervised}.get(protocol, self.finetune)
        return replace(recipe, protocol=protocol, seed=seed, input_transform=input_transform)

    def run_folder(self, *parts) -> Path:
        """``runs`` (or ``out``) / parts: where a pretraining run of this experiment goes."""
        return Path(self.runs or self.out, *map(str, parts))


# --- presets, overrides, checking --------------------------------------------------------------------------------

def preset_names() -> tuple[str, ...]:
    """The presets shipped in ``cagelib/configs/`` (``"demo"``, ``"reproduce/small"``, ...)."""
    return tuple(sorted(str(p.relative_to(PRESETS_DIR).with_suffix("")) for p in PRESETS_DIR.rglob("*.toml")))


def preset_path(name: str) -> Path:
    """The file of preset ``name``, or of a TOML file path given as is."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        close = difflib.get_close_matches(name, preset_names(), n=1)
        raise ParameterError("preset", repr(name), "no such preset" + (f"; did you mean {close[0]!r}?" if close else ""),
                             f"the presets: {', '.join(preset_names())}")
    return path


def read_preset(name: str, _seen: tuple = ()) -> dict:
    """The tree of preset ``name`` as a dict, its ``extends`` chain merged (the preset's own keys win)."""
    path = preset_path(name)
    try:
        d = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(path, None, f"not valid TOML ({err})") from None
    base = d.pop("extends", None)
    d.setdefault("name", name)
    if base in _seen:
        raise ParameterError(path, "'extends'", f"{base!r} extends itself (through {' -> '.join(_seen)})")
    parent = {**read_preset(base, (*_seen, name)), "name": name} if base is not None else {}
    return merge(Experiment, parent, d, path)  # sections given by name become their dicts


def parse_value(text: str) -> Any:
    """A command-line value: a TOML value (``4``, ``0.1``, ``true``, ``[0, 1]``, ``"x"``, ``{a = 1}``), ``null``
    (None), else the text itself as a string (``cage``, ``none``: a section such as ``pretrain.fast`` given as
    ``none`` is switched off, ``NONE``)."""
    if text.strip() == "null":
        return None
    if text.strip() in ("True", "False"):
        return text.strip() == "True"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(overrides) -> dict:
    """Nested dict of dotted overrides: ``["pretrain.epochs=4"]`` or ``{"pretrain.epochs": 4}`` ->
    ``{"pretrain": {"epochs": 4}}`` (strings are parsed by ``parse_value``; dict values are taken as they are)."""
    items = overrides.items() if isinstance(overrides, Mapping) else []
    if not isinstance(overrides, Mapping):
        for text in overrides:
            if "=" not in str(text):
                raise ParameterError("override", repr(text), "expected key=value, e.g. pretrain.epochs=4")
            key, value = str(text).split("=", 1)
            items.append((key.strip(), parse_value(value)))
    out: dict = {}
    for key, value in items:
        node, parts = out, str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParameterError("override", repr(key), "sets a key inside a value given by another override")
        node[parts[-1]] = value
    return out


NONE = ("none", "null")  # a section that may be absent (pretrain.fast, pretrain.health), switched off in TOML


def _optional(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _section_class(hint) -> type | None:
    """The dataclass of a field annotation (``PretrainConfig``, ``FastConfig | None``), else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [o for o in options if is_dataclass(o)]
    return found[0] if found else None


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def named_section(cls: type, text: str, path: str, source) -> dict:
    """The dict of a section given by name: ``"<preset>"`` or ``"<preset>:<argument>"`` of ``cls``'s class
    methods (``"small"``, ``"paper"``, ``"paper:cage"``, ``"off"``), ``"default"`` = ``cls()``."""
    name, _, argument = text.partition(":")
    maker = cls if name == "default" else getattr(cls, name, None)
    if not callable(maker) or name.startswith("_") or (name != "default" and not isinstance(
            cls.__dict__.get(name), classmethod)):
        offered = sorted(k for k, v in vars(cls).items() if isinstance(v, classmethod) and k not in ("from_dict", "load"))
        raise ParameterError(source, f"'{path}'", f"{text!r} is not a preset of {cls.__name__}",
                             f"give a table of its settings or one of: default, {', '.join(offered)}")
    try:
        made = maker(argument) if argument else maker()
    except (TypeError, ValueError) as err:
        raise ParameterError(source, f"'{path}'", f"{text!r}: {err}") from None
    d = made.to_dict() if hasattr(made, "to_dict") else asdict(made)
    d.pop("schema", None)
    return json.loads(json.dumps(d, default=str))


def merge(cls: type, base: Mapping, top: Mapping, source=None, prefix: str = "") -> dict:
    """``top`` merged into ``base`` (both trees of ``cls``): sections recursively, other values replaced; a section
    given by name (``named_section``) becomes its dict first, so later layers can change single keys."""
    out, hints = dict(base), _hints(cls)
    for changed, followers in getattr(cls, "FOLLOWS", {}).items():  # settings a preset fills from another one
        head, _, tail = changed.partition(".")
        new, old = top.get(head), base.get(head)
        if tail:
            new, old = (v.get(tail) if isinstance(v, Mapping) else None for v in (new, old))
        if new is not None and new != old:
            for name in followers:
                out.pop(name, None)
    for key, value in top.items():
        path = prefix + key
        section = _section_class(hints[key]) if key in hints else None
        if section is not None and isinstance(value, str) and value.lower() in NONE and _optional(hints[key]):
            value = None
        elif section is not None and isinstance(value, str):
            value = named_section(section, value, path, source)
        if section is not None and isinstance(value, Mapping):
            base_section = out.get(key) if isinstance(out.get(key), Mapping) else {}
            out[key] = merge(section, base_section, value, source, path + ".")
        else:
            out[key] = value
    return out


def build(cls: type, d: Mapping, source=None, prefix: str = ""):
    """``cls`` from the dict ``d``, sections recursively: unknown keys (with the closest known one), wrong types and
    values the class refuses are ``ParameterError(source, "'<dotted key>'", problem)``."""
    hints, names = _hints(cls), [f.name for f in fields(cls)]
    values = {}
    for key, value in d.items():
        path = prefix + key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ParameterError(source, f"'{path}'", f"is not a setting of {cls.__name__}" +
                                 (f"; did you mean {prefix + close[0]!r}?" if close else ""),
                                 f"its settings: {', '.join(names)}")
        section = _section_class(hints[key])
        if section is not None and isinstance(value, str) and value.lower() in NONE and _optional(hints[key]):
            value = None
        elif section is not None and isinstance(value, str):
            value = named_section(section, value, path, source)
        problem = _type_problem(value, hints[key])
        if problem is not None:
            raise ParameterError(source, f"'{path}'", f"expected {problem}, got {value!r}")
        if section is not None and isinstance(value, Mapping):
            default = _default(cls, key)  # a section's keys change its field's default, not its class's
            base = named_section(section, "default", path, source) if default is None else _as_dict(default)
            value = build(section, merge(section, base, value, source, path + "."), source, path + ".")
        values[key] = value
    if cls is PretrainConfig and isinstance(values.get("options"), (str, Mapping)):
        values["options"] = _options(values, source, prefix)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, ParameterError):
            raise
        first = re.match(rf"{cls.__name__}: (\w+(?:\.\w+)*)", str(err))  # "EvalConfig: lr must be ...": named first
        named = [first.group(1)] if first and first.group(1).split(".")[0] in values else [
            k for k in values if re.search(rf"\b{re.escape(k)}\b", str(err))]
        item = prefix + named[0] if len(named) == 1 else prefix.rstrip(".") or cls.__name__
        raise ParameterError(source, f"'{item}'", str(err)) from None


def _default(cls: type, name: str):
    """The default of field ``name`` of ``cls`` (its factory called), or None."""
    f = {f.name: f for f in fields(cls)}[name]
    return f.default_factory() if f.default_factory is not MISSING else (None if f.default is MISSING else f.default)


def _as_dict(obj) -> dict:
    d = obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    d.pop("schema", None)
    return json.loads(json.dumps(d, default=str))


def _options(values: dict, source, prefix: str):
    """``pretrain.options`` of the method in ``values``: a table of its options class, or one of its presets."""
    name = values.get("contrast").method if "contrast" in values else PretrainConfig().contrast.method
    own = registered_method(name).options
    given = values["options"]
    if own is None:
        raise ParameterError(source, f"'{prefix}options'", f"method {name!r} has no options, got {given!r}")
    if isinstance(given, str):
        given = named_section(own, given, prefix + "options", source)
    return build(own, given, source, prefix + "options.")


def load(preset: str = "demo", overrides=(), source: str | None = None) -> Experiment:
    """The experiment of ``preset`` (a name of ``preset_names()`` or a ``.toml`` path) with ``overrides`` (dotted
    strings or a dict), checked; ``source`` names the caller in errors (a notebook, a command)."""
    given = as_dotted(overrides)
    for text in given:
        key = text.split("=", 1)[0].strip()
        if key in DERIVED:
            raise ParameterError(f"{source + ': ' if source else ''}override {text!r}", f"'{key}'",
                                 f"is set from {DERIVED[key]}, not on its own", "override that instead")
    tree = read_preset(preset)
    try:
        for text in given:  # one at a time, in order: a section given by name, then keys inside it
            tree = merge(Experiment, tree, parse_overrides([text]), source or "override")
        tree["overrides"] = [*tree.get("overrides", ()), *given]
        exp = Experiment.from_dict(tree, source or preset_path(preset).name)
        for variant in exp.variants:  # every cell of a grid checked now, not when its turn comes
            exp.cell(variant)
        return exp
    except ParameterError as err:  # name the override that brought the bad value, when one did
        key = (err.item or "").strip("'")
        keys = [o.split("=")[0] for o in given]
        culprit = [o for o, k in zip(given, keys) if k == key] or [
            o for o, k in zip(given, keys) if key and (k.startswith(key + ".") or key.startswith(k + "."))]
        if not culprit:
            raise
        raise ParameterError(f"{source + ': ' if source else ''}override {culprit[-1]!r}", err.item, err.problem,
                             err.hint) from None


def as_dotted(overrides) -> list[str]:
    """Overrides as ``key=value`` strings that ``parse_overrides`` reads back to the same values."""
    if not isinstance(overrides, Mapping):
        return [str(o) for o in overrides]
    out = []
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            out += as_dotted({f"{key}.{k}": v for k, v in value.items()})
        else:
            out.append(f"{key}={_toml(value)}")
    return out


def _toml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def settings_help(cls: type = Experiment, prefix: str = "", instance=None) -> list[tuple[str, str, str]]:
    """``(dotted key, default, its comment)`` of every setting of the tree (``DERIVED`` ones left out), read from
    the classes' source: the comment beside a field is its one help sentence (``python -m cagelib <command>
    --help``). ``instance``: the section's default object (e.g. ``Experiment().finetune``), whose values are shown."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        lines = []
    comments = {}
    for line in lines:
        head, _, comment = line.partition("  # ")
        name = head.strip().split(":")[0]
        if comment and head.startswith("    ") and not head.startswith("     ") and name.isidentifier():
            comments[name] = comment.strip()
    instance = cls() if instance is None else instance
    rows = []
    for f in fields(cls):
        if prefix + f.name in DERIVED:
            continue
        section, default = _section_class(_hints(cls)[f.name]), getattr(instance, f.name)
        if section is not None and default is not None:
            rows += settings_help(section, prefix + f.name + ".", default)
        else:
            shown = json.dumps(asdict(default) if is_dataclass(default) else default, default=str)
            rows.append((prefix + f.name, shown, comments.get(f.name, "")))
    return rows
