"""Shared fixtures. Keep small: other test modules add their own fixtures here."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Runs made by tests and notebooks (nbval kernels inherit the environment) go to a temporary folder,
# not the repository's outputs/.
os.environ.setdefault("CAGELIB_OUTPUTS", tempfile.mkdtemp(prefix="cagelib-outputs-"))

# The suite is many tiny models: one intra-op thread avoids thread thrashing on the 2-core CI machine.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real data (Bandai BVH release, E-Gait sample files): ../shared/data from the repository root,
# or the folder named by CAGELIB_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("CAGELIB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test (saying where it looked) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA} (set CAGELIB_SHARED_DATA to use another)")
    return SHARED_DATA


@pytest.fixture
def bandai_subset(shared_data, tmp_path):
    """Factory: a Bandai release folder under tmp_path holding only the named clips (symlinks).

    ``bandai_subset({"dataset-1": ["walk_happy_001"], ...}, cfg=True)`` -> the folder's path.
    """
    def make(clips: dict[str, list[str]], cfg: bool = True) -> Path:
        root = Path(tempfile.mkdtemp(prefix="bandai", dir=tmp_path))
        for dataset, names in clips.items():
            source = shared_data / "bandai-motion" / dataset
            (root / dataset / "data").mkdir(parents=True)
            if cfg:
                (root / dataset / "cfg").symlink_to(source / "cfg")
            for name in names:
                for suffix in (".bvh", ".json"):
                    file = f"{dataset}_{name}{suffix}"
                    (root / dataset / "data" / file).symlink_to(source / "data" / file)
        return root

    return make
