"""The run's metrics sinks: ``RunLogger`` writes ``metrics.jsonl`` and, where TensorBoard is installed, event files.

The loop calls ``log_epoch(metrics)`` once per trained epoch (the epoch's metrics dict, ``"epoch"`` 1-based)
and ``log_health_init(metrics)`` once for the health before training (``"epoch": 0``). ``metrics.jsonl``
is rewritten whole and atomically after every epoch (``checkpoint.write_metrics``), one JSON object per
epoch, exactly as without TensorBoard. TensorBoard (``torch.utils.tensorboard``, which needs the
``tensorboard`` package) is imported lazily, here only: without it the logger writes JSONL alone, silently;
``sinks`` says which are active. Its scalars (every numeric metric, step = epoch) go to
``<run_dir>/tensorboard/``; a resumed run purges the steps after its checkpoint (those of an interrupted
run that will be trained again), so no epoch appears twice. Only the writing process (rank 0) has one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_write_json
from ..provenance import provenance
from .checkpoint import METRICS, write_metrics

TENSORBOARD = "tensorboard"  # the event files' folder in the run folder
PROVENANCE = "provenance.json"


def _summary_writer():
    """``torch.utils.tensorboard.SummaryWriter``, or None when it cannot be imported (no tensorboard)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # ImportError without tensorboard; a broken install (protobuf) must not stop a run
        return None
    return SummaryWriter


def tensorboard_available() -> bool:
    """``torch.utils.tensorboard`` can be imported (the ``tensorboard`` package is installed)."""
    return _summary_writer() is not None


def _scalars(metrics: dict) -> dict[str, float]:
    """The metrics TensorBoard shows: every int or float but the epoch (the step) and booleans."""
    return {k: float(v) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunLogger:
    """The sinks of one run folder: ``metrics.jsonl`` always, TensorBoard when available (and wanted).

    ``history``: the epochs already trained (a resumed run's, from its checkpoint), written to
    ``metrics.jsonl`` at once; ``start_epoch``: the epochs done (0 = a fresh run). ``tensorboard=False``
    turns TensorBoard off. Use as a context manager, or call ``close()``.
    """

    def __init__(self, run_dir: str | os.PathLike, history: list | tuple = (), start_epoch: int = 0,
                 tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS
        self.history = list(history)
        write_metrics(self.path, self.history)
        self.sinks = ["jsonl"]
        self._writer = None
        writer_class = _summary_writer() if tensorboard else None
        if writer_class is not None:
            # TensorBoard drops the steps >= purge_step of earlier event files (epochs trained again on resume)
            purge = start_epoch + 1 if start_epoch > 0 else 0
            self._writer = writer_class(log_dir=str(self.run_dir / TENSORBOARD), purge_step=purge)
            self._writer.flush()  # its first events are on disk now, not later from its thread
            self.sinks.append("tensorboard")

    @property
    def tensorboard_dir(self) -> Path | None:
        """The event files' folder; None without TensorBoard."""
        return self.run_dir / TENSORBOARD if "tensorboard" in self.sinks else None

    def log_epoch(self, metrics: dict) -> None:
        """One finished epoch: appended to ``metrics.jsonl`` (rewritten atomically) and to TensorBoard."""
        self.history.append(metrics)
        write_metrics(self.path, self.history)
        self._scalars(metrics, int(metrics["epoch"]))

    def log_health_init(self, metrics: dict) -> None:
        """The health before training (``health_init.json``'s metrics) at step 0; TensorBoard only."""
        self._scalars(metrics, int(metrics.get("epoch", 0)))

    def _scalars(self, metrics: dict, step: int) -> None:
        if self._writer is None:
            return
        for tag, value in _scalars(metrics).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()  # written before the loop goes on: nothing reaches the folder later

    def close(self, quiet: bool = False) -> None:
        """Close the event file; ``quiet``: ignore a failure (the run is failing already)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception:
                if not quiet:
                    raise

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(quiet=kind is not None)


def record_provenance(run_dir: str | os.PathLike, resumed: bool = False, start_epoch: int = 0,
                      device: torch.device | str | None = None, world_size: int = 1) -> dict:
    """Write ``<run_dir>/provenance.json`` (atomically): ``{"runs": [record, ...]}``, this start's record
    (``cagelib.provenance.provenance()`` plus ``resumed``, ``start_epoch``, ``world_size``) appended to the
    earlier ones when ``resumed`` (a fresh run starts the list; an unreadable file is started anew).
    Returns this start's record."""
    path = Path(run_dir) / PROVENANCE
    runs = []
    if resumed and path.is_file():
        try:
            earlier = json.loads(path.read_text())
            runs = list(earlier["runs"]) if isinstance(earlier, dict) and isinstance(earlier.get("runs"), list) else []
        except (OSError, ValueError):
            runs = []
    record = {**provenance(device), "resumed": resumed, "start_epoch": start_epoch, "world_size": world_size}
    atomic_write_json(path, {"runs": runs + [record]})
    return record
