"""Build the embedded data set (``data/bandai.npz``) from the Bandai BVH release.

    python -m cagelib data [--source ../shared/data/bandai-motion] [--out data/bandai.npz]

converts every dataset-1 clip and the dataset-2 walking clips (``bandai.EMBEDDED_CONTENTS``) into one
compact ``.npz``; ``cagelib.data.load_embedded()`` turns it back into a float32 ``GaitSet`` in metres.

The file format is described in ``cagelib.data.bandai`` (``save_compact``) and data/README.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .bandai import DEFAULT_QUANTUM, EMBEDDED_CONTENTS, EMBEDDED_PATH, load_bandai, load_compact, save_compact

DEFAULT_SOURCE = EMBEDDED_PATH.parents[2] / "shared" / "data" / "bandai-motion"


def build(source: str | Path = DEFAULT_SOURCE, out: str | Path = EMBEDDED_PATH,
          quantum: float = DEFAULT_QUANTUM, progress: bool = False) -> dict:
    """Convert the Bandai release at ``source`` into the compact file ``out``; return a report."""
    start = time.perf_counter()
    datasets = tuple(d for d in EMBEDDED_CONTENTS if (Path(source) / d).is_dir())
    if not datasets:
        raise FileNotFoundError(f"{source}: holds neither of {tuple(EMBEDDED_CONTENTS)}")
    gs = load_bandai(source, datasets, EMBEDDED_CONTENTS, progress=progress)
    path = save_compact(gs, out, quantum)
    restored = load_compact(path)
    error = max(float(np.abs(a - b).max()) for a, b in zip(gs.positions, restored.positions))
    return {"out": str(path), "bytes": path.stat().st_size, "max_abs_error_m": error,
            "seconds": round(time.perf_counter() - start, 1), **gs.summary()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cagelib data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(DEFAULT_SOURCE),
                        help="the Bandai release folder holding dataset-1/ and dataset-2/ "
                             "(default: shared/data/bandai-motion)")
    parser.add_argument("--out", default=str(EMBEDDED_PATH),
                        help="the compact .npz file to write (default: data/bandai.npz, the embedded set)")
    parser.add_argument("--quantum", type=float, default=DEFAULT_QUANTUM,
                        help="metres per integer step of the compact format (default: 1e-4, 0.1 mm)")
    parser.add_argument("--quiet", action="store_true", help="do not show the progress bar")
    args = parser.parse_args(argv)
    report = build(args.source, args.out, args.quantum, progress=not args.quiet)
    for key, value in report.items():
        print(f"{key}: {value}")
