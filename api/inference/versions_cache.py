"""Published versions other than the served one, loaded on demand for requests that name
them (the Open Inference Protocol's ``/v2/models/cxr/versions/{version}/infer``): a
candidate the promotion decision kept back, or an older version pinned by a client.

A few are kept, least recently used first out, so that a client comparing versions does
not pay a load (seconds) per request; the served version is never copied here.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import OrderedDict

from starlette.concurrency import run_in_threadpool

from api.inference.serving import ModelServer
from shared.allocator import release_freed_memory
from shared.errors import ServiceBusy
from shared.ml.served import ServedVersion

# Each loaded VGG16 version holds its weights and runtime sessions (~100 MB at 224 px):
# a candidate and a pinned older version at once, no more.
CACHED_VERSIONS = 2
# Requests that may wait for a version to load; more get 503 busy at once.
MAX_WAITING = 32


class VersionCache:
    def __init__(self, server: ModelServer, capacity: int = CACHED_VERSIONS,
                 max_waiting: int = MAX_WAITING) -> None:
        self.server = server
        self.capacity = capacity
        self._loaded: OrderedDict[str, ServedVersion] = OrderedDict()
        self._lock = threading.Lock()  # guards _loaded
        # One load at a time: two at once only fight for cores and memory, and two requests
        # naming the same version must not load it twice. Requests wait for it on the event
        # loop, never in a worker thread, and only so many: the rest get 503 busy.
        self._loading: asyncio.Lock | None = None
        self._waiting = 0
        self.max_waiting = max_waiting

    def loaded(self, version: str) -> ServedVersion | None:
        """The version if it is served or cached, without loading it."""
        current = self.server.current
        if current is not None and current.version == version:
            with self._lock:  # it was activated since it was cached: one copy is enough
                self._loaded.pop(version, None)
            return current
        with self._lock:
            found = self._loaded.get(version)
            if found is not None:
                self._loaded.move_to_end(version)
            return found

    async def get(self, version: str) -> ServedVersion:
        """The version, loaded in the threadpool with the server's loader if need be
        (ModelNotFound for one that is not published, ModelLoadFailed for a broken one)."""
        found = self.loaded(version)
        if found is not None:
            return found
        if self._waiting >= self.max_waiting:
            raise ServiceBusy(f"{self._waiting} requests are waiting for versions to load; "
                              "retry in a few seconds")
        if self._loading is None:
            self._loading = asyncio.Lock()
        self._waiting += 1
        try:
            async with self._loading:
                found = self.loaded(version)  # a request that waited may find it loaded
                if found is not None:
                    return found
                return await run_in_threadpool(self._load, version)
        finally:
            self._waiting -= 1

    def _load(self, version: str) -> ServedVersion:
        self.server.registry.manifest(version)  # ModelNotFound, before any work
        loaded = self.server.loader(self.server.registry, version)
        with self._lock:
            self._loaded[version] = loaded
            evicted = len(self._loaded) > self.capacity
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        if evicted:  # requests still holding it keep it alive; the rest goes back
            gc.collect()  # Keras models hold reference cycles
            release_freed_memory()
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
