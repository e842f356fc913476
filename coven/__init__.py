"""Coven: interactive programs in pseudo-terminals, served as numbered event logs."""

__version__ = "0.1.0"
