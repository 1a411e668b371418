"""Shared fixtures. The suite runs against the installed package (see test.sh), never python/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: The shared scenario files, replayed by the core and every binding.
SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "scenarios"


def window(max: int, per: str, **extra: Any) -> dict[str, Any]:
    """A config with one global exact window `api` (plus any extra top-level keys)."""
    return {"limits": {"api": {"kind": "window", "max": max, "per": per}}, "global": ["api"], **extra}


@pytest.fixture
def events() -> list[Any]:
    """A list to pass as `listener=events.append`."""
    return []
