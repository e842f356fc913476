"""The same modes as ``limits.c``, in plain Python, with the same arguments and JSON output.

Used when no C compiler is available (the results then say so), and always for the
"Python os.read loop on a pty" drain baseline, which is cheap to measure beside the C one.

    python pylimits.py gen BYTES | count BYTES | drain -- ARGV... | launch COUNT PARALLEL -- ARGV...
                       | echo COUNT | load SOCKET REQFILE CONC SECONDS keepalive|close
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time

BLOCK = 65536
WINSIZE = struct.pack("HHHH", 24, 80, 0, 0)


def make_block() -> tuple[bytes, int]:
    """Byte for byte the block ``limits.c`` writes."""
    parts, used, i = [], 0, 0
    while True:
        fill = 20 + (i * 37) % 90
        line = (f"\x1b[1;32m{i:06d}\x1b[0m step \u00b7 compiling module_{i % 997:03d}.c ".encode()
                + bytes(ord("a") + (i + k) % 26 for k in range(fill)) + b"\n")
        if used + len(line) > BLOCK:
            return b"".join(parts), i
        parts.append(line)
        used += len(line)
        i += 1


def gen(total: int, count_only: bool) -> None:
    block, newlines = make_block()
    blocks = -(-total // len(block))
    if count_only:
        print(json.dumps({"written": blocks * len(block), "pty": blocks * (len(block) + newlines)}))
        return
    view = memoryview(block)
    for _ in range(blocks):
        off = 0
        while off < len(block):
            off += os.write(1, view[off:])


def spawn(argv: list[str]) -> tuple[int, int]:
    pid, master = os.forkpty()
    if pid == 0:
        try:
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSWINSZ, WINSIZE)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    return pid, master


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drain(argv: list[str]) -> None:
    cpu0 = cpu()
    t0 = time.perf_counter()
    pid, master = spawn(argv)
    total = reads = 0
    read = os.read
    while True:
        try:
            data = read(master, BLOCK)
        except OSError:
            break  # EIO: the slave side is closed
        if not data:
            break
        total += len(data)
        reads += 1
    t1 = time.perf_counter()
    _, status = os.waitpid(pid, 0)
    os.close(master)
    print(json.dumps({"bytes": total, "seconds": t1 - t0, "reads": reads, "readerCpu": cpu() - cpu0,
                      "status": status}))


def drain_and_reap(master: int, pid: int) -> None:
    try:
        while os.read(master, 4096):
            pass
    except OSError:
        pass
    os.close(master)
    os.waitpid(pid, 0)


def launch(count: int, parallel: int, argv: list[str]) -> None:
    latencies = []
    done = 0
    while done < count:
        batch = min(parallel, count - done)
        children: dict[int, int] = {}
        waiting: set[int] = set()
        poller = select.poll()
        t0 = time.perf_counter()
        spawned = 0
        while spawned < batch or waiting:
            if spawned < batch:
                pid, master = spawn(argv)
                children[master] = pid
                waiting.add(master)
                poller.register(master, select.POLLIN)
                spawned += 1
            ready = poller.poll(0 if spawned < batch else 10000)
            now = time.perf_counter()
            for fd, _ in ready:
                if fd in waiting:
                    latencies.append((now - t0) * 1e6)
                    waiting.discard(fd)
                    poller.unregister(fd)
        for master, pid in children.items():
            drain_and_reap(master, pid)
        done += batch
    print(json.dumps({"latencyUs": latencies}))


def echo(count: int) -> None:
    pid, master = spawn(["cat"])
    time.sleep(0.05)
    latencies = []
    for i in range(count):
        if i and i % 50 == 0:
            os.write(master, b"\r")
            newlines = 0
            while newlines < 2:
                newlines += os.read(master, 8192).count(b"\n")
        c = bytes([ord("a") + i % 26])
        t0 = time.perf_counter()
        os.write(master, c)
        while c not in os.read(master, 8192):
            pass
        latencies.append((time.perf_counter() - t0) * 1e6)
    os.kill(pid, signal.SIGKILL)
    os.close(master)
    os.waitpid(pid, 0)
    print(json.dumps({"latencyUs": latencies}))


def _exchange(sock: socket.socket, request: bytes) -> int:
    sock.sendall(request)
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(1 << 18)
        if not chunk:
            return -1
        buffer += chunk
    head = buffer[:end]
    if not head.startswith(b"HTTP/1.1 200 "):
        return -1
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    have = len(buffer) - end - 4
    while have < length:
        chunk = sock.recv(1 << 18)
        if not chunk:
            return -1
        have += len(chunk)
    return length if have == length else -1


def load(path: str, reqfile: str, conc: int, seconds: float, mode: str) -> None:
    request = open(reqfile, "rb").read()
    keepalive = mode == "keepalive"
    stop = threading.Event()
    counts = {"requests": 0, "errors": 0, "bytes": 0, "bodyBytes": -1}
    lock = threading.Lock()

    def worker() -> None:
        sock = None
        while not stop.is_set():
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)
                except OSError:
                    sock.close()
                    sock = None
                    with lock:
                        counts["errors"] += 1
                    continue
            try:
                length = _exchange(sock, request)
            except OSError:
                length = -1
            with lock:
                if length >= 0 and counts["bodyBytes"] < 0:
                    counts["bodyBytes"] = length
                if length < 0 or length != counts["bodyBytes"]:
                    counts["errors"] += 1
                    sock.close()
                    sock = None
                    continue
                counts["requests"] += 1
                counts["bytes"] += length
            if not keepalive:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps({**counts, "seconds": time.perf_counter() - t0}))


def main(argv: list[str]) -> int:
    mode, rest = argv[0], argv[1:]
    tail = rest[rest.index("--") + 1:] if "--" in rest else []
    if mode == "gen":
        gen(int(rest[0]), False)
    elif mode == "count":
        gen(int(rest[0]), True)
    elif mode == "drain":
        drain(tail)
    elif mode == "launch":
        launch(int(rest[0]), int(rest[1]), tail)
    elif mode == "echo":
        echo(int(rest[0]))
    elif mode == "load":
        load(rest[0], rest[1], int(rest[2]), float(rest[3]), rest[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sys.exit(main(sys.argv[1:]))
