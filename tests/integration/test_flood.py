"""A child that floods its pty: every byte arrives, in order, and the daemon's memory stays flat."""

from __future__ import annotations

import hashlib
import json
import sys
import time

FLOOD_BYTES = 100 * 1024 * 1024
FLOOD_SCRIPT = r"""
import sys
total = int(sys.argv[1])
out = sys.stdout.buffer
written = i = 0
while written < total:
    line = f"{i:09d} snow\u2603 caf\u00e9 ".encode() + b"x" * (i % 97) + b"\n"
    out.write(line)
    written += len(line)
    i += 1
out.flush()
"""


def expected_digest(total: int) -> tuple[str, int]:
    """What the pty must deliver: the same lines, with the terminal's CR LF endings."""
    digest = hashlib.sha256()
    written = i = size = 0
    while written < total:
        line = f"{i:09d} snow\u2603 caf\u00e9 ".encode() + b"x" * (i % 97) + b"\n"
        written += len(line)
        chunk = line[:-1] + b"\r\n"
        digest.update(chunk)
        size += len(chunk)
        i += 1
    return digest.hexdigest(), size


def peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_100_mb_flood_arrives_byte_exact_with_flat_memory(sessions, project):
    (project / "flood.py").write_text(FLOOD_SCRIPT)
    daemon = sessions.daemon
    baseline = peak_rss_kib(daemon.pid)
    record = sessions.launch(f"stty -echo; {sys.executable} flood.py {FLOOD_BYTES}")
    sid = record["id"]

    digest, size, seqs, after, exit_payload = hashlib.sha256(), 0, [], 0, None
    deadline = time.monotonic() + 300
    while exit_payload is None:
        assert time.monotonic() < deadline, f"flood not done: {size} bytes so far"
        page = sessions.page(sid, afterSeq=after, limit=1000, waitMs=5000)
        for event in page["events"]:
            seqs.append(event["seq"])
            data = json.loads(event["payload_json"])
            if event["kind"] == "output":
                chunk = data["data"].encode()
                digest.update(chunk)
                size += len(chunk)
            elif event["kind"] == "exit":
                exit_payload = data
        if page["events"]:
            after = page["events"][-1]["seq"]

    want_digest, want_size = expected_digest(FLOOD_BYTES)
    assert size == want_size
    assert digest.hexdigest() == want_digest
    assert seqs == list(range(1, len(seqs) + 1))
    assert exit_payload["status"] == "completed"
    growth_mib = (peak_rss_kib(daemon.pid) - baseline) / 1024
    print(f"flood: {size / 2**20:.0f} MiB in {len(seqs)} events, daemon peak RSS grew {growth_mib:.1f} MiB")
    assert growth_mib < 64, f"daemon memory grew {growth_mib:.1f} MiB during a {FLOOD_BYTES >> 20} MiB flood"
    health = sessions.request("GET", "/api/v1/health").json()["eventWriter"]
    assert health["droppedOutputEvents"] == 0 and health["droppedOutputBytes"] == 0


def test_a_writer_that_falls_behind_pauses_the_pty_and_loses_nothing(make_daemon, project):
    """With a tiny writer buffer every flood outruns the store: reads pause, bytes still arrive."""
    from tests.integration.conftest import SHELL_MANIFEST, SessionClient

    daemon = make_daemon(args=("--writer-buffer", "65536"),
                         env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(SHELL_MANIFEST)})
    client = SessionClient(daemon, project)
    (project / "flood.py").write_text(FLOOD_SCRIPT)
    total = 20 * 1024 * 1024
    record = client.launch(f"stty -echo; {sys.executable} flood.py {total}")
    events = client.until_exit(record["id"], timeout=120)
    data = "".join(json.loads(e["payload_json"])["data"] for e in events if e["kind"] == "output").encode()
    want_digest, want_size = expected_digest(total)
    assert len(data) == want_size and hashlib.sha256(data).hexdigest() == want_digest
    writer = client.request("GET", "/api/v1/health").json()["eventWriter"]
    assert writer["pausedMs"] > 0, writer
    assert writer["pausedSessions"] == 0 and writer["queuedBytes"] == 0
    assert "pausing producers" in daemon.output()
