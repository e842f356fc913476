"""twistd options and ``makeService``: builds the service tree and does nothing else.

Children start in this order and stop in reverse: home (private dir, lock, stale socket),
store (database, recovery, writer), sessions (supervisor), api (the socket), manhole (only
with ``--manhole``), ready (daemon.json, sd_notify READY=1).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from coven.api.listen import UnixListenService
from coven.api.root import ApiContext, build_site
from coven.config import DEFAULT_HUP_GRACE, DEFAULT_TERM_GRACE, DEFAULT_WRITER_BUFFER, Config
from coven.home import HomeService
from coven.multiservice import AsyncMultiService
from coven.ready import ReadyService
from coven.sessions.supervisor import Supervisor, SupervisorService
from coven.store.service import StoreService
from coven.store import schema
from coven.store.store import Store
from coven.store.writer import Writer
from coven.wire import timestamp


class Options(usage.Options):
    optParameters = [
        ["home", None, None, "Coven home directory [default: $COVEN_HOME or ~/.coven]"],
        ["socket", None, None, "API socket path [default: <home>/coven.sock]"],
        ["retention-days", None, None, "Delete events older than this many days [default: 30]", float],
        ["hup-grace", None, DEFAULT_HUP_GRACE, "Seconds between SIGHUP and SIGTERM on kill", float],
        ["term-grace", None, DEFAULT_TERM_GRACE, "Seconds between SIGTERM and SIGKILL on kill", float],
        ["started-at", None, None, "startedAt to report in health (set by a managing launcher)"],
        ["writer-buffer", None, DEFAULT_WRITER_BUFFER,
         "Bytes of events queued for the database before sessions stop being read", int],
    ]
    optFlags = [["manhole", None, "Serve a manhole on <home>/manhole.sock (SSH keys in <home>/manhole_keys)"]]


def config_from_options(options: Options, environ: dict[str, str]) -> Config:
    overrides: dict[str, Any] = {
        "hup_grace": options["hup-grace"],
        "term_grace": options["term-grace"],
        "writer_buffer": options["writer-buffer"],
        "manhole": bool(options["manhole"]),
        "started_at": options["started-at"],
    }
    if options["retention-days"] is not None:
        overrides["retention_days"] = options["retention-days"]
    return Config.build(environ, home=options["home"], socket=options["socket"], **overrides)


def makeService(options: Options, reactor: Any = None) -> AsyncMultiService:
    if reactor is None:
        from twisted.internet import reactor  # the outermost edge
    config = config_from_options(options, dict(os.environ))
    started_at = config.started_at or timestamp()
    identity = {"pid": os.getpid(), "startedAt": started_at, "socket": str(config.socket)}

    writer = Writer(reactor, lambda: schema.connect(config.database), config.writer_buffer, config.writer_buffer // 4)
    store = Store(reactor, config.database, writer)
    supervisor = Supervisor(reactor, config, store)
    site = build_site(ApiContext(config, store, supervisor, started_at, reactor), reactor=reactor)

    parent = AsyncMultiService()
    HomeService(config).setServiceParent(parent)
    StoreService(store, reactor, started_at, config.retention_days).setServiceParent(parent)
    SupervisorService(supervisor).setServiceParent(parent)
    UnixListenService(reactor, config.socket, site).setServiceParent(parent)
    if config.manhole:
        from coven.manhole import ManholeService, manhole_namespace  # conch loads only when asked for

        ManholeService(config, reactor, manhole_namespace(config, store, supervisor)).setServiceParent(parent)
    ReadyService(config, identity).setServiceParent(parent)
    return parent
