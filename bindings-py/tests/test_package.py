"""The package as users install it: the wheel's files, not the source tree."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import traffic_control
from traffic_control import _traffic_control


def test_imported_from_the_installed_wheel_not_the_source_tree() -> None:
    source = Path(__file__).resolve().parents[1] / "python"
    installed = Path(traffic_control.__file__).resolve()
    assert source not in installed.parents, f"tests must run against the installed wheel, not {installed}"
    assert "site-packages" in installed.parts


def test_types_ship_with_the_package() -> None:
    files = importlib.resources.files("traffic_control")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_traffic_control.pyi").is_file()


def test_the_native_module_is_an_abi3_extension() -> None:
    assert Path(_traffic_control.__file__).name.endswith(".abi3.so")


def test_public_names() -> None:
    for name in traffic_control.__all__:
        assert getattr(traffic_control, name) is not None, name
    assert traffic_control.PRESETS == {
        "backmarket": "BM_RATE_LIMIT",
        "keepa": "KEEPA_RATE_LIMIT",
        "baselinker": "BASELINKER_RATE_LIMIT",
    }
