"""What every workload gets: the limit tools, the run's sizes, and a progress log."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tests.bench.native import Tools


@dataclass
class Context:
    tools: Tools
    repeat: int
    quick: bool
    flood_bytes: int
    connection_modes: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full
