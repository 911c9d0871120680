"""The pretraining configuration, the paper's schedule, and the model a configuration builds.

``PretrainConfig`` holds every pretraining setting with its one default; the method's own settings are
its ``contrast`` field (``cagelib.methods.cage.ContrastConfig``), the encoder's its ``model`` field.
An experiment (``cagelib.experiment``) holds one as its ``pretrain`` section; ``Experiment.pretrain_config`` gives
what a run trains.
"""
from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from typing import Any
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import torch

from ..device import check_device_name, seeded_global_rng
from ..errors import CheckpointError, DataFileError
from ..methods.cage import ContrastConfig
from ..methods.encoders import AGCNConfig
from ..methods.registry import build_method, method as registered_method
from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from ..schedule import milestone_epochs
from ..typed import from_mapping
from .fast import FastConfig
from .health import HealthConfig

SCHEMA = 3  # the layout of a saved PretrainConfig (config.json, a checkpoint's "config"); upgrade_config reads older
OPTIMIZERS = ("sgd", "adamw")  # PretrainConfig.optimizer
# Fields that say how a run ran, not what it is: they may differ between a run's config.json and its
# checkpoint, or between an interrupted run and its resumption (cagelib.pretrain.checkpoint.RESUMABLE_CHANGES).
HOW_IT_RAN = ("schema", "epochs", "device", "run_dir", "checkpoint_every", "progress", "fast", "health")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               tuple: "a list", list: "a list", dict: "an object"}


def _type_problem(value, hint) -> str | None:
    """None when ``value`` (from JSON) fits the annotation ``hint``, else what was expected."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return None
        if base is bool and isinstance(value, bool):
            return None
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if base is str and isinstance(value, str):
            return None
        if base in (tuple, list) and isinstance(value, (list, tuple)):
            return None
        if is_dataclass(base) and isinstance(value, (dict, base)):
            return None
        if base not in (bool, int, float, str, tuple, list, type(None)) and not is_dataclass(base):
            return None  # an annotation this check does not know: accepted
    names = [_TYPE_NAMES.get(typing.get_origin(o) or o, "null" if o is type(None) else
                             f"an object ({getattr(o, '__name__', o)})") for o in options]
    return " or ".join(dict.fromkeys(names))


def check_config_types(cls, d, source=None, prefix: str = "") -> None:
    """Refuse a loaded configuration (e.g. ``config.json``) whose values have the wrong JSON type, before
    anything compares or uses them: ``DataFileError(source, "<key>", "expected an integer, got the string
    '2'")``, the key dotted for nested settings (``model.widths``). Unknown keys are left to ``from_dict``."""
    if not isinstance(d, dict):
        raise DataFileError(source, prefix.rstrip(".") or None,
                            f"expected an object of {cls.__name__} settings, got {_shown(d)}")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name not in d:
            continue
        value, hint = d[f.name], hints[f.name]
        expected = _type_problem(value, hint)
        if expected is not None:
            raise DataFileError(source, prefix + f.name, f"expected {expected}, got {_shown(value)}")
        nested = [o for o in (typing.get_args(hint) or (hint,)) if is_dataclass(o)]
        if nested and isinstance(value, dict):
            check_config_types(nested[0], value, source, f"{prefix}{f.name}.")


def _shown(value) -> str:
    kind = {bool: "a boolean", int: "the integer", float: "the number", str: "the string", list: "the list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    text = json.dumps(value) if isinstance(value, (bool, int, float, str, type(None))) else repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{kind} {text}" if not isinstance(value, dict) else "an object"


def config_identity(config: "PretrainConfig | dict") -> str:
    """The identity of a run: the SHA-256 (first 16 hex digits) of its resolved configuration without the
    fields of ``HOW_IT_RAN``. A run's ``config.json`` and its ``checkpoint.pt`` (whose ``config`` entry is
    the same configuration) have the same identity; another run's checkpoint has another one unless the two
    runs share every setting."""
    d = config.to_dict() if isinstance(config, PretrainConfig) else PretrainConfig.load(dict(config)).to_dict()
    kept = {k: v for k, v in d.items() if k not in HOW_IT_RAN}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_run(config_path, config: "PretrainConfig", checkpoint_path, state: dict) -> None:
    """Refuse a ``checkpoint.pt`` that belongs to another run than ``config_path`` (``config.json``): their
    identities (``config_identity``) must agree, naming both files and the settings that differ. A
    checkpoint without a readable ``config`` entry (older or foreign) is left to the strict state-dict check
    (``load_state_strict``: every key and shape of the model ``config`` builds)."""
    saved = state.get("config") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        return
    try:
        saved_config = PretrainConfig.load(dict(saved))
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(checkpoint_path, "entry 'config'", f"not a valid PretrainConfig ({error})") from None
    if config_identity(saved_config) == config_identity(config):
        return
    ours, theirs = config.to_dict(), saved_config.to_dict()
    changed = sorted(k for k in ours if k not in HOW_IT_RAN and json.dumps(ours[k], default=str)
                     != json.dumps(theirs.get(k), default=str))
    raise CheckpointError(checkpoint_path, None, f"belongs to another run than {config_path} (run identity "
                          f"{config_identity(saved_config)} vs {config_identity(config)}; settings that differ: "
                          f"{changed})", "put the run's own checkpoint.pt beside its config.json")


def upgrade_config(d: dict, source=None) -> dict:
    """A saved ``PretrainConfig`` dict of any schema as one of ``SCHEMA`` (its ``"schema"`` entry; absent: 1).

    Schema 1 (before this entry): runs trained before ``representation`` and ``contrast.views`` existed used
    first-frame windows and the paper's views (Crop + Joint Jittering): missing, they are those; each peer had
    its own field (``mamp``, ``aimclr``, ``crossclr``, ``isc``, ``cage_mamp``): the run's method's becomes
    ``options``, the others are dropped. Schema 2 (before AimCLR's extreme rotation turned as its code): a saved
    AimCLR's options without ``rotate_as_code`` turned the other way (False); its ``time_flip_p`` was saved."""
    if not isinstance(d, dict):
        raise DataFileError(source, None, f"expected an object of PretrainConfig settings, got {type(d).__name__}")
    d = dict(d)
    schema = d.pop("schema", 1)
    if schema not in (1, 2, SCHEMA):
        raise DataFileError(source, "schema", f"{schema!r} is not a schema this version reads (1 to {SCHEMA})",
                            "load the run with the cagelib version that wrote it")
    if schema == 1:
        d.setdefault("representation", "first_frame")
        if isinstance(d.get("contrast"), dict):
            d["contrast"] = {"views": "paper", **d["contrast"]}
        contrast = d.get("contrast") if isinstance(d.get("contrast"), dict) else {}
        name = contrast.get("method", ContrastConfig().method)
        peers = {k: d.pop(k) for k in ("mamp", "aimclr", "crossclr", "isc", "cage_mamp") if k in d}
        d["options"] = peers.get(name)
    if schema < 3 and isinstance(d.get("options"), dict) and "time_flip_p" in d["options"]:  # AimCLR's options
        d["options"] = {"rotate_as_code": False, **d["options"]}
    return {**d, "schema": SCHEMA}


@dataclass
class PretrainConfig:
    epochs: int = 20  # training epochs (paper: GE-CLR 200, CAGE 300)
    batch_size: int = 32  # mini-batch size; the last incomplete batch of an epoch is dropped (paper: 32)
    lr: float = 0.1  # initial learning rate (paper: SGD 0.1; MAMP: AdamW 1e-3)
    sgd_momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 1e-4  # weight decay (paper: SGD 1e-4; MAMP: AdamW 0.05)
    optimizer: str = "sgd"  # "sgd" (CAGE) or "adamw" (betas 0.9, 0.95; MAMP), one of OPTIMIZERS
    milestones: tuple = (10, 16)  # epochs where lr *= lr_gamma, or fractions of epochs (cagelib.schedule; paper: GE-CLR 100, 160)
    lr_gamma: float = 0.1  # learning-rate decay factor (paper: 0.1)
    seed: int = 0  # seeds model init, per-epoch shuffling and the augmentation generator
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda:0", ...
    model: AGCNConfig = field(default_factory=AGCNConfig.small)  # encoder (paper: AGCNConfig())
    contrast: ContrastConfig = field(default_factory=ContrastConfig)  # method (paper: ContrastConfig.preset("cage"))
    options: Any = None  # the method's own settings (registry: Method.options, e.g. MAMPConfig); None = its defaults
    run_dir: str = "outputs/pretrain"  # where config, metrics and checkpoint go
    checkpoint_every: int = 1  # write checkpoint.pt every this many epochs (and after the last)
    progress: bool = True  # show a tqdm progress bar
    fast: FastConfig | None = None  # fast step (cagelib.pretrain.fast: bf16, compile, CUDA graph; CUDA only); None = train_step
    representation: str = DEFAULT_REPRESENTATION  # what the data's root joint holds (cagelib.representation)
    health: HealthConfig | None = field(default_factory=HealthConfig)  # per-epoch health metrics (pretrain.health); None = off

    FOLLOWS = {"contrast.method": ("options",)}  # another method's options go with it (experiment.merge)

    def __post_init__(self) -> None:
        self.milestones = milestone_epochs(self.milestones, self.epochs)
        if isinstance(self.model, dict):
            self.model = from_mapping(AGCNConfig, self.model)
        if isinstance(self.contrast, dict):
            self.contrast = from_mapping(ContrastConfig, self.contrast)
        own = registered_method(self.contrast.method).options
        if isinstance(self.options, dict):
            if own is None:
                raise ValueError(f"PretrainConfig: method {self.contrast.method!r} takes no options, got {self.options}")
            self.options = from_mapping(own, self.options)
        if self.options is not None and (own is None or not isinstance(self.options, own)):
            raise ValueError(f"PretrainConfig: options of {self.contrast.method!r} must be "
                             f"{own.__name__ if own else 'None'}, got {type(self.options).__name__}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"PretrainConfig: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if isinstance(self.fast, dict):
            self.fast = from_mapping(FastConfig, self.fast)
        if isinstance(self.health, dict):
            self.health = from_mapping(HealthConfig, self.health)
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"PretrainConfig: representation must be one of {REPRESENTATIONS}, "
                             f"got {self.representation!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"PretrainConfig: lr must be a finite number > 0, got {self.lr}")
        try:
            check_device_name(self.device)
        except ValueError as err:
            raise ValueError(f"PretrainConfig: {err}") from None
        if self.epochs < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("PretrainConfig: need epochs >= 0, batch_size >= 1, checkpoint_every >= 1")

    @classmethod
    def paper(cls, method: str, **overrides) -> "PretrainConfig":
        """The paper's settings: full A-GCN, batch 32, SGD lr 0.1, and the method's own recipe
        (``registry.Method.paper``: CAGE's schedule, MAMP's AdamW, the peers' codes' settings)."""
        base = cls(model=AGCNConfig(), contrast=ContrastConfig.preset(method), run_dir=f"outputs/{method}",
                   **registered_method(method).paper)
        return replace(base, **overrides).with_options()

    def adapted(self) -> "PretrainConfig":
        """This configuration as its method trains it (``registry.Method.adapt``: e.g. MAMP's AdamW at this lr's
        scale, AimCLR's mining epoch at half the run), its options filled: what a run saves and builds from.
        Apply it once, to a configuration written at SGD's scale."""
        adapt = registered_method(self.contrast.method).adapt
        return (replace(self, **adapt(self)) if adapt else self).with_options()

    def with_options(self) -> "PretrainConfig":
        """``options`` None replaced by the method's defaults (unchanged for a method without options)."""
        own = registered_method(self.contrast.method).options
        return replace(self, options=own()) if self.options is None and own is not None else self

    def to_dict(self) -> dict:
        return {**asdict(self), "schema": SCHEMA}

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "PretrainConfig":
        """Inverse of ``to_dict`` (also of its JSON round trip): ``from_dict({})`` is ``PretrainConfig()``. A dict
        of an older schema is refused (``load`` upgrades it). A value of the wrong type is a ``DataFileError``
        naming ``source`` (the file), the key, the type and the value (``check_config_types``)."""
        d = dict(d)
        schema = d.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise ValueError(f"PretrainConfig: schema {schema!r}, not {SCHEMA}; read saved files with PretrainConfig.load")
        check_config_types(cls, d, source)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"PretrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, d: dict, source=None) -> "PretrainConfig":
        """A saved configuration (``config.json``, a checkpoint's ``config``) of any schema (``upgrade_config``),
        its options filled (``with_options``)."""
        return cls.from_dict(upgrade_config(d, source), source).with_options()


@dataclass
class PretrainResult:
    run_dir: Path  # folder with config.json, metrics.jsonl, checkpoint.pt
    history: list  # one metrics dict per epoch (as in metrics.jsonl)
    model: torch.nn.Module  # the trained method (cagelib.methods.registry) (in train mode, on the training device)
    health_init: dict | None = None  # health metrics before training (health_init.json); None with health off


def build_model(config: PretrainConfig) -> torch.nn.Module:
    """A freshly initialised method of ``config.contrast.method`` (``cagelib.methods.registry``), seeded
    by ``config.seed`` without touching the caller's global RNG state."""
    with seeded_global_rng(config.seed):
        return build_method(config)
