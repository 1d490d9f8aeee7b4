"""The served model and its hot reload.

A background thread polls the registry's active pointer; on a change it loads, verifies and
warms up the new version, then swaps one reference. Requests take that reference once, so a
request in flight finishes on the version it started with, and a failed load leaves the
previous version serving.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable

from shared.allocator import release_freed_memory
from shared.errors import CxrError, NoActiveModel, RegistryUnavailable
from shared.loading import load_version
from shared.ml.served import ServedVersion
from shared.registry import ActivePointer, Registry

log = logging.getLogger(__name__)

# How long a replaced version's last requests may hold it before the reloader stops waiting
# to hand its memory back (and says so).
RETIRED_WAIT_S = 60.0


class ModelServer:
    def __init__(self, registry: Registry, poll_interval_s: float,
                 loader: Callable[[Registry, str], ServedVersion] = load_version,
                 on_load: Callable[[ServedVersion, float], None] | None = None) -> None:
        self.registry = registry
        self.loader = loader
        self.on_load = on_load  # told of each version swapped in and its load time (metrics)
        self.poll_interval_s = poll_interval_s
        self.current: ServedVersion | None = None
        self.load_error: str | None = None
        self._seen: ActivePointer | None = None
        # The version a swap replaced, until its last request is done with it.
        self._retired: weakref.ref[ServedVersion] | None = None
        self._retired_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def wake(self) -> None:
        """Check the active pointer now instead of at the next poll."""
        self._wake.set()

    def model(self) -> ServedVersion:
        current = self.current
        if current is None:
            raise NoActiveModel(
                self.load_error
                or "no model is active yet: upload a dataset (POST /datasets) and train one "
                "(POST /retrain), or run `cxr train --data DIR`"
            )
        return current

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
                self.release_retired()
            except RegistryUnavailable as exc:  # an outage of the store: say so, once a poll
                log.warning("cannot check the active model: %s", exc.message)
            except Exception:  # the reloader must outlive any one bad poll
                log.exception("checking the active model failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def check(self) -> None:
        """Load the active version if it changed since the last check."""
        pointer = self.registry.active()
        if pointer is None or pointer == self._seen:
            return
        self._seen = pointer
        if self.current is not None and self.current.version == pointer.version:
            self.load_error = None
            return
        log.info("loading model version %s", pointer.version)
        started = time.monotonic()
        try:
            loaded = self.loader(self.registry, pointer.version)
        except CxrError as exc:
            self.load_error = exc.message
            log.error("not serving %s: %s", pointer.version, exc.message)
            return
        seconds = time.monotonic() - started
        if self.on_load is not None:  # before the swap: whoever sees it served sees it counted
            self.on_load(loaded, seconds)
        keep = {loaded.version}
        if self.current is not None:
            self._retired, self._retired_at = weakref.ref(self.current), time.monotonic()
            keep.add(self.current.version)
        self.current, self.load_error = loaded, None
        self.registry.forget_local(keep)  # an object store's cached copies of older versions
        log.info("now serving model version %s (%s) after loading for %.1f s",
                 loaded.version, loaded.runtime, seconds)
        gc.collect()  # what loading left behind, else the heap keeps every version's peak
        release_freed_memory()

    def release_retired(self) -> None:
        """Hand the replaced version's memory back once its last request is done with it.

        A trim right after a swap under load frees none of it: requests in flight still hold it.
        """
        if self._retired is None:
            return
        gc.collect()  # Keras models hold reference cycles
        if self._retired() is None:
            self._retired = None
            release_freed_memory()
        elif time.monotonic() - self._retired_at > RETIRED_WAIT_S:
            log.warning("a replaced model version is still referenced %.0f s after the swap; "
                        "its memory stays in use", RETIRED_WAIT_S)
            self._retired = None
