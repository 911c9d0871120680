"""Where a run came from: ``provenance() -> dict`` (command line, git commit, versions, device, platform, time).

A low-level module (standard library, torch and NumPy only). Every field that cannot be found is ``None``,
never an exception: outside a git checkout (an installed package) ``git.commit`` and ``git.dirty`` are
null. ``cagelib.pretrain.loop`` writes it to ``<run_dir>/provenance.json`` at the start of every run.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__

SOURCE = Path(__file__).resolve().parent  # the package folder; its parent is the checkout it lives in
GIT_TIMEOUT = 5.0  # seconds per git command
CPUINFO = Path("/proc/cpuinfo")


def provenance(device: torch.device | str | None = None) -> dict:
    """The record of this process: ``command`` (argv, executable), ``git`` (commit, dirty), ``versions``,
    ``device`` (CPU model and flags, torch threads, CUDA device name), ``platform`` (no hostname) and
    ``time_utc`` (ISO 8601). ``device``: the run's device (names that CUDA device; default: the current one)."""
    return {
        "command": {"argv": list(sys.argv), "executable": sys.executable},
        "git": git_state(),
        "versions": versions(),
        "device": device_info(device),
        "platform": platform.platform(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git(folder: Path, *args: str) -> str | None:
    """stdout of ``git args`` run in ``folder``, or None (no git, not a checkout, an error, a timeout)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # never take the index lock
    try:
        out = subprocess.run(["git", *args], cwd=folder, env=env, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(source: Path | None = None) -> dict:
    """``{"commit": sha | None, "dirty": bool | None}`` of the git checkout holding the package folder
    ``source`` (default ``SOURCE``), run in its parent folder. A package outside a checkout, or untracked in
    the checkout around it (an install inside a repository's virtual environment), gives nulls."""
    source = Path(source if source is not None else SOURCE)
    folder = source.parent
    none = {"commit": None, "dirty": None}
    if not folder.is_dir():
        return none
    if _git(folder, "ls-files", "--error-unmatch", "--", str(source / "__init__.py")) is None:
        return none  # not this checkout's package
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return none
    status = _git(folder, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def _version(distribution: str, module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get(module), "__version__", None)


def versions() -> dict:
    """Versions of python, torch (and its CUDA), numpy, cagelib and scikit-learn (None when absent)."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "numpy": np.__version__, "cagelib": __version__, "scikit-learn": _version("scikit-learn", "sklearn")}


def _cpuinfo() -> tuple[str | None, set[str] | None]:
    """The CPU's model name and flags from /proc/cpuinfo (Linux); (None, None) elsewhere."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None, None
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return model, flags


def device_info(device: torch.device | str | None = None) -> dict:
    """``cpu`` (model name), ``amx`` / ``avx512_bf16`` (the CPU flags; None where unknown), ``cpu_capability``
    (the kernels torch picked), ``torch_threads`` and ``cuda`` (the CUDA device's name, None without one)."""
    model, flags = _cpuinfo()
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    cuda = None
    try:
        if torch.cuda.is_available():
            dev = torch.device(device) if device is not None else None
            index = dev.index if dev is not None and dev.type == "cuda" and dev.index is not None else None
            if dev is None or dev.type == "cuda":
                cuda = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    except (RuntimeError, AssertionError, ValueError):
        cuda = None
    return {
        "cpu": model or platform.processor() or platform.machine() or None,
        "amx": None if flags is None else any(f.startswith("amx") for f in flags),
        "avx512_bf16": None if flags is None else "avx512_bf16" in flags,
        "cpu_capability": capability() if capability is not None else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
    }
