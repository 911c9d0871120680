"""cagelib's errors about bad input: each names the file (or argument), the item and the problem.

Every message reads ``"<source>: <item>: <problem>[; <what to do>]"``, for example
``"walk.bvh: line 212: 49 values, expected 48 (one per channel)"`` or
``"train_x: window 17: contains NaN or inf"``. The classes subclass ``ValueError`` (so
``except ValueError`` keeps working) and keep the parts as attributes (``source``, ``item``,
``problem``, ``hint``):

- ``DataFileError``: a data file (BVH, ``.npz``, HDF5) or an in-memory data set is malformed;
- ``CheckpointError``: a run's checkpoint cannot be read, is incomplete or does not match the run;
- ``NonFiniteError``: NaN or inf where numbers must be finite (inputs, features, weights);
- ``DivergedError``: training from finite inputs and weights produced a non-finite loss (also a
  ``FloatingPointError``);
- ``ParameterError``: a notebook parameter has the wrong type, is out of range or unknown
  (``cagelib.lab.parameters``; source = the notebook, item = the parameter).

Non-finite values are rejected where they enter (the loaders, the evaluation functions); the loaders
offer ``nan_policy="interpolate"`` for short gaps (``cagelib.data.gaps``).
"""
from __future__ import annotations

import os

import numpy as np


def format_message(source, item, problem: str, hint: str | None = None) -> str:
    """``"source: item: problem; hint"`` with the absent parts left out."""
    parts = [str(p) for p in (source, item) if p is not None and str(p) != ""]
    message = ": ".join(parts + [str(problem)])
    return f"{message}; {hint}" if hint else message


class CagelibError(ValueError):
    """Bad input to cagelib. ``source``: the file or argument; ``item``: clip, key, line, window..."""

    def __init__(self, source: str | os.PathLike | None, item: str | None, problem: str,
                 hint: str | None = None):
        self.source = None if source is None else str(source)
        self.item, self.problem, self.hint = item, problem, hint
        super().__init__(format_message(self.source, item, problem, hint))

    def __str__(self) -> str:  # KeyError-style subclasses would otherwise quote the message
        return format_message(self.source, self.item, self.problem, self.hint)

    def __reduce__(self):  # picklable (multiprocessing workers, DDP)
        return type(self), (self.source, self.item, self.problem, self.hint)

    def located(self, source: str | os.PathLike) -> "CagelibError":
        """The same error with ``source`` (e.g. the file path) in front of the current source, if any."""
        outer = str(source) if self.source is None else f"{source}: {self.source}"
        return type(self)(outer, self.item, self.problem, self.hint)


class DataFileError(CagelibError):
    """A data file or data set is malformed: wrong shape, count, type or value."""


class JointMapError(DataFileError, KeyError):
    """A joint map names a joint that the file does not have (also a ``KeyError``)."""


class CheckpointError(CagelibError):
    """A checkpoint cannot be read, lacks an entry, or belongs to other settings or other data."""


class NonFiniteError(CagelibError):
    """NaN or inf where finite numbers are needed."""


class DivergedError(CagelibError, FloatingPointError):
    """Training from finite inputs and weights produced a non-finite loss."""


class ParameterError(CagelibError):
    """A notebook parameter is of the wrong type, out of range, or not a parameter of that notebook."""


def first_nonfinite(x) -> int | None:
    """Index along the first axis of the first entry with a NaN or inf (None when all are finite)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.ndim else ~np.isfinite(a.reshape(1))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_finite(x, source, what: str = "window", hint: str | None = None) -> None:
    """Raise ``NonFiniteError(source, "<what> <i>", ...)`` for the first entry ``x[i]`` with NaN or inf."""
    i = first_nonfinite(x)
    if i is not None:
        raise NonFiniteError(source, f"{what} {i}", "contains NaN or inf", hint)
