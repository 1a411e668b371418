"""The controller's metrics for prometheus_client (``pip install prometheus-client``).

::

    from prometheus_client import REGISTRY, make_asgi_app
    from traffic_control.prometheus import TrafficControlCollector

    REGISTRY.register(TrafficControlCollector(tc))
    app.mount("/metrics", make_asgi_app())

Every family, name and help text comes from the core (``tc.metrics()["families"]``), the same as
``tc.metrics_text()`` writes and as the Node package hands to prom-client. Each scrape reads the
controller once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class _HasMetrics(Protocol):
    def metrics(self) -> dict[str, Any]: ...


class TrafficControlCollector:
    """A prometheus_client collector reading ``tc.metrics()`` at each scrape."""

    def __init__(self, tc: _HasMetrics) -> None:
        self._tc = tc

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        for f in self._tc.metrics()["families"]:
            name: str = f["name"]
            # prometheus_client names a counter's family without `_total` and writes it back on
            # the samples it exposes.
            if f["type"] == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            m = Metric(name, f["help"], f["type"])
            for s in f["samples"]:
                m.add_sample(s["name"], dict(s["labels"]), float(s["value"]))
            yield m

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families are read at each scrape (routes and limits come from the
        config, so the registry needs no fixed list)."""
        return iter(())
