"""The daemon's configuration: one frozen object, built once at the edge and passed down.

No other module reads the environment; everything a component needs arrives here.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_HUP_GRACE = 1.0
DEFAULT_TERM_GRACE = 5.0
DEFAULT_WRITER_BUFFER = 8 * 1024 * 1024
_DAEMON_ONLY = ("NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_")


def default_home(environ: Mapping[str, str]) -> Path:
    """``$COVEN_HOME`` when set and non-empty, else ``~/.coven`` (contract B §10)."""
    explicit = environ.get("COVEN_HOME", "")
    if explicit:
        return Path(explicit).expanduser()
    home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".coven"


def _days(raw: str) -> float:
    try:
        days = float(raw)
    except ValueError:
        days = float("nan")
    if not days > 0:
        raise ValueError(f"COVEN_LOG_RETENTION_DAYS must be a positive number of days, got {raw!r}")
    return days


@dataclass(frozen=True)
class Config:
    """Everything the daemon is told, resolved to absolute values."""

    home: Path
    socket: Path
    environ: Mapping[str, str] = field(default_factory=dict)
    retention_days: float = DEFAULT_RETENTION_DAYS
    hup_grace: float = DEFAULT_HUP_GRACE
    term_grace: float = DEFAULT_TERM_GRACE
    manhole: bool = False
    writer_buffer: int = DEFAULT_WRITER_BUFFER
    started_at: str | None = None

    @property
    def database(self) -> Path:
        return self.home / "coven.sqlite3"

    @property
    def daemon_json(self) -> Path:
        return self.home / "daemon.json"

    @property
    def lock_file(self) -> Path:
        return self.home / "daemon-serve.lock"

    @property
    def manhole_socket(self) -> Path:
        return self.home / "manhole.sock"

    @property
    def manhole_keys(self) -> Path:
        return self.home / "manhole_keys"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def adapter_manifest(self) -> str | None:
        return self.environ.get("COVEN_HARNESS_ADAPTER_MANIFEST") or None

    @property
    def adapter_dirs(self) -> tuple[str, ...]:
        raw = self.environ.get("COVEN_HARNESS_ADAPTER_DIRS", "")
        return tuple(part for part in raw.split(os.pathsep) if part)

    @property
    def child_environ(self) -> dict[str, str]:
        """The environment every session starts from (contract A9: TERM defaults).

        systemd's hand-offs to the daemon itself (notify socket, socket activation, watchdog)
        are not passed on: they are addressed to this process, not to its sessions.
        """
        env = {k: v for k, v in self.environ.items() if not k.startswith(_DAEMON_ONLY)}
        env.setdefault("TERM", "xterm-256color")
        return env

    @classmethod
    def build(
        cls,
        environ: Mapping[str, str],
        home: str | None = None,
        socket: str | None = None,
        **overrides: object,
    ) -> Config:
        """Resolve home and socket the way the reference daemon does.

        The home's parents are canonicalized (contract B §10) but not the home itself, so a
        home that is a symlink is still seen, and refused, at start.
        """
        home_path = Path(os.path.abspath(Path(home).expanduser() if home else default_home(environ)))
        home_path = Path(os.path.realpath(home_path.parent)) / home_path.name
        raw_retention = environ.get("COVEN_LOG_RETENTION_DAYS")
        if "retention_days" not in overrides and raw_retention:
            overrides["retention_days"] = _days(raw_retention)
        socket_path = Path(os.path.abspath(Path(socket).expanduser())) if socket else None
        return cls(
            home=home_path,
            socket=socket_path or home_path / "coven.sock",
            environ=dict(environ),
            **overrides,  # type: ignore[arg-type]
        )
