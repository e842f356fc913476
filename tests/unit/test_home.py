"""COVEN_HOME: private directory, one daemon per home, and the socket path (contract B §10-11)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coven.config import Config, default_home
from coven.home import HomeRefused, HomeService, acquire_lock, clear_stale_socket, ensure_private_home

OTHER_UID = 65534


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must fit in 108 bytes; pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="cvh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_home_is_created_private(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b" / "home"
    ensure_private_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_home_mode_is_forced_on_every_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    ensure_private_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_symlinked_home_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(HomeRefused, match="it is a symlink"):
        ensure_private_home(tmp_path / "link")


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HomeRefused, match="cannot create COVEN_HOME"):
        ensure_private_home(tmp_path / "file")


def test_home_that_cannot_be_created_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HomeRefused, match=r"cannot create COVEN_HOME .*/file/home: Not a directory"):
        ensure_private_home(tmp_path / "file" / "home")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory away")
def test_home_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, OTHER_UID, -1)
    with pytest.raises(HomeRefused, match=f"owned by uid {OTHER_UID}"):
        ensure_private_home(home)


def test_second_lock_on_a_home_is_refused_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "daemon-serve.lock"
    fd = acquire_lock(lock)
    with pytest.raises(HomeRefused, match="another Coven daemon is already serving this home"):
        acquire_lock(lock)
    os.close(fd)
    os.close(acquire_lock(lock))
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


# the socket path


def test_no_socket_is_fine(short_dir: Path) -> None:
    clear_stale_socket(short_dir / "coven.sock")


def test_a_dead_socket_is_removed(short_dir: Path) -> None:
    path = short_dir / "coven.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    clear_stale_socket(path)
    assert not path.exists()


def test_a_regular_file_is_refused_and_kept(short_dir: Path) -> None:
    path = short_dir / "coven.sock"
    path.write_text("precious")
    with pytest.raises(HomeRefused, match="a non-socket file is in the way"):
        clear_stale_socket(path)
    assert path.read_text() == "precious"


@pytest.mark.parametrize("target", ["elsewhere.sock", "missing"])
def test_a_symlink_is_refused_and_kept(short_dir: Path, target: str) -> None:
    path = short_dir / "coven.sock"
    path.symlink_to(short_dir / target)
    with pytest.raises(HomeRefused, match="it is a symlink"):
        clear_stale_socket(path)
    assert path.is_symlink()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a socket away")
def test_another_users_socket_is_refused(short_dir: Path) -> None:
    path = short_dir / "coven.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    os.lchown(path, OTHER_UID, -1)
    with pytest.raises(HomeRefused, match=f"owned by uid {OTHER_UID}"):
        clear_stale_socket(path)


@pytest.fixture
def answering(short_dir: Path) -> Iterator[Path]:
    """A socket whose server answers one request with 200, like a healthy daemon."""
    path = short_dir / "coven.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    thread.join(5)
    server.close()


def test_a_socket_a_daemon_answers_on_is_refused_and_kept(answering: Path) -> None:
    with pytest.raises(HomeRefused, match="a healthy Coven daemon is already serving"):
        clear_stale_socket(answering)
    assert stat.S_ISSOCK(answering.lstat().st_mode)


# the service


def test_the_service_claims_once_and_releases_at_stop(tmp_path: Path) -> None:
    config = Config.build({}, home=str(tmp_path / "home"))
    service = HomeService(config)
    service.privilegedStartService()
    service.startService()  # twistd calls both; the claim happens once
    with pytest.raises(HomeRefused):
        HomeService(config).privilegedStartService()
    service.stopService()
    other = HomeService(config)
    other.startService()  # ``twist`` calls only startService: the home is still claimed
    with pytest.raises(HomeRefused):
        acquire_lock(config.lock_file)
    other.stopService()


# configuration


def test_home_comes_from_coven_home_then_home(tmp_path: Path) -> None:
    assert default_home({"COVEN_HOME": "/srv/coven", "HOME": "/h"}) == Path("/srv/coven")
    assert default_home({"COVEN_HOME": "", "HOME": "/h"}) == Path("/h/.coven")
    config = Config.build({"HOME": str(tmp_path)})
    assert (config.home, config.socket) == (tmp_path / ".coven", tmp_path / ".coven" / "coven.sock")
    assert Config.build({}, home=str(tmp_path / "x"), socket=str(tmp_path / "s.sock")).socket == tmp_path / "s.sock"


def test_home_parents_are_canonical_but_the_home_itself_is_not(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    config = Config.build({}, home=str(tmp_path / "alias" / "home"))
    assert config.home == tmp_path.resolve() / "real" / "home"
    (tmp_path / "real" / "home-link").symlink_to(tmp_path / "real")
    linked = Config.build({}, home=str(tmp_path / "real" / "home-link"))
    assert linked.home.is_symlink()
    with pytest.raises(HomeRefused):
        ensure_private_home(linked.home)


def test_retention_from_the_environment(tmp_path: Path) -> None:
    assert Config.build({"COVEN_LOG_RETENTION_DAYS": "7.5"}, home=str(tmp_path)).retention_days == 7.5
    assert Config.build({}, home=str(tmp_path)).retention_days == 30
    assert Config.build({"COVEN_LOG_RETENTION_DAYS": "7"}, home=str(tmp_path), retention_days=2).retention_days == 2
    for bad in ["soon", "0", "-1", "nan"]:
        with pytest.raises(ValueError, match="COVEN_LOG_RETENTION_DAYS must be a positive number of days"):
            Config.build({"COVEN_LOG_RETENTION_DAYS": bad}, home=str(tmp_path))
