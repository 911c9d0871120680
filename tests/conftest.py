"""Shared fixtures. Keep small: other test modules add their own fixtures here."""
from __future__ import annotations

import gzip
import os
import shutil
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
# A few real files (Bandai BVH clips, the E-Gait sample files), committed gzip-compressed: tests/data/README.md.
TEST_DATA = REPO_ROOT / "tests" / "data"
# The whole releases: ../shared/data from the repository root, or the folder named by CAGELIB_SHARED_DATA.
# No test needs them: where present, the tests/data check also compares them with tests/data/SHA256SUMS.
SHARED_DATA = Path(os.environ.get("CAGELIB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def unpack_test_data(target: Path) -> Path:
    """tests/data copied to ``target`` with every ``*.gz`` decompressed (``walk.bvh.gz`` -> ``walk.bvh``):
    the layout of the releases (``bandai-motion/dataset-N/{cfg,data}``, ``egait-samples``)."""
    for source in sorted(TEST_DATA.rglob("*")):
        if not source.is_file() or source.parent == TEST_DATA:  # tests/data/README.md stays behind
            continue
        dest = target / source.relative_to(TEST_DATA)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as f:
                dest.with_suffix("").write_bytes(f.read())
        else:
            shutil.copyfile(source, dest)
    return target


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A real-data folder laid out like ../shared/data, holding the files of tests/data (unpacked once
    per session into a temporary folder): always present, never skips."""
    return unpack_test_data(tmp_path_factory.mktemp("real-data"))


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
                    if not (source / "data" / file).is_file():
                        raise FileNotFoundError(f"{file}: not among the real test files (tests/data/README.md)")
                    (root / dataset / "data" / file).symlink_to(source / "data" / file)
        return root

    return make


@pytest.fixture(scope="session")
def clip():
    """A real walking clip of the embedded set (dataset-2 walk_exhausted_001): ``(T, 16, 3)`` in metres."""
    from cagelib.data.tasks import embedded_set

    gs = embedded_set()
    return gs.positions[list(gs.meta["group"]).index("dataset-2/walk_exhausted_001")]


@pytest.fixture(scope="session")
def release_folder() -> Path:
    """The whole real-data folder (``SHARED_DATA``), which may be absent: tests use it only where present."""
    return SHARED_DATA
