"""Dask from one place: ``--scheduler ADDRESS`` (a running scheduler) or ``--scheduler local:N`` (a local cluster
of N single-threaded worker processes), an ordered ``map`` over it, and one clear line when it cannot be reached.

Workers read inputs from the paths they are given: with a remote scheduler, every worker must see the same files
at the same paths (a shared filesystem); a local cluster always does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from knotwork._errors import InputError, RunError

CONNECT_TIMEOUT_S = 5.0


@contextmanager
def dask_client(scheduler: str, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``scheduler``; a local cluster it starts is closed on exit.

    Raises
    ------
    InputError
        For a malformed ``local:N`` or when dask.distributed is not installed.
    RunError
        When no scheduler answers at the address within ``timeout`` seconds.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    if scheduler.startswith("local:"):
        count = scheduler.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--scheduler {scheduler}: expected local:N with N >= 1 workers")
        with LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise RunError(f"--scheduler {scheduler}: no Dask scheduler answered within {timeout:g} s "
                       f"({type(err).__name__}); start one or use local:N") from None
    try:
        yield client
    finally:
        client.close()


def ordered_map(client: Any) -> Callable[[Callable, Iterable], Iterator]:
    """``map(fn, items)`` over the client's workers, yielding results in the order of ``items``."""

    def map_fn(fn: Callable, items: Iterable) -> Iterator:
        futures = client.map(fn, list(items), pure=False)
        for future in futures:
            yield future.result()
            future.release()

    return map_fn
