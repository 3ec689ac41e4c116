"""Dask from one place: ``--scheduler ADDRESS`` (a running scheduler) or ``--scheduler local:N`` (a local cluster
of N single-threaded worker processes), an ordered ``map`` over it, and one clear line when it cannot be reached.

Workers read inputs from the paths they are given: with a remote scheduler, every worker must see the same files
at the same paths (a shared filesystem); a local cluster always does.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from knotwork._errors import InputError, check_positive_int

CONNECT_TIMEOUT_S = 5.0


def _endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://host:port``/``tls://host:port``/``host:port`` address, else None."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        return None
    return parts.hostname, port


@contextmanager
def dask_client(scheduler: str | None, *, timeout: float = CONNECT_TIMEOUT_S,
                error: type[InputError] = InputError) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``scheduler``; a local cluster it starts is closed on exit.

    Yields None when ``scheduler`` is None. A scheduler that cannot be reached is refused within ``timeout``
    seconds: a refused connection at once (a plain socket probe), an unanswered one after the timeout.

    Raises
    ------
    error (default InputError)
        When dask.distributed is missing, ``local:N`` has no positive N, or the scheduler cannot be reached;
        one line naming the address.
    """
    if scheduler is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise error(f"--scheduler {scheduler}: needs dask.distributed (pip install 'dask[distributed]')") from None
    if scheduler.startswith("local:"):
        n = scheduler.removeprefix("local:")
        check_positive_int(int(n) if n.isdigit() else n, f"--scheduler {scheduler}: the worker count N of local:N",
                           error=error)
        with LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            yield client
        return
    endpoint = _endpoint(scheduler)
    try:
        if endpoint is not None:  # a plain socket says "refused" at once, where Client retries until its timeout
            socket.create_connection(endpoint, timeout=timeout).close()
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
        raise error(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({reason}); "
                    "start it, or use local:N for N local workers") from None
    with client:
        yield client


def ordered_map(client: Any) -> Callable[[Callable, Iterable], Iterator]:
    """``map(fn, items)`` over the client's workers, yielding results in the order of ``items``."""

    def map_fn(fn: Callable, items: Iterable) -> Iterator:
        futures = client.map(fn, list(items), pure=False)
        for future in futures:
            yield future.result()
            future.release()

    return map_fn
