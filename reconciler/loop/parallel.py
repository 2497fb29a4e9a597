"""Registry work of different pools at once, over a bounded number of connections.

Stage: inside a pass, between deciding and committing. Input: the pools to build, and
a function doing one pool's registry work (existence check, blob uploads, manifest
push) with a given client. Output: the function's results, in the order of the pools.

`RegistryClient` is not thread-safe (its token cache and counters), so each worker
thread gets a client of its own, made once with the same settings (`clone`) and kept
across passes: connections, Bearer tokens (per scope set, as before) and retries stay
per client, and a pool's work, with its retries and its errors, runs on one client in
one thread from start to end. The pool's result (or its error, reported per pool by the
function itself) is unchanged by running in parallel; only the order in which the
registry sees requests of different pools is.

With one pool to build, or `connections` 1, everything runs inline on the loop's own
client, exactly as it did before this module existed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from reconciler.adapters.registry import RegistryClient

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONNECTIONS = 6
"""Pools whose registry work runs at once, one connection each: what containers/image
(skopeo, podman) uses for layers in parallel by default, a load registries are made for."""


class RegistryWorkers:
    """Up to `connections` threads, each with its own clone of `registry`."""

    def __init__(self, registry: RegistryClient, connections: int = DEFAULT_CONNECTIONS) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.registry = registry
        self.connections = connections
        self._free: list[RegistryClient] = []
        self._all: list[RegistryClient] = []
        self._lock = threading.Lock()

    def map(self, fn: Callable[[RegistryClient, T], R], items: Sequence[T]) -> list[R]:
        """`[fn(client, item) for item in items]`, up to `connections` at a time."""
        if len(items) <= 1 or self.connections == 1:
            return [fn(self.registry, item) for item in items]

        def one(item: T) -> R:
            client = self._take()
            try:
                return fn(client, item)
            finally:
                self._give(client)

        with ThreadPoolExecutor(min(self.connections, len(items))) as pool:
            try:
                return list(pool.map(one, items))
            finally:
                self._fold_counters()

    def close(self) -> None:
        for client in self._all:
            client.close()
        self._all.clear()
        self._free.clear()

    def _take(self) -> RegistryClient:
        with self._lock:
            if self._free:
                return self._free.pop()
            client = self.registry.clone()
            self._all.append(client)
            return client

    def _give(self, client: RegistryClient) -> None:
        with self._lock:
            self._free.append(client)

    def _fold_counters(self) -> None:
        """The loop's client counts every request and upload of the pass, as before."""
        with self._lock:
            for client in self._all:
                self.registry.requests += client.requests
                self.registry.bytes_uploaded += client.bytes_uploaded
                client.requests = client.bytes_uploaded = 0
