"""Where a sweep's runs execute: the Dask scheduler at $IGKD_SCHEDULER, or a local cluster sized to
this machine (one worker per GPU; on a CPU one worker using all cores, or $IGKD_WORKERS one-thread
workers). Split from igkd.sweep, which re-exports these names."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from igkd import paths
from igkd.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client, SpecCluster

SCHEDULER_ENV = "IGKD_SCHEDULER"
WORKERS_ENV = "IGKD_WORKERS"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_cluster(
    n_workers: int | None = None,
    torch_threads: int | None = None,
    gpus: int | None = None,
    timeout: float = 300,
) -> SpecCluster:
    """A Dask cluster on this machine for runs: one worker process per GPU, each seeing only its
    own GPU (CUDA_VISIBLE_DEVICES), or `n_workers` (default $IGKD_WORKERS, else 1) CPU worker
    processes.

    Each worker runs one task at a time (a run uses its device fully). `torch_threads` is each
    worker's torch thread count: default $OMP_NUM_THREADS, else the cores shared among the workers
    (Dask's own default of one thread would starve CPU training). `gpus` None counts the GPUs.
    Returns once the workers are up (at most `timeout` seconds).
    """
    import dask
    import torch
    from distributed import LocalCluster

    gpus = torch.cuda.device_count() if gpus is None else gpus
    if n_workers is None and os.environ.get(WORKERS_ENV):
        n_workers = _positive_int(os.environ[WORKERS_ENV], WORKERS_ENV)
    n = n_workers if n_workers is not None else max(gpus, 1)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n_workers={n_workers!r}; use a positive integer or None")
    threads = torch_threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or _cores() // n
    threads = max(1, threads)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    class _Cluster(LocalCluster):
        def new_worker_spec(self) -> dict:
            # Worker i sees GPU i only: the runs need no device bookkeeping of their own.
            spec = copy.deepcopy(super().new_worker_spec())
            if gpus:
                for name, s in spec.items():
                    s["options"]["env"]["CUDA_VISIBLE_DEVICES"] = str(int(name) % gpus)
            return spec

    # Nanny also writes its pre-spawn variables (OMP_NUM_THREADS=1 ...) into this process's
    # environment; make them ours so that neither side ends up with one thread.
    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
        cluster = _Cluster(
            n_workers=0,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: 8787 may be another cluster's
            env=env,
        )
        cluster.scale(n)  # starts the workers in the background: wait while the config holds
        try:
            cluster.wait_for_workers(n, timeout=timeout)
        except BaseException:
            cluster.close()
            raise
    return cluster


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{name}={text!r}; use a positive integer (worker processes), or unset it"
        )
    return value


@contextmanager
def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    torch_threads: int | None = None,
    timeout: float = 300,
) -> Iterator[Client]:
    """A Dask client for sweeps, closed (with any cluster it started) on leaving the block.

    `address` (default $IGKD_SCHEDULER) connects to a running scheduler; without one, a
    `local_cluster(n_workers, torch_threads)` is started. Waits up to `timeout` seconds for a
    worker.
    """
    from distributed import Client

    address = address or os.environ.get(SCHEDULER_ENV) or None
    if address:
        client = Client(address, timeout=timeout, set_as_default=False)
        client.wait_for_workers(1, timeout=timeout)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = local_cluster(n_workers, torch_threads, timeout=timeout)
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def check_workers(client: Client) -> None:
    """Warn when a worker writes to another runs dir than this process reads (IGKD_RUNS unset or
    different on the workers): its runs would not be found here, nor reused by other workers."""
    here = paths.runs_dir()
    theirs = client.run(paths.runs_dir)
    other = {w: p for w, p in theirs.items() if Path(p) != here}
    if other:
        warnings.warn(
            f"workers {sorted(other)} use the runs dir(s) {sorted({str(p) for p in other.values()})}, "
            f"not {here}; give them the same IGKD_RUNS on a shared filesystem",
            stacklevel=3,
        )
