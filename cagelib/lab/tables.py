"""Results tables: ``mean ± std`` cells, Markdown / CSV tables from rows of dicts, an evaluation's rows,
the summary over seeds, and ``results.csv`` / ``results.md``."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_text
from .workbench import resolve_path


def format_mean_std(mean: float, std: float | None, precision: int = 2) -> str:
    """``"79.59 ± 1.23"``, or just the mean when there is no spread (one run)."""
    return f"{mean:.{precision}f}" if std is None else f"{mean:.{precision}f} ± {std:.{precision}f}"


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                  fmt: str = "markdown", precision: int = 2) -> str:
    """Rows of dicts -> a Markdown (``fmt="markdown"``) or CSV (``fmt="csv"``) table.

    Columns default to the keys in order of first appearance; floats get ``precision`` decimals,
    None and nan print empty.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.{precision}f}" if isinstance(v, float) else str(v)

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(table)
        return buf.getvalue()
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in table]
    return "\n".join(lines) + "\n"


def evaluation_rows(evaluation: dict) -> list[dict]:
    """One row per protocol: top-1 mean and std over folds, then the per-class mean accuracies."""
    rows = []
    for name, res in evaluation["results"].items():
        agg = res["aggregate"]
        with np.errstate(all="ignore"):
            balanced = float(np.nanmean(np.array(agg["per_class_mean"], dtype=float)))
        row = {"protocol": name, "top-1 %": agg["top1_mean"], "std over folds": agg["top1_std"],
               "balanced %": balanced, "folds": agg["n"]}
        row.update({f"{c} %": v for c, v in zip(agg["label_names"], agg["per_class_mean"])})
        rows.append(row)
    return rows


def summarize_results(rows: list[dict], method_order: tuple = (), by: tuple = ("method",)) -> list[dict]:
    """Per group of runs (``by``: default the method; add ``"encoder", "epochs"`` to keep runs of different
    sizes apart): number of seeds, and per protocol ``mean ± std`` over the runs of their fold means."""
    info = ("run", "method", "seed", "epochs", "encoder")
    protocols = list(dict.fromkeys(k for r in rows for k in r if k not in info and not k.endswith(" fold std")))
    order = {m: i for i, m in enumerate(method_order)}
    keys = list(dict.fromkeys(tuple(r[k] for k in by) for r in rows))
    keys.sort(key=lambda key: order.get(key[0], len(order)) if by[0] == "method" else 0)  # stable
    out = []
    for key in keys:
        mine = [r for r in rows if tuple(r[k] for k in by) == key]
        row = {**dict(zip(by, key)), "seeds": len({r["seed"] for r in mine}), "runs": len(mine)}
        for p in protocols:
            values = np.array([r[p] for r in mine if r.get(p) is not None], dtype=float)
            if len(values):
                row[f"{p} top-1 %"] = format_mean_std(values.mean(), values.std(ddof=1) if len(values) > 1 else None)
        out.append(row)
    return out


def write_results(root: str | os.PathLike, rows: list[dict], summary: list[dict], note: str = "") -> tuple[Path, Path]:
    """``results.csv`` (one row per run) and ``results.md`` (summary per method, then per run) in ``root``."""
    root = resolve_path(root)
    csv_path, md_path = root / "results.csv", root / "results.md"
    text = results_table(rows, fmt="csv")
    md = ["# Results", "", note, "", "## Mean ± std over seeds (each seed: mean over clip-grouped folds)", "",
          results_table(summary), "## Every run (top-1 %, mean over folds)", "",
          results_table([{k: v for k, v in r.items() if not k.endswith("fold std")} for r in rows])]
    for path, body in ((csv_path, text), (md_path, "\n".join(md))):
        atomic_write_text(path, body)
    return csv_path, md_path
