"""Atomic file writes: nothing half-written is ever left at the target path.

``atomic_path(path)`` yields a temporary path in the target's folder; when the block finishes, the
file replaces ``path`` in one ``os.replace``; when it raises, the temporary file is removed and
``path`` keeps its old content (or stays absent). Every file cagelib writes (JSON, text, checkpoints,
``.npz`` sets, figures, reports) goes through ``atomic_path``.

A process killed in the middle of a write (SIGKILL, power loss) cannot remove its temporary file.
Temporary files are named ``.<stem>.cagelib-tmp-<host>-<pid>.<random><suffix>``; every ``atomic_path``
(and ``remove_stale_temp_files``, which resuming a run calls) removes those in the target's folder
whose process, on this host, is no longer running. (Not on Windows, where it cannot be checked safely.)

A write that fails because the disk is full raises ``NoSpaceError`` (an ``OSError`` with ``errno.ENOSPC``)
naming the file: "<path>: no space left on device (<n> free) while writing it; <name> keeps its previous
content; ...". That holds also for ``torch.save``, whose writer reports a full disk only as
``[enforce fail at inline_container.cc]``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


_TEMP_MARK = "cagelib-tmp"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(rf"^\..*\.{_TEMP_MARK}-([0-9a-f]{{8}})-(\d+)\.")


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: never call it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``atomic_path`` writes in ``folder`` whose process (on this host)
    was killed midway; returns the removed paths. Files of running processes are left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or match.group(1) != _HOST:
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or _running(pid):
            continue
        try:
            os.remove(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:  # removed by someone else meanwhile
            pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: write to the yielded temporary path; it becomes ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.{_TEMP_MARK}-{_HOST}-{os.getpid()}.",
                               suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except Exception as err:
        if _out_of_space(err, path.parent):
            existed = path.exists()
            raise NoSpaceError(path, existed, _free_bytes(path.parent)) from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class NoSpaceError(OSError):
    """The file system of a target path is full (``errno.ENOSPC``): the message names the file; the target
    keeps its previous content (``atomic_path`` never replaces it with a partial write)."""

    def __init__(self, path: str | os.PathLike, existed: bool = True, free: int | None = None):
        self.path, self.existed, self.free = Path(path), existed, free
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def __str__(self) -> str:
        kept = (f"{self.path.name} keeps its previous content" if self.existed
                else f"{self.path.name} was not written")
        free = "" if self.free is None else f" ({_size(self.free)} free)"
        return (f"{self.path}: no space left on device{free} while writing it; {kept}; free some space in "
                f"{self.path.parent} (or write elsewhere) and run again")

    def __reduce__(self):  # picklable (multiprocessing workers)
        return type(self), (self.path, self.existed, self.free)


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_LOW_SPACE = 1 << 20  # bytes: a failed write with less than this left is taken for a full disk


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return stat.f_bavail * stat.f_frsize


def _out_of_space(err: BaseException, folder: Path) -> bool:
    """The write failed because the disk is full: an ``ENOSPC`` (or quota) ``OSError`` anywhere in the
    exception's chain, or a torch writer error (``inline_container.cc``, which drops the errno) while
    the target's file system has (almost) no space left."""
    seen, e = set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    if isinstance(err, RuntimeError) and ("inline_container" in str(err) or "PytorchStreamWriter" in str(err)):
        free = _free_bytes(folder)
        return free is not None and free < _LOW_SPACE
    return False


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (non-JSON values via ``str``); ``indent`` None: compact (files
    holding long lists, e.g. window predictions)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str))


def json_text(data: Any, indent: int = 2, default=str, level: int = 0) -> str:
    """``data`` as JSON, indented by ``indent`` spaces per level, with every list of scalars (a window
    prediction vector, a confusion row) on one line: readable, and compact where the long lists are.
    ``default``: as ``json.dumps`` (non-JSON values; ``str`` as ``cagelib.atomic.atomic_write_json``)."""
    pad, inner = " " * indent * level, " " * indent * (level + 1)
    if isinstance(data, dict) and data:
        items = [f"{inner}{json.dumps(k if isinstance(k, str) else json.dumps(k))}: "  # keys as json.dumps makes them
                 f"{json_text(v, indent, default, level + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(data, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in data):
        return ("[\n" + ",\n".join(inner + json_text(v, indent, default, level + 1) for v in data)
                + "\n" + pad + "]")
    return json.dumps(data, default=default)


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = True) -> Path:
    """Write ``arrays`` as an ``.npz`` (what ``np.load`` reads) to ``path`` atomically.
    Deflate-compressed unless ``compress=False``; the bytes depend on the data only."""
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression) as archive:
        for key, value in arrays.items():
            # a fixed timestamp makes the bytes depend on the data only (rebuilds are identical)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return Path(path)
