"""The limit tools: ``limits.c`` compiled with cc for this run, or ``pylimits.py`` without one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "limits.c"
PYTHON_TOOL = [sys.executable, str(HERE / "pylimits.py")]


class Tools:
    """``run(mode, *args)`` runs a limit tool and returns its JSON line."""

    def __init__(self, force_python: bool = False) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="coven-bench-"))
        self.compiler = None if force_python else (shutil.which("cc") or shutil.which("gcc"))
        self.native: list[str] | None = None
        self.error = ""
        if self.compiler:
            binary = self._dir / "limits"
            build = subprocess.run(
                [self.compiler, "-O2", "-o", str(binary), str(SOURCE), "-lutil", "-pthread"],
                capture_output=True, text=True,
            )
            if build.returncode == 0:
                self.native = [str(binary)]
            else:
                self.error = build.stderr.strip()[-500:]
        self.tool = self.native or PYTHON_TOOL
        self.python = PYTHON_TOOL

    @property
    def kind(self) -> str:
        return "C (cc -O2)" if self.native else "plain Python (no C compiler)"

    @property
    def dir(self) -> Path:
        return self._dir

    def command(self, mode: str, *args: Any, python: bool = False) -> list[str]:
        return [*(self.python if python else self.tool), mode, *map(str, args)]

    def run(self, mode: str, *args: Any, python: bool = False, timeout: float = 600) -> dict[str, Any]:
        done = subprocess.run(self.command(mode, *args, python=python), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"limit tool {mode} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)

    def gen_command(self, total: int) -> str:
        """A shell command line that writes ``total`` bytes (rounded up to whole blocks) of text."""
        return " ".join(self.command("gen", total))

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
