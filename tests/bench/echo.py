"""Workload 5: a typed byte until its echo is visible to a client long-polling the events API.

Daemon side: a ``cat`` session (the pty echoes what is typed). One connection keeps a
long-poll (``afterSeq`` = last seen, ``waitMs``) outstanding; another POSTs one character as
input. The clock runs from sending the input until the poller has read an output event that
holds the character (the ``input`` event wakes the poller first; it re-polls from its
cursor, as a following client does). Every 50 characters a CR ends the line, untimed, so
the canonical line buffer never fills; the limit does the same.

Keystrokes are measured twice: paced like fast typing (``TYPING_GAP`` between keys, which
is what the budget is about) and back to back (the next key as soon as the last echo is
seen), which shows what output coalescing costs a program that is already printing.

Limit: the same ``cat`` in a bare pty: write one byte to the master, read until its echo.
"""

from __future__ import annotations

import selectors
import time

from tests.bench.client import BenchDaemon, Connection, decode_output, decode_page, encode_json, events_target
from tests.bench.context import Context
from tests.bench.report import Budget, Metric, median, percentile

LINE = 50
WAIT_MS = 5000
TYPING_GAP = 0.030  # 33 keys a second: faster than anyone types


class Follower:
    """A client that always has one long-poll outstanding and remembers its cursor."""

    def __init__(self, conn: Connection, session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id
        self.after = 0
        self.pending = False

    def poll(self) -> None:
        if not self.pending:
            self.conn.send("GET", events_target(self.session_id, self.after, 1000, WAIT_MS))
            self.pending = True

    def read(self) -> str:
        """Read the outstanding page, re-arm, and return the output text it carried."""
        status, body = self.conn.receive()
        self.pending = False
        if status != 200:
            raise AssertionError(f"events page answered {status}: {body[:200]!r}")
        text = []
        for event in decode_page(body).events:
            self.after = event.seq
            if event.kind == "output":
                text.append(decode_output(event.payload_json).data)
        self.poll()
        return "".join(text)


def type_and_wait(typist: Connection, follower: Follower, session_id: str, data: str, want: str,
                  selector: selectors.BaseSelector) -> float:
    """Seconds from sending ``data`` until the follower has seen ``want`` in the output."""
    body = encode_json({"data": data})
    target = f"/api/v1/sessions/{session_id}/input"
    seen = ""
    t0 = time.perf_counter()
    typist.send("POST", target, body)
    answered = False
    while True:
        for key, _ in selector.select(timeout=10):
            if key.data == "typist":
                status, answer = typist.receive()
                if status != 202:
                    raise AssertionError(f"input answered {status}: {answer[:200]!r}")
                answered = True
            else:
                seen += follower.read()
                if want in seen:
                    elapsed = time.perf_counter() - t0
                    if not answered:
                        typist.receive()
                    return elapsed
        if time.perf_counter() - t0 > 10:
            raise TimeoutError(f"no echo of {want!r} after 10 s")


def measure(bench: BenchDaemon, count: int, gap: float = 0.0) -> list[float]:
    with bench.connect() as setup, bench.connect() as typist, bench.connect() as poller:
        session_id = bench.launch(setup, "exec cat")
        follower = Follower(poller, session_id)
        selector = selectors.DefaultSelector()
        selector.register(typist.sock, selectors.EVENT_READ, "typist")
        selector.register(poller.sock, selectors.EVENT_READ, "poller")
        follower.poll()
        time.sleep(0.1)
        latencies = []
        for i in range(count + 5):  # the first five warm the path and are not counted
            if i and i % LINE == 0:
                line = "".join(chr(ord("a") + k % 26) for k in range(i - LINE, i))
                type_and_wait(typist, follower, session_id, "\r", line + "\r\n", selector)
            c = chr(ord("a") + i % 26)
            if gap:
                time.sleep(gap)
            elapsed = type_and_wait(typist, follower, session_id, c, c, selector)
            if i >= 5:
                latencies.append(elapsed * 1e3)
        selector.close()
        return latencies


def run(ctx: Context) -> list[Metric]:
    tools = ctx.tools
    count = ctx.scale(200, 60)
    limit_name = f"{tools.kind} write() of one byte to a bare pty running cat, read() until its echo"
    typed = f"typed byte ({TYPING_GAP * 1e3:.0f} ms apart) -> echo seen by long-poller"
    med = Metric("echo", f"{typed}, median", "ms", limit_name=limit_name, budget=Budget("value_max", 3))
    p99 = Metric("echo", f"{typed}, p99", "ms", limit_name=limit_name)
    burst_med = Metric("echo", "back-to-back keys -> echo, median", "ms", limit_name=limit_name)
    burst_p99 = Metric("echo", "back-to-back keys -> echo, p99", "ms", limit_name=limit_name)
    pooled: list[float] = []
    for i in range(ctx.repeat):
        ctx.log(f"echo {i + 1}/{ctx.repeat}: bare pty")
        bare = tools.run("echo", count)["latencyUs"]
        for metric in (med, burst_med):
            metric.limit.append(median(bare) / 1e3)
        for metric in (p99, burst_p99):
            metric.limit.append(percentile(bare, 0.99) / 1e3)
        ctx.log(f"echo {i + 1}/{ctx.repeat}: daemon")
        with BenchDaemon() as bench:
            latencies = measure(bench, count, TYPING_GAP)
            back_to_back = measure(bench, count)
        pooled += latencies
        med.samples.append(median(latencies))
        p99.samples.append(percentile(latencies, 0.99))
        burst_med.samples.append(median(back_to_back))
        burst_p99.samples.append(percentile(back_to_back, 0.99))
        ctx.log(f"  daemon median {med.samples[-1]:.3f} ms, p99 {p99.samples[-1]:.3f} ms "
                f"(back to back: {burst_med.samples[-1]:.3f} ms); bare pty median {med.limit[-1] * 1e3:.1f} us")
    med.note = (f"{count} keys per repeat, input and long-poll on their own keep-alive connections; over all "
                f"repeats: median {median(pooled):.3f} ms, p99 {percentile(pooled, 0.99):.3f} ms")
    return [med, p99, burst_med, burst_p99]
