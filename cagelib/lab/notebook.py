"""Notebook helpers: the live loss plot of notebook 03, notebook stripping, and a small command line.

    python -m cagelib.lab.notebook strip notebooks/*.ipynb [--check]   # remove outputs and widget state
    python -m cagelib.lab.notebook runs [--outputs DIR]                 # list the runs under outputs/
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat

from ..atomic import atomic_write_text
from .figures import plot_pretraining
from .runs import runs_table


class LiveLossPlot:
    """``pretrain`` callback: after each epoch, redraw the loss components (and the positive-pair
    accuracy) and, beside them, the training health (retrieval, spread, k-NN; ``cagelib.pretrain.health``)
    in the notebook output, in place. ``history`` holds the metrics received so far, ``initial`` the
    health before training (``health_init``, shown as epoch 0)."""

    def __init__(self, title: str = "pretraining"):
        self.title, self.history, self.initial, self.handle = title, [], None, None

    def figure(self):
        return plot_pretraining(self.history, self.initial, title=self.title)

    def health_init(self, metrics: dict) -> None:
        """The health before training (called by ``pretrain`` before the first epoch)."""
        self.initial = dict(metrics)
        self._show()

    def __call__(self, epoch: int, metrics: dict) -> None:
        self.history.append(dict(metrics))
        self._show()

    def _show(self) -> None:
        from IPython.display import display  # only inside a notebook kernel

        figure = self.figure()
        if self.handle is None:
            self.handle = display(figure, display_id=True)
        else:
            self.handle.update(figure)


def strip_notebook(path: str | os.PathLike) -> bool:
    """Remove outputs, execution counts and widget/papermill state from a notebook; True if it changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    for key in ("widgets", "papermill"):
        nb.metadata.pop(key, None)
    after = nbformat.writes(nb)
    if after != before:
        atomic_write_text(path, after)
    return after != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cagelib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip", help="remove outputs and widget state from notebooks")
    strip.add_argument("notebooks", nargs="+")
    strip.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook holds outputs")
    runs = sub.add_parser("runs", help="list the runs under outputs/")
    runs.add_argument("--outputs", default="")
    args = parser.parse_args(argv)
    if args.command == "runs":
        print(runs_table(args.outputs), end="")
        return 0
    dirty = []
    for name in args.notebooks:
        if args.check:
            nb = nbformat.read(name, as_version=4)
            if any(c.get("outputs") or c.get("execution_count") for c in nb.cells) or "widgets" in nb.metadata:
                dirty.append(name)
        elif strip_notebook(name):
            print(f"stripped {name}")
    for name in dirty:
        print(f"{name}: holds outputs or widget state (run: python -m cagelib strip {name})")
    return 1 if dirty else 0
