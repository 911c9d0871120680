"""The CAGE contrastive model: GE-CLR (Eq. 2), ACL memory banks HSMB / ASMB / CSMB (Eq. 5-8), C3L (Eq. 10-11).

Structure follows MoCo (facebookresearch/moco ``builder.py``): per coordinate stream a query network
``f`` (encoder + projection head, trained by SGD), a momentum copy ``f^`` (no gradient, updated as
``theta^ <- m theta^ + (1 - m) theta``) and a FIFO memory bank of the momentum keys.

One training step on a Cartesian batch ``x`` (N, T, V, 3):

    S, S^ = T(x), T(x)                 two augmented views (``config.views``, body_augment), in Cartesian
    S~    = T~(x)                      ambiguity view (speed change + shear), only when ACL is on
    per stream s (Cartesian: the views as they are; Spherical: spherical_coordinates of the same views)
        z = f_s(S), z^ = f^_s(S^), z~ = f^_s(S~)          all L2-normalised (N, D)
        none         L_s = InfoNCE(z^, z, N_s)              Eq. 2   (GE-CLR)
        hybrid       L_s = InfoNCE(z^, z, N_s u z~)         Eq. 5-6 (HSMB), z~ enqueued beside z^
        ambiguity    L_s = InfoNCE(z^, z, z~)               Eq. 7   (ASMB), the bank is this batch's z~
        cooperation  L_s = Eq. 2 + Eq. 7                    Eq. 8   (CSMB)
    L = l1 L_C + l2 L_S + L_C<->S                                    Eq. 10-11 (C3L)

Decisions (``docs/decisions.md``, "Contrastive method"): ambiguity samples are embedded by the momentum
encoder without gradient ("Ambiguity samples are embedded by the momentum encoder"); L_Positive (Eq. 7)
contrasts the query with its key against the whole batch's ambiguity features, the sample's own included
("Ambiguity samples are negatives, the sample's own included"); C<->S defaults to "Cartesian guides
Spherical" with a positive and negatives from one key space ("C3L (Eq. 10-11)"); stale copies of a
sample's own key are masked out of its negatives ("Stale own keys (`mask_own_keys=True`, default)").

Input representation (``cagelib.representation``): the batch is in ``representation`` (what the root
joint holds); the views act in the body frame accordingly (``body_augment.BodyFrame``). The spherical
stream (Eq. 9) of ``"first_frame"`` and ``"root_relative"`` input is the root-relative spherical pose (the
root joint 0). For ``"root_velocity"`` the other joints are root-relative already and the root joint holds
the root velocity: the joints get their spherical coordinates as they are, and the root joint's three
channels are the spherical coordinates of the velocity vector (speed, polar angle from the up axis,
azimuth; all 0 for a standing root), so the stream keeps the walk's speed and direction.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..coordinates import DEFAULT_PHI_MODE, PHI_MODES, spherical_coordinates
from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from ..skeleton import ROOT
from .augment import SPEED_DOWN_RATE, SPEED_UP_RATE
from .body_augment import DEFAULT_VIEWS, VIEWS, ambiguity_transform, contrastive_views
from .encoders import AGCN, ProjectionHead
from .losses import (MemoryBank, contrastive_cross_entropy, info_nce, info_nce_logits, momentum_update,
                     positive_accuracy)
from .registry import available_methods, register
from .split_batch_norm import can_split_batch_norm, split_batch_norm

__all__ = ["ContrastConfig", "CAGE", "stream_coordinates", "MemoryBank", "info_nce", "STREAMS", "BANK_MODES", "CROSS_MODES", "PRESETS",
           "paper_recipe", "split_batch_norm", "can_split_batch_norm"]

STREAMS = ("cartesian", "spherical")
BANK_MODES = ("none", "hybrid", "ambiguity", "cooperation")
CROSS_MODES = ("cartesian_guides_spherical", "paper_literal", "symmetric", "none")
AMBIGUITY_OWN = ("negative", "masked", "positive")  # ContrastConfig.ambiguity_own (docs/decisions.md, "Table 1 study")
# The fields that define a method; a preset fills those left as None.
PRESETS: dict[str, dict] = {
    "geclr": dict(streams=("cartesian",), bank_mode="none", cross_coordinate="none"),
    "hsmb": dict(streams=("cartesian",), bank_mode="hybrid", cross_coordinate="none"),
    "asmb": dict(streams=("cartesian",), bank_mode="ambiguity", cross_coordinate="none"),
    "csmb": dict(streams=("cartesian",), bank_mode="cooperation", cross_coordinate="none"),
    "c3l": dict(streams=STREAMS, bank_mode="none", cross_coordinate="cartesian_guides_spherical"),
    "cage": dict(streams=STREAMS, bank_mode="cooperation", cross_coordinate="cartesian_guides_spherical"),
    "spherical": dict(streams=("spherical",), bank_mode="none", cross_coordinate="none"),
    "spherical_acl": dict(streams=("spherical",), bank_mode="cooperation", cross_coordinate="none"),
}


def paper_recipe(name: str) -> dict:
    """The paper's schedule of preset ``name`` (``PretrainConfig`` fields): 300 epochs, lr x0.1 at 150 and 250
    for the two-stream methods (CAGE, C3L: "difficult to converge", more epochs), 200 epochs, x0.1 at 100 and
    160 for the single-stream ones (GE-CLR and the ACL ablations)."""
    two_stream = len(PRESETS[name]["streams"]) == 2
    return dict(epochs=300, milestones=(150, 250)) if two_stream else dict(epochs=200, milestones=(100, 160))


@dataclass
class ContrastConfig:
    method: str = "geclr"  # a registered method (cagelib.methods.registry): a preset (PRESETS), "custom", or a peer
    streams: tuple | None = None  # coordinate streams: ("cartesian",), ("spherical",) or both
    bank_mode: str | None = None  # "none" (GE-CLR) | "hybrid" (HSMB) | "ambiguity" (ASMB) | "cooperation" (CSMB)
    cross_coordinate: str | None = None  # C<->S loss (Eq. 10), one of CROSS_MODES; needs both streams
    ambiguity_speed: str = "up"  # ambiguity transform speed change: "up" (keep every r-th frame) or "down"
    speed_up_rate: int = SPEED_UP_RATE  # r of the speed-up ambiguity (paper: 4 of {2, 4, 8})
    speed_down_rate: float = SPEED_DOWN_RATE  # r of the speed-down ambiguity (paper: 0.3 of (0, 1))
    queue_size: int = 2048  # memory bank size K (paper: 2,048)
    momentum: float = 0.999  # momentum m of the key encoders
    temperature: float = 0.07  # InfoNCE temperature tau
    feature_dim: int = 128  # projected, L2-normalised feature size D
    projection_hidden_dim: int | None = None  # hidden width of the MLP head; None = encoder out_dim (AimCLR)
    lambda_cartesian: float = 1.0  # l1 of Eq. 11
    lambda_spherical: float = 1.0  # l2 of Eq. 11
    ambiguity_enqueue: str | int = "all"  # HSMB: ambiguity features enqueued per step: "all" (batch) or a count
    ambiguity_own: str = "negative"  # a sample's own z~_i: "negative" (Eq. 5 / 7 as read), "masked" (left out),
    #                                  "positive" (Eq. 7's positive instead of z^; asmb, csmb, cage); AMBIGUITY_OWN
    mask_own_keys: bool = True  # drop stale keys of a sample's own from its negatives (False = plain MoCo)
    phi_mode: str = DEFAULT_PHI_MODE  # azimuth handling of the spherical stream (cagelib.coordinates)
    views: str = DEFAULT_VIEWS  # view transform T (body_augment.VIEWS): "paper" (Crop + Joint Jittering), "crop", "body"

    FOLLOWS = {"method": tuple(PRESETS["geclr"])}  # filled from the method's preset unless given (experiment.merge)

    def __post_init__(self) -> None:
        if self.method != "custom" and self.method not in available_methods():
            raise ValueError(f"ContrastConfig: unknown method {self.method!r}; use one of "
                             f"{', '.join(available_methods())} or 'custom'")
        preset = PRESETS.get(self.method)
        given = {name: getattr(self, name) for name in PRESETS["geclr"]}
        for name, value in (preset or PRESETS["geclr"]).items():
            if given[name] is None:
                setattr(self, name, value)
        self.streams = tuple(self.streams)
        if not self.streams or len(set(self.streams)) != len(self.streams) or set(self.streams) - set(STREAMS):
            raise ValueError(f"ContrastConfig: streams must be distinct names from {STREAMS}, got {self.streams}")
        self.streams = tuple(s for s in STREAMS if s in self.streams)  # canonical order
        _check_choice("bank_mode", self.bank_mode, BANK_MODES)
        _check_choice("cross_coordinate", self.cross_coordinate, CROSS_MODES)
        _check_choice("ambiguity_speed", self.ambiguity_speed, ("up", "down"))
        _check_choice("phi_mode", self.phi_mode, PHI_MODES)
        _check_choice("ambiguity_own", self.ambiguity_own, AMBIGUITY_OWN)
        if self.ambiguity_own == "positive" and self.bank_mode == "hybrid":
            raise ValueError("ContrastConfig: ambiguity_own='positive' is a reading of Eq. 7 (asmb, csmb, cage); "
                             "HSMB's ambiguity samples are negatives by Eq. 5: use 'negative' or 'masked'")
        _check_choice("views", self.views, VIEWS)
        if self.cross_coordinate != "none" and len(self.streams) != 2:
            raise ValueError(f"ContrastConfig: cross_coordinate={self.cross_coordinate!r} needs both streams, "
                             f"got {self.streams}")
        if not (0.0 <= self.momentum <= 1.0) or self.temperature <= 0 or self.queue_size < 1:
            raise ValueError("ContrastConfig: need 0 <= momentum <= 1, temperature > 0, queue_size >= 1")
        if not (isinstance(self.ambiguity_enqueue, int) and self.ambiguity_enqueue >= 0) \
                and self.ambiguity_enqueue != "all":
            raise ValueError(f"ContrastConfig: ambiguity_enqueue must be 'all' or a count >= 0, "
                             f"got {self.ambiguity_enqueue!r}")
        if preset is not None and _structure(self) != _structure(None, preset):
            actual = {k: getattr(self, k) for k in preset}
            same = [n for n, p in PRESETS.items() if _structure(self) == _structure(None, p)]
            raise ValueError(f"ContrastConfig: method {self.method!r} is {preset}, got {actual}; name what it is: "
                             f"{same[0] if same else 'custom'!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "ContrastConfig":
        """The configuration of a method of the paper's ablations (``PRESETS``) or of a peer method
        (its CAGE fields unused), with overrides."""
        return cls(method=name, **overrides)


    @property
    def uses_ambiguity(self) -> bool:
        return self.bank_mode != "none"

    @property
    def uses_bank(self) -> bool:
        """ASMB keeps no persistent bank: its negatives are the current batch's ambiguity features."""
        return self.bank_mode != "ambiguity"


def _structure(config, values: dict | None = None) -> tuple:
    """What makes a preset the method it is: its streams, its bank mode and whether a C<->S loss is on (the
    C<->S variants of Eq. 10, ``CROSS_MODES``, are settings of one method)."""
    v = values or {k: getattr(config, k) for k in ("streams", "bank_mode", "cross_coordinate")}
    return tuple(v["streams"]), v["bank_mode"], v["cross_coordinate"] != "none"


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"ContrastConfig: {name} must be one of {choices}, got {value!r}")


class ContrastBranch(nn.Module):
    """Encoder followed by the projection head; returns L2-normalised float32 features ``(N, D)``.

    ``autocast_dtype`` (set by ``cagelib.pretrain.fast``; default None = float32): run encoder and head under
    ``torch.autocast`` on the input's device type; the output is cast to float32 before normalising.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.autocast_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            return F.normalize(self.head(self.encoder(x)), dim=1)  # (N, T, V, C) -> (N, D)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):  # graph-safe
            h = self.head(self.encoder(x))  # (N, D) in autocast_dtype
        return F.normalize(h.float(), dim=1)


class CAGE(nn.Module):
    """MoCo-style contrastive model over one or two coordinate streams (see the module docstring).

    ``encoder_factory()`` must return a fresh encoder ``(N, T, V, 3) -> (N, out_dim)`` with an ``out_dim``
    attribute (``cagelib.methods.encoders.AGCN``); it is called once per stream. ``augment`` and ``ambiguity`` are
    callables ``aug(x, generator) -> x`` on Cartesian batches; defaults:
    ``body_augment.contrastive_views(config.views, representation)`` and
    ``body_augment.ambiguity_transform`` built from the config. ``representation``: what the batch's root
    joint holds (``cagelib.representation``; see the module docstring). The ambiguity transform is applied to the
    raw batch (the third view of Fig. 2), not to an augmented view. ``gather`` (distributed training,
    ``cagelib.pretrain.distributed``): maps a per-process tensor to its concatenation over all processes; it is
    applied to keys, their sample ids and ambiguity features before they enter a bank or serve as
    negatives. Default: identity (one process).

    ``shared_key_pass`` (default False, MoCo's one pass per view; ``cagelib.pretrain.fast`` sets it): the key
    view and the ambiguity view of a stream go through the momentum network in ONE pass, concatenated
    along the batch, with every batch norm normalising each view by that view's own statistics
    (:func:`split_batch_norm`), so features and running statistics are those of the two separate passes
    (same up to float summation order); momentum networks with other batch norms keep separate passes.
    """

    def __init__(self, config: ContrastConfig, encoder_factory: Callable[[], nn.Module],
                 augment: Callable | None = None, ambiguity: Callable | None = None,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 representation: str = DEFAULT_REPRESENTATION):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"CAGE: unknown representation {representation!r}; choose from {REPRESENTATIONS}")
        self.config, self.representation = config, representation
        self.gather = gather if gather is not None else _identity
        self.augment = augment if augment is not None else contrastive_views(config.views, representation)
        if ambiguity is None and config.uses_ambiguity:
            ambiguity = ambiguity_transform(config.views, representation, speed=config.ambiguity_speed,
                                            speed_up_rate=config.speed_up_rate,
                                            speed_down_rate=config.speed_down_rate)
        self.ambiguity = ambiguity
        self.shared_key_pass = False  # one momentum pass for the key and ambiguity views (class docstring)
        self.query_nets, self.momentum_nets, self.memory_banks = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for stream in config.streams:
            encoder = encoder_factory()
            if not hasattr(encoder, "out_dim"):
                raise TypeError("encoder_factory() must return a module with an `out_dim` attribute")
            hidden = config.projection_hidden_dim or encoder.out_dim
            head = ProjectionHead(encoder.out_dim, hidden_dim=hidden, out_dim=config.feature_dim)
            self.query_nets[stream] = ContrastBranch(encoder, head)
            momentum_net = copy.deepcopy(self.query_nets[stream])  # f^ starts as a copy of f
            momentum_net.requires_grad_(False)
            self.momentum_nets[stream] = momentum_net
            if config.uses_bank:
                self.memory_banks[stream] = MemoryBank(config.queue_size, config.feature_dim)

    def encoders(self) -> dict[str, nn.Module]:
        """Stream name -> its query encoder (without the projection head), for evaluation: the method
        interface of ``cagelib.methods.registry``."""
        return {stream: net.encoder for stream, net in self.query_nets.items()}

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta^ <- m theta^ + (1 - m) theta for every stream, fused over all parameters."""
        momentum_update(self.momentum_nets.values(), self.query_nets.values(), self.config.momentum)

    def stream_input(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """A Cartesian batch in ``stream``'s coordinates (:func:`stream_coordinates`), same shape."""
        return stream_coordinates(x, stream, self.representation, self.config.phi_mode)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """The query network's L2-normalised projection of a Cartesian batch ``(N, T, V, 3) -> (N, D)``
        in ``stream``'s coordinates (the features the loss compares; ``cagelib.pretrain.health``)."""
        return self.query_nets[stream](self.stream_input(x, stream))

    def _negatives(self, stream: str, ambiguity: dict, sample_ids,
                   own: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Negatives ``(K, D)`` and drop-mask ``(N or 1, K)`` of the stream's main loss (Eq. 2, 5-6 or 7).
        ``own``: ``(N, N_all)`` True where an ambiguity feature is the query's own, None to keep it."""
        cfg = self.config
        if cfg.bank_mode == "ambiguity":  # ASMB: the bank is this batch's z~ only (size N), Eq. 7
            return ambiguity[stream], own
        bank = self.memory_banks[stream]
        mask = bank.negative_mask(sample_ids, mask_own=cfg.mask_own_keys)  # (N or 1, K)
        if cfg.bank_mode != "hybrid":  # a copy: the bank is overwritten in place before backward
            return bank.features.clone(), mask
        z_tilde = ambiguity[stream]  # HSMB: N~ = bank u z~ (Eq. 5)
        drop = own if own is not None else torch.zeros(1, z_tilde.shape[0], dtype=torch.bool, device=mask.device)
        rows = max(mask.shape[0], drop.shape[0])
        return torch.cat([bank.features, z_tilde.to(bank.features.dtype)]), torch.cat(
            [mask.expand(rows, -1), drop.expand(rows, -1)], dim=1)  # (N or 1, K + N_all)

    def _own_ambiguity(self, sample_ids, n: int, n_all: int, device) -> torch.Tensor | None:
        """``(N, N_all)`` bool, True where the gathered ambiguity feature is the query's own (by sample id, or
        the diagonal on one process without ids); None when ``ambiguity_own`` keeps it a negative."""
        if self.config.ambiguity_own == "negative":
            return None
        if sample_ids is None:
            if n != n_all:
                raise ValueError("CAGE: ambiguity_own needs sample_ids when the batch is gathered over processes")
            return torch.eye(n, dtype=torch.bool, device=device)
        ids = self.gather(sample_ids).to(device)
        mine = sample_ids.to(device).unsqueeze(1)  # (N, 1)
        return (mine == ids.unsqueeze(0)) & (mine >= 0)  # (N, N_all)

    def _positive_logits(self, stream: str, queries, keys, own_tilde, ambiguity, own) -> torch.Tensor:
        """Logits of L_Positive (Eq. 7) with the sample's own z~_i as ``ambiguity_own`` says: a negative (as
        written), left out (``masked``), or the positive in place of z^ (``positive``)."""
        positive = own_tilde[stream] if self.config.ambiguity_own == "positive" else keys[stream]
        return info_nce_logits(queries[stream], positive, ambiguity[stream], self.config.temperature, own)

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One contrastive step on a Cartesian batch ``x`` (N, T, V, 3).

        ``sample_ids`` (N,): dataset index of each row, used to mask a sample's own stale keys and stored
        in the banks. In training mode the momentum encoders are updated first (as MoCo) and the keys are
        enqueued after the loss; in eval mode the banks and momentum encoders are left untouched.
        Returns ``loss`` (with gradient) and detached components: ``loss_<stream>``, ``loss_base``,
        ``loss_positive``, ``loss_cross`` (when present), ``acc`` (top-1 of the positive in the main
        loss, mean over streams) and ``negatives`` (unmasked negatives per query, mean over streams).
        """
        cfg = self.config
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"CAGE expects a Cartesian batch (N, T, V, 3), got {tuple(x.shape)}")
        if self.training:
            self.momentum_update()
        view_query = self.augment(x, generator)  # S  (N, T, V, 3)
        view_key = self.augment(x, generator)  # S^ (N, T, V, 3)
        view_ambiguity = self.ambiguity(x, generator) if cfg.uses_ambiguity else None  # S~

        queries, keys, ambiguity = {}, {}, {}
        for stream in cfg.streams:
            queries[stream] = self.query_nets[stream](self.stream_input(view_query, stream))  # z (N, D)
            with torch.no_grad():  # z^ (N, D) and z~ (N, D) from the momentum encoder, no gradient
                keys[stream], z_tilde = self._momentum_features(stream, view_key, view_ambiguity)
                if z_tilde is not None:
                    ambiguity[stream] = z_tilde
        # z~ serve as negatives (the own one also as a positive, ambiguity_own): every process's
        own_tilde = ambiguity
        ambiguity = {stream: self.gather(z_tilde) for stream, z_tilde in ambiguity.items()}
        own = None if not ambiguity else self._own_ambiguity(
            sample_ids, x.shape[0], next(iter(ambiguity.values())).shape[0], x.device)

        out: dict[str, torch.Tensor] = {}
        total, accs, counts = 0.0, [], []
        weights = {"cartesian": cfg.lambda_cartesian, "spherical": cfg.lambda_spherical}
        # each stream's negatives and mask, built once and shared by the main and cross-coordinate losses
        bank_negatives = {stream: self._negatives(stream, ambiguity, sample_ids, own) for stream in cfg.streams}
        for stream in cfg.streams:
            negatives, mask = bank_negatives[stream]
            if cfg.bank_mode == "ambiguity":  # Eq. 7 alone
                logits = self._positive_logits(stream, queries, keys, own_tilde, ambiguity, own)
            else:
                logits = info_nce_logits(queries[stream], keys[stream], negatives, cfg.temperature, mask)
            main = contrastive_cross_entropy(logits)  # Eq. 2, 6 or 7
            stream_loss = main
            accs.append(positive_accuracy(logits))
            counts.append(torch.isfinite(logits[:, 1:]).sum(dim=1).float().mean())
            part = "loss_positive" if cfg.bank_mode == "ambiguity" else "loss_base"
            out[part] = out.get(part, 0.0) + main.detach()
            if cfg.bank_mode == "cooperation":  # Eq. 8: L_Base + L_Positive, L_Positive as Eq. 7
                positive = contrastive_cross_entropy(
                    self._positive_logits(stream, queries, keys, own_tilde, ambiguity, own))
                stream_loss = stream_loss + positive
                out["loss_positive"] = out.get("loss_positive", 0.0) + positive.detach()
            out[f"loss_{stream}"] = stream_loss.detach()
            total = total + weights[stream] * stream_loss

        if cfg.cross_coordinate != "none":
            cross = self._cross_loss(queries, keys, bank_negatives)
            out["loss_cross"] = cross.detach()
            total = total + cross
        out["loss"] = total
        out["acc"] = torch.stack(accs).mean()
        out["negatives"] = torch.stack(counts).mean()

        if self.training:  # dequeue-and-enqueue after the loss, as MoCo
            self._enqueue(keys, ambiguity, sample_ids)
        return out

    def _momentum_features(self, stream: str, view_key: torch.Tensor,
                           view_ambiguity: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z^, z~)`` of the stream's momentum network, ``(N, D)`` each (``z~`` None without ambiguity view):
        one pass per view, or one pass over both with per-view batch norm (``shared_key_pass``)."""
        net = self.momentum_nets[stream]
        key_input = self.stream_input(view_key, stream)
        if view_ambiguity is None:
            return net(key_input), None
        ambiguity_input = self.stream_input(view_ambiguity, stream)
        if not (self.shared_key_pass and can_split_batch_norm(net)):
            return net(key_input), net(ambiguity_input)
        with split_batch_norm(net, 2):
            both = net(torch.cat([key_input, ambiguity_input]))  # (2N, D): [keys; ambiguity]
        return both[: key_input.shape[0]], both[key_input.shape[0]:]

    def _cross_loss(self, queries, keys, bank_negatives) -> torch.Tensor:
        """L_C<->S (Eq. 10): the spherical query against the Cartesian key (and the reverse if symmetric).
        ``bank_negatives``: stream -> (negatives, mask) from :meth:`_negatives`."""
        mode, t = self.config.cross_coordinate, self.config.temperature

        def direction(query_stream: str, key_stream: str, bank_stream: str) -> torch.Tensor:
            negatives, mask = bank_negatives[bank_stream]
            return info_nce(queries[query_stream], keys[key_stream], negatives, t, mask)

        if mode == "cartesian_guides_spherical":  # positive and negatives from the Cartesian key space
            return direction("spherical", "cartesian", "cartesian")
        if mode == "paper_literal":  # Eq. 10 as written: Cartesian positive, spherical bank N^S
            return direction("spherical", "cartesian", "spherical")
        # symmetric: both consistent directions, averaged
        return 0.5 * (direction("spherical", "cartesian", "cartesian")
                      + direction("cartesian", "spherical", "spherical"))

    @torch.no_grad()
    def _enqueue(self, keys, ambiguity, sample_ids) -> None:
        cfg = self.config
        if not cfg.uses_bank:
            return
        if sample_ids is not None:
            sample_ids = self.gather(sample_ids)
        for stream in cfg.streams:
            bank = self.memory_banks[stream]
            bank.enqueue(self.gather(keys[stream]), sample_ids)  # every process's keys, as MoCo
            if cfg.bank_mode == "hybrid":  # Eq. 5: z~ enter the queue beside the keys, with unknown ids
                z_tilde = ambiguity[stream]
                count = z_tilde.shape[0] if cfg.ambiguity_enqueue == "all" else min(cfg.ambiguity_enqueue,
                                                                                      z_tilde.shape[0])
                bank.enqueue(z_tilde[:count])


def stream_coordinates(x: torch.Tensor, stream: str, representation: str = DEFAULT_REPRESENTATION,
                       phi_mode: str = DEFAULT_PHI_MODE) -> torch.Tensor:
    """A Cartesian batch ``(N, T, V, 3)`` in the coordinates of ``stream``, same shape.

    ``"cartesian"``: as it is. ``"spherical"`` (Eq. 9): for ``"first_frame"`` and ``"root_relative"``
    input the root-relative spherical pose (the root joint 0); for ``"root_velocity"`` input the joints as
    they are (root-relative already) with the root joint zeroed, and the root joint's channels the
    spherical coordinates of the root velocity (speed, polar angle, azimuth).
    """
    if stream == "cartesian":
        return x
    if stream != "spherical":
        raise ValueError(f"unknown stream {stream!r}; choose from {STREAMS}")
    if representation != "root_velocity":
        return spherical_coordinates(x, phi_mode=phi_mode)  # root-relative, the root joint 0
    pose = x.clone()
    pose[:, :, ROOT] = 0.0  # (N, T, V, 3) root-relative joints, the root at the origin
    spherical = spherical_coordinates(pose, phi_mode=phi_mode, root_relative=False)  # (N, T, V, 3)
    velocity = spherical_coordinates(x[:, :, ROOT : ROOT + 1], phi_mode=phi_mode, root_relative=False)  # (N, T, 1, 3)
    return torch.cat([spherical[:, :, :ROOT], velocity, spherical[:, :, ROOT + 1:]], dim=2)  # (N, T, V, 3)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _build(config) -> CAGE:
    """CAGE and its ablations (the presets of ``ContrastConfig``), with A-GCN encoders."""
    return CAGE(config.contrast, lambda: AGCN(config.model), representation=config.representation)


for _name in PRESETS:  # GE-CLR, HSMB, ASMB, CSMB, C3L, CAGE, spherical, spherical ACL (Tables 1-3)
    register(_name, _build, paper=paper_recipe(_name))
register("custom", _build, listed=False)  # CAGE with hand-set streams, bank mode and cross-coordinate loss
