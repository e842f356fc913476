"""Workload 1: a child floods its pty; how fast does every byte become stored and readable?

Daemon side: a fresh daemon launches ``limits gen N`` through the API; one client follows the
session with ``afterSeq`` + ``limit=1000`` long-poll pages, counts the output bytes (they must
equal what the pty delivers: the generator's bytes plus a CR for every LF), checks that seqs are
dense, and stops the clock once the exit event is read *and* the writer's backlog is empty
(health ``storage.writerBacklog*``), i.e. every byte is committed to SQLite.

Limit: the same generator in a fresh pty drained by a bare ``read`` loop (C; and a plain
Python ``os.read`` loop for reference).
"""

from __future__ import annotations

import time

from tests.bench.client import BenchDaemon, cpu_seconds, decode_json, decode_output, decode_page, events_target, \
    peak_rss_kib, rss_kib, thread_cpu_seconds
from tests.bench.context import Context
from tests.bench.report import Budget, Metric

MB = 1e6
PAGE = 1000


def flood_through_daemon(ctx: Context, expected: int) -> dict[str, float]:
    with BenchDaemon() as bench, bench.connect() as conn:
        pid = bench.pid
        bench.health(conn)
        rss0 = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        threads0 = thread_cpu_seconds(pid)
        t0 = time.perf_counter()
        session_id = bench.launch(conn, "exec " + ctx.tools.gen_command(ctx.flood_bytes))
        got = 0
        after = 0
        exit_payload = None
        events = 0
        while exit_payload is None:
            page = decode_page(conn.request("GET", events_target(session_id, after, PAGE, 10000), expect=200))
            for event in page.events:
                if event.seq != after + 1:
                    raise AssertionError(f"seq gap: {after} then {event.seq}")
                after = event.seq
                events += 1
                if event.kind == "output":
                    got += len(decode_output(event.payload_json).data.encode())
                elif event.kind == "exit":
                    exit_payload = decode_json(event.payload_json)
        t_read = time.perf_counter()
        bench.wait_stored(conn)
        t1 = time.perf_counter()
        cpu = cpu_seconds(pid) - cpu0
        threads = thread_cpu_seconds(pid)
        reactor_cpu = threads.get(pid, 0.0) - threads0.get(pid, 0.0)
        if got != expected:
            raise AssertionError(f"daemon delivered {got} bytes, the pty carried {expected}")
        if exit_payload.get("status") != "completed":
            raise AssertionError(f"flood child ended badly: {exit_payload}")
        health = bench.health(conn)["eventWriter"]
        dropped = health.get("droppedOutputBytes", 0) + health.get("droppedOutputEvents", 0)
        if dropped:
            raise AssertionError(f"the daemon dropped output: {health}")
        return {
            "seconds": t1 - t0,
            "readSeconds": t_read - t0,
            "bytes": got,
            "events": events,
            "cpuSeconds": cpu,
            "reactorCpuSeconds": reactor_cpu,
            "rssBeforeKiB": rss0,
            "peakKiB": peak_rss_kib(pid),
            "pausedMs": health.get("pausedMs", 0),
        }


def run(ctx: Context) -> list[Metric]:
    tools = ctx.tools
    counted = tools.run("count", ctx.flood_bytes)
    expected = counted["pty"]
    mb = expected / MB
    rate = Metric("throughput", f"{mb:.0f} MB stored+readable", "MB/s", higher_is_better=True,
                  limit_name=f"{tools.kind} read() loop draining the same generator in a bare pty",
                  budget=Budget("ratio_min", 0.45))
    python_rate = Metric("throughput", "plain-Python os.read drain (reference)", "MB/s", higher_is_better=True,
                         limit_name=rate.limit_name)
    read_rate = Metric("throughput", "readable via API (before commit)", "MB/s", higher_is_better=True,
                       limit_name=rate.limit_name)
    cpu = Metric("throughput", "daemon CPU per GB", "cpu-s/GB")
    reactor_cpu = Metric("throughput", "  of which reactor thread", "cpu-s/GB")
    other_cpu = Metric("throughput", "  of which writer (other threads)", "cpu-s/GB")
    peak = Metric("throughput", "daemon peak RSS (VmHWM)", "MiB")
    growth = Metric("throughput", "peak RSS growth during flood", "MiB")
    for i in range(ctx.repeat):
        ctx.log(f"throughput {i + 1}/{ctx.repeat}: C drain")
        bare = tools.run("drain", "--", *tools.command("gen", ctx.flood_bytes))
        if bare["bytes"] != expected:
            raise AssertionError(f"bare drain read {bare['bytes']} bytes, expected {expected}")
        rate.limit.append(expected / MB / bare["seconds"])
        ctx.log(f"throughput {i + 1}/{ctx.repeat}: Python drain")
        py = tools.run("drain", "--", *tools.command("gen", ctx.flood_bytes), python=True)
        python_rate.samples.append(expected / MB / py["seconds"])
        python_rate.limit.append(rate.limit[-1])
        ctx.log(f"throughput {i + 1}/{ctx.repeat}: daemon")
        result = flood_through_daemon(ctx, expected)
        rate.samples.append(expected / MB / result["seconds"])
        read_rate.samples.append(expected / MB / result["readSeconds"])
        read_rate.limit.append(rate.limit[-1])
        cpu.samples.append(result["cpuSeconds"] / (expected / 1e9))
        reactor_cpu.samples.append(result["reactorCpuSeconds"] / (expected / 1e9))
        other_cpu.samples.append((result["cpuSeconds"] - result["reactorCpuSeconds"]) / (expected / 1e9))
        peak.samples.append(result["peakKiB"] / 1024)
        growth.samples.append((result["peakKiB"] - result["rssBeforeKiB"]) / 1024)
        ctx.log(f"  daemon {rate.samples[-1]:.1f} MB/s ({result['events']} events, paused "
                f"{result['pausedMs']} ms), C limit {rate.limit[-1]:.1f} MB/s, "
                f"Python drain {python_rate.samples[-1]:.1f} MB/s")
    cpu.note = "daemon utime+stime (all threads) over the flood, per 1e9 pty bytes"
    growth.note = "VmHWM after the flood minus VmRSS before it: 'memory flat during a flood'"
    return [rate, read_rate, python_rate, cpu, reactor_cpu, other_cpu, peak, growth]
