"""The controller's metrics for prometheus_client (``pip install prometheus-client``).

::

    from prometheus_client import REGISTRY, make_asgi_app
    from traffic_control.prometheus import TrafficControlCollector

    REGISTRY.register(TrafficControlCollector(tc))
    app.mount("/metrics", make_asgi_app())

Every family, name and help text comes from the core (``tc.metrics()["families"]``), the same as
``tc.metrics_text()`` writes and as the Node package hands to prom-client. Each scrape reads the
controller once.

Several processes (gunicorn or uvicorn workers, each with its own controller) are served by any one
of them, as prometheus_client's multiprocess mode does for its own metrics, whose custom collectors
it cannot carry::

    # in each worker
    from traffic_control.prometheus import MultiProcessPublisher
    MultiProcessPublisher(tc).start()       # writes this process's families every 5 s and at exit

    # where /metrics is served
    from traffic_control.prometheus import TrafficControlMultiProcessCollector
    registry = CollectorRegistry()
    TrafficControlMultiProcessCollector(registry)

Both default to ``PROMETHEUS_MULTIPROC_DIR``. Counters and histograms are summed over every process
that published, dead or alive, so totals never go backwards when a worker is replaced; gauges
(utilisation, queue depth, balance) are per process, with a ``pid`` label, for live processes only.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Protocol, Tuple

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["MultiProcessPublisher", "TrafficControlCollector", "TrafficControlMultiProcessCollector"]

#: The files this module writes in the directory: ``traffic_control_<pid>_<n>.json``.
_PREFIX = "traffic_control_"


class _HasMetrics(Protocol):
    def metrics(self) -> dict[str, Any]: ...


class TrafficControlCollector:
    """A prometheus_client collector reading ``tc.metrics()`` at each scrape."""

    def __init__(self, tc: _HasMetrics) -> None:
        self._tc = tc

    def collect(self) -> Iterator[Metric]:
        for f in self._tc.metrics()["families"]:
            yield _metric(f["name"], f["help"], f["type"], ((s["name"], dict(s["labels"]), float(s["value"])) for s in f["samples"]))

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families are read at each scrape (routes and limits come from the
        config, so the registry needs no fixed list)."""
        return iter(())


def _metric(name: str, help_: str, type_: str, samples: Any) -> Metric:
    from prometheus_client.metrics_core import Metric

    # prometheus_client names a counter's family without `_total` and writes it back on the
    # samples it exposes.
    if type_ == "counter" and name.endswith("_total"):
        name = name[: -len("_total")]
    m = Metric(name, help_, type_)
    for sample_name, labels, value in samples:
        m.add_sample(sample_name, labels, value)
    return m


def _directory(path: Optional[str]) -> str:
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if not path:
        raise ValueError("no directory: pass path= or set PROMETHEUS_MULTIPROC_DIR")
    if not os.path.isdir(path):
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a directory")
    return path


_counter = 0
_counter_lock = threading.Lock()


class MultiProcessPublisher:
    """Writes a controller's families for :class:`TrafficControlMultiProcessCollector` every
    ``interval`` seconds (a daemon thread) and when the process exits. Each write replaces the
    process's file atomically (a temporary file, then ``os.replace``): a reader never sees half
    of one. ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR``."""

    def __init__(self, tc: _HasMetrics, path: Optional[str] = None, *, interval: float = 5.0) -> None:
        global _counter
        if not interval > 0:
            raise ValueError(f"interval: must be above 0 seconds, not {interval!r}")
        self._tc = tc
        self._dir = _directory(path)
        self._interval = interval
        with _counter_lock:
            _counter += 1
            n = _counter
        self.path = os.path.join(self._dir, f"{_PREFIX}{os.getpid()}_{n}.json")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def write(self) -> None:
        """Writes the controller's families now."""
        data = {"pid": os.getpid(), "families": self._tc.metrics()["families"]}
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, self.path)

    def start(self) -> MultiProcessPublisher:
        """Writes now, then every ``interval`` seconds and at exit; returns itself."""
        self.write()
        self._thread = threading.Thread(target=self._run, name="traffic-control-metrics", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.write()
            except Exception:  # a full disk: the next tick tries again
                pass

    def close(self) -> None:
        """Stops the thread after a last write (the counters a dead process leaves are still
        summed)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.write()
        except Exception:
            pass
        atexit.unregister(self.close)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class TrafficControlMultiProcessCollector:
    """Serves the families every process published in ``path`` (default
    ``PROMETHEUS_MULTIPROC_DIR``) with :class:`MultiProcessPublisher`: counters and histograms
    summed over all of them, gauges of live processes with a ``pid`` label. Registers itself
    when given a registry."""

    def __init__(self, registry: Optional[CollectorRegistry] = None, path: Optional[str] = None) -> None:
        self._dir = _directory(path)
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        families: Dict[str, Tuple[str, str, Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]]] = {}
        order: List[str] = []
        for entry in sorted(os.listdir(self._dir)):
            if not (entry.startswith(_PREFIX) and entry.endswith(".json")):
                continue
            try:
                with open(os.path.join(self._dir, entry), encoding="utf-8") as f:
                    data = json.load(f)
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not ours
            live = _alive(pid)
            for fam in data["families"]:
                name, type_ = fam["name"], fam["type"]
                if type_ == "gauge" and not live:
                    continue
                if name not in families:
                    families[name] = (fam["help"], type_, {})
                    order.append(name)
                samples = families[name][2]
                for s in fam["samples"]:
                    labels = dict(s["labels"])
                    if type_ == "gauge":
                        labels["pid"] = str(pid)
                    key = (s["name"], tuple(sorted(labels.items())))
                    samples[key] = samples.get(key, 0.0) + float(s["value"])
        for name in order:
            help_, type_, samples = families[name]
            yield _metric(name, help_, type_, ((n, dict(labels), v) for (n, labels), v in samples.items()))

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families are read at each scrape."""
        return iter(())
