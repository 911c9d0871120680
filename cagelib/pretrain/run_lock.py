"""The lock of a run folder: one process writes a pretraining run at a time, and a process whose folder was
replaced (a rerun) stops before it writes. ``RunLock`` (an ``fcntl.flock``), ``RunFolderBusyError``,
``RunFolderReplacedError``; ``cagelib.pretrain.loop.pretrain`` holds it for the whole run (over DDP processes, rank 0
holds it: ``lock_on_rank_0``)."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None

RUN_LOCK = ".cagelib-run.lock"  # in the run folder while a process writes the run; removed when it ends


class RunFolderBusyError(RuntimeError):
    """Another process is writing the run folder (it holds its lock)."""


class RunFolderReplacedError(RuntimeError):
    """The run folder was removed or replaced (e.g. by a rerun) while this process was writing it."""


def _holder_text(info: dict) -> str:
    if not info:
        return "a process that is just starting"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {info.get('since', '?')}"


class RunLock:
    """The lock of one run folder: an ``fcntl.flock`` on ``<run_dir>/.cagelib-run.lock``, held while one
    process writes the run (``pretrain`` holds it for the whole run). A second process gets
    ``RunFolderBusyError`` naming the holder (pid, host, since when). The kernel releases the lock when
    its holder exits or is killed, so a lock file left by a dead process never blocks; a clean release
    removes the file. ``check()`` (before each write) raises ``RunFolderReplacedError`` once the folder was
    removed or replaced, so a stale process never writes into the folder of a later run.
    (Without ``fcntl``, i.e. on Windows, only ``check()`` works: two writers are not detected.)"""

    def __init__(self, run_dir: str | os.PathLike, what: str = "pretraining"):
        self.run_dir, self.what = Path(run_dir), what
        self.path = self.run_dir / RUN_LOCK
        self.fd: int | None = None
        self.created = False  # the folder did not exist before acquire()
        self._identity: tuple | None = None

    def acquire(self) -> "RunLock":
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if _fcntl is not None:
                    try:
                        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                    except (BlockingIOError, PermissionError):
                        info = _read_holder(fd)
                        raise RunFolderBusyError(
                            f"{self.run_dir}: this run folder is in use by another {self.what} process "
                            f"({_holder_text(info)}; lock file {self.path}); a second writer would overwrite "
                            "its files: wait for it to finish, stop it, or choose another run_dir") from None
                try:  # the holder may have removed the file between our open and our lock: lock the new one
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        stat = os.fstat(fd)
        self.fd, self._identity = fd, (stat.st_dev, stat.st_ino)
        return self

    def owns(self) -> bool:
        """The run folder is still this lock's (its lock file is the one this lock holds)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def check(self) -> None:
        """Raise ``RunFolderReplacedError`` if the run folder (its lock file) is no longer this lock's."""
        if not self.owns():
            raise RunFolderReplacedError(
                f"{self.run_dir}: the run folder was removed or replaced while this {self.what} process "
                f"(pid {os.getpid()}) was writing it (another run took its place); stopping without writing there")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == self._identity[1]:
                os.remove(self.path)  # still holding the lock: nobody can hold this file meanwhile
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)  # releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def lock_on_rank_0(run_dir: str | os.PathLike, rank: int, world_size: int, device=None,
                   caller: str = "pretrain_distributed") -> RunLock | None:
    """The run folder's lock for a process group: acquired by rank 0 (returned there; None on the other ranks,
    which never touch it). One collective tells every rank whether rank 0 got it, so when it did not
    (``RunFolderBusyError``), every rank stops: rank 0 with that error, the others with a ``RuntimeError``
    naming it. ``device``: the rank's device (the collective's, for NCCL)."""
    lock, error = (RunLock(run_dir), None) if rank == 0 else (None, None)
    if lock is not None:
        try:
            lock.acquire()
        except BaseException as err:
            error = err
    if world_size > 1:
        import torch.distributed as dist  # only over processes: this module stays importable without torch

        try:
            news = [None if error is None else f"{type(error).__name__}: {error}"]
            dist.broadcast_object_list(news, src=0, device=device)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if error is None and news[0] is not None:
            raise RuntimeError(f"{caller}: rank 0 could not lock the run folder: {news[0]}")
    if error is not None:
        raise error
    return lock
