"""Shared fixtures. The suite runs against the installed package (see test.sh), never python/."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from traffic_control import Config

#: The shared scenario files, replayed by the core and every binding.
SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "scenarios"


def window(max: int, per: str, **extra: Any) -> Config:
    """A config with one global exact window `api` (plus any extra top-level keys)."""
    config: Config = {"limits": {"api": {"kind": "window", "max": max, "per": per}}, "global": ["api"]}
    return cast(Config, {**config, **extra}) if extra else config


@pytest.fixture
def events() -> list[Any]:
    """A list to pass as `listener=events.append`."""
    return []
