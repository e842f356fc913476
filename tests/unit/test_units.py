"""The systemd units and the package agree with the daemon: notify, kill ladder, paths, ptys."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from coven.config import DEFAULT_HUP_GRACE, DEFAULT_TERM_GRACE
from coven.ready import STOP_MARGIN

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "packaging" / "systemd").glob("*.service"))


def service_section(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser["Service"]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_there_is_a_user_unit_and_a_system_template() -> None:
    assert [unit.name for unit in UNITS] == ["coven.service", "coven@.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_unit_runs_twistd_in_the_foreground_from_the_package_venv(unit: Path) -> None:
    service = service_section(unit)
    assert service["Type"] == "notify"
    assert service["ExecStart"].startswith("/opt/coven/bin/twistd --nodaemon --pidfile= ")
    assert " coven" in service["ExecStart"]
    assert service["UMask"] == "0077"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_stop_timeout_covers_the_kill_ladder_and_the_flush(unit: Path) -> None:
    assert seconds(service_section(unit)["TimeoutStopSec"]) > DEFAULT_HUP_GRACE + DEFAULT_TERM_GRACE + STOP_MARGIN


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_hardening_leaves_ptys_and_homes_alone(unit: Path) -> None:
    service = service_section(unit)
    assert service.get("PrivateDevices", "no") == "no"
    assert service.get("ProtectHome", "no") == "no"
    assert service.get("ProtectSystem", "no") in ("no", "yes", "full")  # never strict: projects live anywhere
    assert "DevicePolicy" not in service


def test_package_builds_the_venv_where_the_units_look() -> None:
    build = (ROOT / "packaging" / "debian" / "build-deb").read_text()
    wrapper = (ROOT / "packaging" / "debian" / "coven-daemon").read_text()
    assert "PREFIX=/opt/coven\n" in build
    assert "exec /opt/coven/bin/twistd --nodaemon --pidfile= coven" in wrapper
