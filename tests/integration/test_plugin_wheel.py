"""The twistd plugin is found from an installed wheel, not only from the checkout.

Builds the wheel from a clean copy of the checkout (so a stale ``build/`` cannot leak in),
installs it into a fresh virtualenv with its dependencies from the package index, and runs
the installed ``twistd coven`` with no path back to the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon import ROOT, Daemon

pytestmark = pytest.mark.timeout(600)
COPY_IGNORES = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run([str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "coven"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORES, symlinks=True)
    dist = source.parent / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, source)
    [built] = dist.glob("coven-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed the way a user would install it."""
    path = tmp_path_factory.mktemp("venv") / "v"
    run(sys.executable, "-m", "venv", path)
    run(path / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    return path


def test_wheel_ships_the_plugin_and_no_twisted_package_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/coven_plugin.py" in names
    assert {"coven/__init__.py", "coven/service.py", "coven/store/schema.py", "coven/api/http.py"} <= names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [name for name in names if name.endswith("dropin.cache")]
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"coven", "twisted"}


def test_installed_twistd_lists_coven_from_the_installed_files(venv: Path) -> None:
    assert "coven" in run(venv / "bin" / "twistd", "--help", cwd=venv)
    located = run(venv / "bin" / "python", "-c",
                  "import coven, twisted.plugins.coven_plugin as p; print(coven.__file__); print(p.__file__)",
                  cwd=venv)
    assert all(Path(line).is_relative_to(venv) for line in located.split())


def test_installed_daemon_serves_health(venv: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(command=[str(venv / "bin" / "twistd")])
    health = daemon.request("GET", "/api/v1/health").json()
    assert (health["ok"], health["apiVersion"], health["daemon"]["pid"]) == (True, "coven.daemon.v1", daemon.pid)
    assert daemon.stop() in (0, -15)
    assert not daemon.socket.exists()
