"""The pretraining configuration, the paper's schedule, and the model a configuration builds.

``PretrainConfig`` holds every pretraining setting with its one default; the method's own settings are
its ``contrast`` field (``cagelib.methods.cage.ContrastConfig``), the encoder's its ``model`` field.
The notebooks, the demo and the batch grid build it in one place: ``cagelib.lab.settings.pretrain_config``.
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import torch

from ..errors import CheckpointError, DataFileError
from ..methods.aimclr import PAPER_SCHEDULE as AIMCLR_SCHEDULE
from ..methods.aimclr import AimCLRConfig
from ..methods.cage import PRESETS, ContrastConfig
from ..methods.cage_mamp import MaskedMotionConfig
from ..methods.crossclr import PAPER_SCHEDULE as CROSSCLR_SCHEDULE
from ..methods.crossclr import CrossCLRConfig
from ..methods.encoders import AGCNConfig
from ..methods.isc import PAPER_OPTIMIZER as ISC_OPTIMIZER
from ..methods.isc import PAPER_SCHEDULE as ISC_SCHEDULE
from ..methods.isc import ISCConfig
from ..methods.mamp import PAPER_OPTIMIZER as MAMP_OPTIMIZER
from ..methods.mamp import MAMPConfig
from ..methods.registry import build_method
from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from .fast import FastConfig
from .health import HealthConfig

# What the runs written before PretrainConfig.representation and ContrastConfig.views were trained with:
LEGACY_REPRESENTATION = "first_frame"  # their windows were first-frame centred
LEGACY_VIEWS = "paper"  # their views were Crop + Joint Jittering (Eq. 1)
OPTIMIZERS = ("sgd", "adamw")  # PretrainConfig.optimizer
# Fields that say how a run ran, not what it is: they may differ between a run's config.json and its
# checkpoint, or between an interrupted run and its resumption (cagelib.pretrain.checkpoint.RESUMABLE_CHANGES).
HOW_IT_RAN = ("epochs", "device", "run_dir", "checkpoint_every", "progress", "fast", "health")
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
    d = config.to_dict() if isinstance(config, PretrainConfig) else PretrainConfig.from_dict(dict(config)).to_dict()
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
        saved_config = PretrainConfig.from_dict(dict(saved))
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


def paper_schedule(method: str) -> tuple[int, tuple[int, ...]]:
    """The paper's ``(epochs, lr milestones)``: 300 epochs (x0.1 at 150, 250) for the two-stream methods
    (CAGE, C3L: "difficult to converge", more epochs), 200 (x0.1 at 100, 160) for the single-stream ones
    (GE-CLR and the ACL ablations). MAMP: 400 epochs (its cosine schedule is not the loop's: no milestones).
    AimCLR: 300 epochs, x0.1 at 250 (its code's NTU configs). CrosSCLR: 300, x0.1 at 250; ISC: 451, x0.1 at 351
    (their codes' NTU-60 configs). CAGE + MAMP: its base preset's (CAGE's)."""
    if method == "mamp":
        return 400, ()
    if method == "aimclr":
        return AIMCLR_SCHEDULE
    if method == "crossclr":
        return CROSSCLR_SCHEDULE
    if method == "isc":
        return ISC_SCHEDULE
    if method == "cage_mamp":  # its base preset's
        return paper_schedule(MaskedMotionConfig().base)
    two_stream = len(PRESETS.get(method, {}).get("streams", ())) == 2
    return (300, (150, 250)) if two_stream else (200, (100, 160))


@dataclass
class PretrainConfig:
    epochs: int = 20  # training epochs (paper: GE-CLR 200, CAGE 300)
    batch_size: int = 32  # mini-batch size; the last incomplete batch of an epoch is dropped (paper: 32)
    lr: float = 0.1  # initial learning rate (paper: SGD 0.1; MAMP: AdamW 1e-3)
    sgd_momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 1e-4  # weight decay (paper: SGD 1e-4; MAMP: AdamW 0.05)
    optimizer: str = "sgd"  # "sgd" (CAGE) or "adamw" (betas 0.9, 0.95; MAMP), one of OPTIMIZERS
    milestones: tuple = (10, 16)  # epochs where lr *= lr_gamma (paper: GE-CLR 100, 160; CAGE 150, 250)
    lr_gamma: float = 0.1  # learning-rate decay factor (paper: 0.1)
    seed: int = 0  # seeds model init, per-epoch shuffling and the augmentation generator
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda:0", ...
    model: AGCNConfig = field(default_factory=AGCNConfig.small)  # encoder (paper: AGCNConfig())
    contrast: ContrastConfig = field(default_factory=ContrastConfig)  # method (paper: ContrastConfig.preset("cage"))
    mamp: MAMPConfig = field(default_factory=MAMPConfig)  # MAMP's model and masking, used when contrast.method == "mamp"
    aimclr: AimCLRConfig = field(default_factory=AimCLRConfig)  # AimCLR's views, EADM and mining (method "aimclr")
    crossclr: CrossCLRConfig = field(default_factory=CrossCLRConfig)  # CrosSCLR's views, mining (method "crossclr")
    isc: ISCConfig = field(default_factory=ISCConfig)  # ISC's sequence encoder, losses and views (method "isc")
    cage_mamp: MaskedMotionConfig = field(default_factory=MaskedMotionConfig)  # base preset + masked motion ("cage_mamp")
    run_dir: str = "outputs/pretrain"  # where config, metrics and checkpoint go
    checkpoint_every: int = 1  # write checkpoint.pt every this many epochs (and after the last)
    progress: bool = True  # show a tqdm progress bar
    fast: FastConfig | None = None  # fast step (cagelib.pretrain.fast: bf16, compile, CUDA graph; CUDA only); None = train_step
    representation: str = DEFAULT_REPRESENTATION  # what the data's root joint holds (cagelib.representation)
    health: HealthConfig | None = field(default_factory=HealthConfig)  # per-epoch health metrics (pretrain.health); None = off

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        if isinstance(self.model, dict):
            self.model = AGCNConfig(**self.model)
        if isinstance(self.contrast, dict):
            self.contrast = ContrastConfig.from_dict(self.contrast)
        if isinstance(self.mamp, dict):
            self.mamp = MAMPConfig.from_dict(self.mamp)
        if isinstance(self.aimclr, dict):
            self.aimclr = AimCLRConfig.from_dict(self.aimclr)
        if isinstance(self.crossclr, dict):
            self.crossclr = CrossCLRConfig.from_dict(self.crossclr)
        if isinstance(self.isc, dict):
            self.isc = ISCConfig.from_dict(self.isc)
        if isinstance(self.cage_mamp, dict):
            self.cage_mamp = MaskedMotionConfig.from_dict(self.cage_mamp)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"PretrainConfig: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if isinstance(self.fast, dict):
            self.fast = FastConfig(**self.fast)
        if isinstance(self.health, dict):
            self.health = HealthConfig(**self.health)
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"PretrainConfig: representation must be one of {REPRESENTATIONS}, "
                             f"got {self.representation!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("PretrainConfig: need epochs >= 0, batch_size >= 1, checkpoint_every >= 1")

    @classmethod
    def paper(cls, method: str = "cage", **overrides) -> "PretrainConfig":
        """The paper's settings: full A-GCN, batch 32, SGD lr 0.1, the schedule of ``paper_schedule``;
        MAMP: its paper model (``MAMPConfig.paper()``) and AdamW lr 1e-3, weight decay 0.05; the other peers their
        codes' settings (``<Peer>Config.paper()``; CrosSCLR batch 128, ISC lr 0.01 and batch 64)."""
        epochs, milestones = paper_schedule(method)
        peer = dict(mamp=MAMPConfig.paper(), **MAMP_OPTIMIZER) if method == "mamp" else {}
        if method == "aimclr":  # its code's mining epoch (150 of 300)
            peer = dict(aimclr=AimCLRConfig.paper())
        if method == "crossclr":  # its code's cross-view start (150 of 300) and batch
            peer = dict(crossclr=CrossCLRConfig.paper(), batch_size=128)
        if method == "isc":  # its code's bi-GRU, lr 0.01 and batch 64
            peer = dict(isc=ISCConfig.paper(), **ISC_OPTIMIZER)
        base = cls(epochs=epochs, milestones=milestones, model=AGCNConfig(),
                   contrast=ContrastConfig.preset(method), run_dir=f"outputs/{method}", **peer)
        return replace(base, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "PretrainConfig":
        """Inverse of ``to_dict`` (also of its JSON round trip). Fields missing from an older
        ``config.json`` take their defaults, except what those runs were trained with:
        ``representation`` = ``LEGACY_REPRESENTATION`` and ``contrast.views`` = ``LEGACY_VIEWS``. A value of
        the wrong type is a ``DataFileError`` naming ``source`` (the file), the key, the type and the value
        (``check_config_types``)."""
        check_config_types(cls, d, source)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"PretrainConfig: unknown fields {sorted(unknown)}")
        if "representation" not in d:  # written before the field: those runs trained on first-frame windows
            d = {**d, "representation": LEGACY_REPRESENTATION}
        if isinstance(d.get("contrast"), dict) and "views" not in d["contrast"]:  # and with the paper's views
            d = {**d, "contrast": {**d["contrast"], "views": LEGACY_VIEWS}}
        return cls(**d)


@dataclass
class PretrainResult:
    run_dir: Path  # folder with config.json, metrics.jsonl, checkpoint.pt
    history: list  # one metrics dict per epoch (as in metrics.jsonl)
    model: torch.nn.Module  # the trained method (cagelib.methods.registry) (in train mode, on the training device)
    health_init: dict | None = None  # health metrics before training (health_init.json); None with health off


def build_model(config: PretrainConfig) -> torch.nn.Module:
    """A freshly initialised method of ``config.contrast.method`` (``cagelib.methods.registry``), seeded
    by ``config.seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_method(config)
