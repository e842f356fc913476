"""``python -m tests.bench``: run the workloads, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

from tests.bench import echo, launch, memory, pages, throughput
from tests.bench.context import Context
from tests.bench.native import Tools
from tests.bench.report import Metric, machine, table, write_json

BUSY_LOAD = 0.5

WORKLOADS = {
    "throughput": throughput.run,
    "launch": launch.run,
    "memory": memory.run,
    "pages": pages.run,
    "echo": echo.run,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Coven benchmarks: each workload through the daemon's real API, beside its physical limit.",
    )
    parser.add_argument("--repeat", type=int, default=None, help="repeats per workload (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat: a smoke run under a minute")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--flood-mb", type=float, default=None, help="pty flood size in MB (default 200, --quick 32)")
    parser.add_argument("--connection", choices=("close", "keepalive", "both"), default=None,
                        help="event-page clients: one connection per request, keep-alive, or both "
                             "(default both, --quick close)")
    parser.add_argument("--python-limits", action="store_true",
                        help="measure the limits with the plain-Python tools even if cc is available")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.flood_mb is None:
        args.flood_mb = 32 if args.quick else 200
    if args.connection is None:
        args.connection = "close" if args.quick else "both"
    names = list(WORKLOADS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    tools = Tools(force_python=args.python_limits)
    modes = ("close", "keepalive") if args.connection == "both" else (args.connection,)
    ctx = Context(tools=tools, repeat=args.repeat, quick=args.quick,
                  flood_bytes=int(args.flood_mb * 1e6), connection_modes=modes)
    if not tools.native:
        why = (" (--python-limits)" if args.python_limits
               else f" (cc failed: {tools.error})" if tools.error else " (no cc on PATH)")
        ctx.notes.append("limits measured with plain-Python tools" + why + "; the C limits would be faster")
    config: dict[str, Any] = {
        "repeat": args.repeat, "quick": args.quick, "workloads": args.names, "floodBytes": ctx.flood_bytes,
        "pageConnections": list(modes), "limitTools": tools.kind,
    }
    load_before = os.getloadavg()
    ctx.log(f"coven bench: {', '.join(args.names)}; repeat {args.repeat}; limits: {tools.kind}; "
            f"load average {load_before[0]:.2f}")
    if load_before[0] >= BUSY_LOAD:
        ctx.notes.append(f"the machine was already busy when the run started (1-minute load average "
                         f"{load_before[0]:.2f} on {os.cpu_count()} CPUs): other work competes with both the daemon "
                         "and its limits, so numbers are noisier and ratios less trustworthy than on an idle machine")
    metrics: list[Metric] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        for name in args.names:
            t0 = time.monotonic()
            try:
                metrics += WORKLOADS[name](ctx)
            except Exception as e:  # one broken workload must not hide the others' numbers
                traceback.print_exc()
                failed.append(name)
                ctx.notes.append(f"{name}: FAILED: {type(e).__name__}: {e}")
            ctx.log(f"{name} took {time.monotonic() - t0:.1f} s")
    finally:
        tools.close()
    config["seconds"] = round(time.monotonic() - started, 1)
    config["loadAverageBefore"] = load_before[0]
    config["loadAverageAfter"] = os.getloadavg()[0]
    info = machine()
    print()
    print(f"Coven benchmarks — {info['cpus']} CPUs ({info['cpuModel']}), Python {info['python']}, "
          f"repeat {args.repeat}{', quick' if args.quick else ''}, {config['seconds']} s, "
          f"load average {config['loadAverageBefore']:.2f} before / {config['loadAverageAfter']:.2f} after")
    print("median/min/max are over repeats; ratio = daemon median / limit median "
          "(for rates higher is better, for times and sizes lower is better)")
    print()
    print(table(metrics))
    if ctx.notes:
        print()
        for note in ctx.notes:
            print(f"note: {note}")
    missed = [f"{m.workload}/{m.name}" for m in metrics if m.met is False]
    print()
    print(f"budgets: {sum(m.met is True for m in metrics)} met, {len(missed)} missed"
          + (f" ({'; '.join(missed)})" if missed else "") + (f"; workloads failed: {', '.join(failed)}" if failed else ""))
    if args.json:
        write_json(args.json, metrics, config, ctx.notes)
        print(f"JSON: {args.json}")
    else:
        print("JSON:")
        print(json.dumps({"config": config, "results": [m.as_json() for m in metrics], "notes": ctx.notes}))
    return 1 if failed else 0
