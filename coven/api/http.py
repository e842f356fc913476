"""The HTTP channel and Site: framing rules the Coven clients depend on (contract A12, B §1).

* A client that half-closes after its request (the Rust client does) still gets its answer.
* A declared body over the cap is refused with 413 before a byte of it is read; a chunked
  one as soon as it passes the cap.
* A request Twisted cannot parse still gets a framed JSON 400, never its bare default.
* Idle and slow clients time out; a client that leaves while its answer is pending (a long
  poll) is noticed at once, not when the answer is ready.
"""

from __future__ import annotations

import select
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.web import http, server
from zope.interface import implementer

from coven.errors import ApiError, payload_too_large
from coven.wire import encode

MAX_BODY_BYTES = 4 * 1024 * 1024
IDLE_TIMEOUT = 60
# How often a pending answer checks that its half-closed client is still there.
HANGUP_POLL = 1.0


# Where the contract's reason phrases (B §1) differ from Twisted's.
_REASONS = {413: b"Payload Too Large", 422: b"Unprocessable Content"}


def reason(status: int) -> bytes:
    return _REASONS.get(status) or http.RESPONSES.get(status, b"OK")


def raw_response(status: int, body: bytes, head_only: bool = False) -> bytes:
    """A complete response for the rare answers made below the resource layer.

    ``head_only``: the answer to a HEAD request, whose body is described but never sent.
    """
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason(status), len(body))
    )
    return head if head_only else head + body


def peer_hung_up(transport: Any) -> bool | None:
    """Whether the peer closed its end entirely (POLLHUP); None when it cannot be told."""
    fileno = getattr(transport, "fileno", None)
    try:
        fd = fileno() if fileno is not None else -1
    except (OSError, ValueError):
        return None
    if fd < 0:
        return None
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(mask & (select.POLLHUP | select.POLLERR) for _, mask in poller.poll(0))


class _Discard:
    """Swallows the body of a request already answered."""

    def dataReceived(self, data: bytes) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class CovenChannel(http.HTTPChannel):
    """HTTPChannel that treats a read EOF as the end of input, not of the conversation.

    Always close through ``HTTPChannel.loseConnection``: it unregisters the channel as the
    transport's producer first. Closing the transport directly after a response larger than
    its buffer leaves the transport resuming a paused producer instead of closing, and a
    half-closed client then waits for an EOF that never comes.
    """

    refused = False
    _hangup_call: Any = None

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY_BYTES:
            self.refuse_oversized()
            return
        super().allHeadersReceived()

    def refuse_oversized(self) -> None:
        """Answer 413 and close; whatever of the body still arrives is swallowed."""
        self.refused = True
        self.transport.write(raw_response(413, encode(payload_too_large(MAX_BODY_BYTES).body()), self._is_head()))
        self.loseConnection()
        self._transferDecoder = _Discard()
        self.length = None

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's hook for an unparsable request line or header; its own answer is bare."""
        error = ApiError(400, "invalid_request", "Malformed HTTP request.", flat=True)
        self.transport.write(raw_response(400, encode(error.body()), self._is_head()))
        self.loseConnection()

    def _is_head(self) -> bool:
        """Whether the request being parsed is a HEAD (its request line may not have parsed)."""
        return getattr(self, "_command", None) == b"HEAD"

    def allContentReceived(self) -> None:
        if not self.refused:
            super().allContentReceived()

    def readConnectionLost(self) -> None:
        if self.requests and self._handlingRequest:
            # The request is complete and being answered: close once the response is out,
            # unless the client has gone altogether and nobody is left to read it.
            self.persistent = False
            self._check_hangup()
        elif not self.transport.disconnecting:
            self.loseConnection()

    def _check_hangup(self) -> None:
        """Drop the connection if the client closed it entirely rather than half-closed it.

        A read EOF looks the same either way; only the socket's POLLHUP tells them apart. A
        client gone altogether is dropped at once, which cancels a held long poll (contract
        A3) instead of keeping its descriptor and waiter until ``waitMs`` runs out. While an
        answer is pending for a half-closed client, it is checked again now and then, in case
        that client gives up later.
        """
        self._hangup_call = None
        if not (self.requests and self._handlingRequest) or self.transport.disconnecting:
            return
        gone = peer_hung_up(self.transport)
        if gone:
            self.transport.abortConnection()
        elif gone is not None:
            self._hangup_call = self.callLater(HANGUP_POLL, self._check_hangup)

    def connectionLost(self, reason: Any) -> None:
        if self._hangup_call is not None and self._hangup_call.active():
            self._hangup_call.cancel()
        self._hangup_call = None
        super().connectionLost(reason)

    def writeConnectionLost(self) -> None:
        if not self.transport.disconnecting:
            self.loseConnection()


class CovenRequest(server.Request):
    """Holds a body whose size was not declared (chunked) to the same cap as a declared one."""

    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY_BYTES:
            self.channel.refuse_oversized()
            return
        super().handleContentChunk(data)


class CovenSite(server.Site):
    protocol = CovenChannel
    requestFactory = CovenRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource: Any, reactor: Any = None) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT, reactor=reactor)
        # Bodies are JSON, read by the resource. Twisted would otherwise parse a POST whose
        # Content-Type claims a form, and a Content-Type it cannot parse (a vertical tab in
        # it) raises out of its parser and drops the connection with no answer at all.
        self._parsePOSTFormSubmission = False

    def log(self, request: Any) -> None:
        """Access lines would drown the events that matter; errors are logged where they happen."""
