"""The what-if simulator: the real core on a virtual clock (the same library as the
``traffic-control-sim`` command and the Node/Bun package's ``simulate``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Union

from ._traffic_control import simulate_json

__all__ = ["Simulation", "SimulationReport", "SimulatedWaits", "simulate"]


class SimulatedWaits(TypedDict):
    """How long requests of one priority (or tenant) waited before they went, in milliseconds."""

    name: str
    went: int
    at_once: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class SimulatedBalance(TypedDict):
    first: int
    lowest: int
    last: int


class SimulatedLimit(TypedDict):
    """One limit of the config as the core counted it."""

    name: str
    kind: str
    capacity: int
    peak: int
    utilisation_mean: float
    utilisation_max: float
    balance: SimulatedBalance | None


class SimulatedStream(TypedDict):
    name: str
    tenant: str | None
    arrived: int
    done: int
    failed: int


class SimulatedServerWindow(TypedDict):
    name: str
    max: int
    per_s: float
    peak: int
    refused: int
    exceeded: int


class SimulatedServerBudget(TypedDict):
    balance: int
    lowest: int
    refused: int


class SimulatedServer(TypedDict):
    """The server model's count, at arrival: ``refused`` is the 429s the run predicts."""

    name: str
    served: int
    refused: int
    windows: list[SimulatedServerWindow]
    budget: SimulatedServerBudget | None


class SimulationReport(TypedDict):
    """What one config did."""

    label: str
    simulated_s: float
    arrived: int
    went: int
    limits: list[SimulatedLimit]
    priorities: list[SimulatedWaits]
    tenants: list[SimulatedWaits]
    streams: list[SimulatedStream]
    rejections: dict[str, int]
    retries: int
    gave_up: int
    rate_limited: int
    server: SimulatedServer | None
    notes: list[str]


class _SimulationRequired(TypedDict):
    reports: list[SimulationReport]
    text: str


class Simulation(_SimulationRequired, total=False):
    """The reports (one per config), the same as text side by side, and the HTML page when asked."""

    html: str


#: A config: a preset name, a config mapping, or ``{"preset" | "config": …, "env": {…}, "label": …}``.
_SimulatedConfig = Union[str, Mapping[str, Any]]


def simulate(
    *,
    workload: str | Mapping[str, Any],
    config: _SimulatedConfig | None = None,
    configs: Sequence[_SimulatedConfig] | None = None,
    server: str | Mapping[str, Any] | None = None,
    html: bool = False,
    title: str | None = None,
) -> Simulation:
    """Runs each config against the workload (and the server model) on a virtual clock.

    ``workload``: a preset name (``backmarket``, ``keepa``, ``baselinker``), a workload mapping (``duration``, ``streams``, ``bursts``, …), or
    ``{"events": "<JSON lines>"}`` to replay a recorded event log. ``server``: a preset model, a
    model mapping (``windows``, ``budget``, ``answer``), or ``None``. A config it cannot use raises
    :class:`ConfigError` naming the field; a workload or model it cannot use, ``ValueError``.
    """
    if (config is None) == (configs is None):
        raise ValueError("give exactly one of config and configs")
    doc: dict[str, Any] = {"workload": workload, "html": html}
    if config is not None:
        doc["config"] = config
    else:
        doc["configs"] = list(configs or [])
    if server is not None:
        doc["server"] = server
    if title is not None:
        doc["title"] = title
    result: Simulation = json.loads(simulate_json(json.dumps(doc)))
    return result
