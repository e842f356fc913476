"""The ``twistd coven`` subcommand. Imports nothing of Coven until it is used."""

from twisted.application.service import ServiceMaker

coven = ServiceMaker(
    "coven",
    "coven.service",
    "Run interactive programs in pseudo-terminals and serve their output over a Unix socket.",
    "coven",
)
