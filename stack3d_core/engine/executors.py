"""Executors: one ``concurrent.futures.Executor`` interface for every way of running.

* ``serial``: runs each task in the calling thread when it is submitted (the default;
  debugger-friendly, no pickling).
* ``processes``: a ``ProcessPoolExecutor`` of N workers (spawn start method, so workers
  start clean whatever threads the parent has).
* ``dask``: ``dask.distributed``'s ``Client.get_executor()``; on a running scheduler when
  an address is given, else on a ``LocalCluster`` of N single-threaded process workers
  started without Dask's ``MALLOC_TRIM_THRESHOLD_`` (see :func:`_dask_executor`; a running
  cluster whose workers have it gets a warning). dask is imported only here, only when
  asked for.

The engine submits the same picklable task functions to all three, so every executor
runs one code path and produces identical outputs.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import Stack3dError

__all__ = ["EXECUTORS", "SerialExecutor", "open_executor"]

EXECUTORS = ("serial", "processes", "dask")
log = logging.getLogger("stack3d.engine")

# Native thread pools in workers: one thread each, the parallelism is across workers.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class SerialExecutor(cf.Executor):
    """Runs every task immediately, in the calling thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def _one_thread_per_worker() -> Iterator[None]:
    """Set the native thread-pool variables to 1 while worker processes are spawned (they
    are read when a worker loads OpenBLAS / MKL / OpenMP, as soon as it starts, before any task), so
    N workers do not start N x cores spinning BLAS threads; the user's own settings win."""
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@contextlib.contextmanager
def open_executor(
    kind: str, workers: int = 1, scheduler: str | None = None
) -> Iterator[tuple[cf.Executor, int]]:
    """Open an executor and yield ``(executor, parallelism)``; close it on exit.

    :param kind: ``"serial"``, ``"processes"`` or ``"dask"``.
    :param workers: number of worker processes (processes, local Dask cluster).
    :param scheduler: address of a running Dask scheduler (``kind == "dask"`` only).
    """
    if kind == "serial":
        yield SerialExecutor(), 1
    elif kind == "processes":
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        try:
            with _one_thread_per_worker():  # workers are spawned on demand, at submit time
                yield pool, workers
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    elif kind == "dask":
        with _dask_executor(workers, scheduler) as pair:
            yield pair
    else:
        raise Stack3dError(f"unknown executor '{kind}'; use one of {', '.join(EXECUTORS)}")


@contextlib.contextmanager
def _dask_executor(workers: int, scheduler: str | None) -> Iterator[tuple[cf.Executor, int]]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise Stack3dError("the dask executor needs dask[distributed]: pip install 'dask[distributed]'") from exc
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise Stack3dError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        parallelism = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
        _warn_malloc_trim(client, scheduler)
    else:
        import dask

        # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536: setting it turns off
        # glibc's adaptive mmap threshold, so every large numpy temporary is mmapped and
        # page-faulted afresh (a fused 100x1024² run: 13.6 s -> 24.9 s). Local workers start
        # without it unless the user set it.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            )
        client = Client(cluster)
        parallelism = workers
    try:
        yield client.get_executor(retries=0, pure=False), parallelism
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _malloc_trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _warn_malloc_trim(client: Any, scheduler: str) -> None:
    """Warn when the workers of a running cluster have ``MALLOC_TRIM_THRESHOLD_`` set (Dask's
    nanny default): glibc then maps and page-faults every large temporary afresh."""
    try:
        values = client.run(_malloc_trim_threshold)
    except Exception:  # noqa: BLE001 - a courtesy check; the run itself reports real failures
        return
    slow = sorted(str(address) for address, value in values.items() if value is not None)
    if slow:
        log.warning(
            "%d worker(s) of the Dask cluster at %s run with MALLOC_TRIM_THRESHOLD_ set (Dask's default "
            "65536): glibc then page-faults every large array afresh, up to 1.8x slower on stack3d's steps; "
            "give the workers' nannies the Dask configuration "
            "'distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null'",
            len(slow), scheduler)
