"""Jobs in worker processes that die with their parent: ``run_jobs`` runs the demo's seeds and the peer
grid's cells in spawned processes of one torch thread each; a SIGKILLed parent takes its workers with it
(Linux ``PR_SET_PDEATHSIG``, else a thread watching the parent pid), and a parent stopped by SIGINT,
SIGTERM or an error terminates them before it re-raises."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(parent: int) -> None:
    """Initializer of a seed worker: it dies with the process that started it, even a SIGKILLed one. Linux:
    ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; everywhere: a thread that exits when the parent pid changes."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the thread below still works
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)  # re-parented: the parent is gone; no cleanup can run in its place


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate ``pool``'s worker processes now (SIGTERM, then SIGKILL after 5 s) instead of waiting for
    their jobs: the parent is stopping (Ctrl-C, SIGTERM, an error)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1)


def run_jobs(function, jobs: list, workers: int, done=None) -> list:
    """``[function(job) for job in jobs]``, in ``workers`` spawned processes when ``workers > 1`` (and more
    than one job). The workers die with this process, even when it is SIGKILLed; when it is interrupted
    (SIGINT, SIGTERM through ``SystemExit``, an error in a job) they are terminated before it re-raises.
    ``done(result)``, if given, is called for each result in job order as soon as it is there."""
    def collect(results) -> list:
        out = []
        for result in results:
            out.append(result)
            if done is not None:
                done(result)
        return out

    if workers <= 1 or len(jobs) <= 1:
        return collect(function(job) for job in jobs)
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        results = collect(pool.map(function, jobs))
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    return results
