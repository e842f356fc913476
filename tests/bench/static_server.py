"""The event-page limit: a minimal asyncio HTTP/1.1 server on a Unix socket.

    python static_server.py SOCKET RESPONSEFILE

Answers every request with the same bytes: RESPONSEFILE holds one whole response the daemon
sent (status line, headers, body), captured over the same kind of connection. It keeps the
connection open unless the request says ``Connection: close``, and parses no more than a
request needs: headers, Content-Length, body.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys


async def serve(path: str, response: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lower = head.lower()
                length = 0
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
                if b"connection: close" in lower:
                    return
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("ready", flush=True)
    async with server:
        await stop


def main() -> None:
    path, response_file = sys.argv[1], sys.argv[2]
    with open(response_file, "rb") as f:
        response = f.read()
    if os.path.exists(path):
        os.unlink(path)
    asyncio.run(serve(path, response))


if __name__ == "__main__":
    main()
