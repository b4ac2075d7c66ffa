"""The HTTPS side of XEP-0363: PUT a slot's body, GET or HEAD a kept file (Twisted Web).

A PUT is judged as soon as its headers are in (slot, Content-Length, Content-Type), before any
of its body is read; a body that may not be kept is refused at once and the connection closed.
An accepted body streams to disk on the upload threads, one write at a time and in order, and
the connection stops reading while too much waits for the disk. Downloads are read on the same
threads and sent as the connection drains. The listeners are TLS only: nothing is served in
the clear.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import HTTPChannel

from standard_edition.upload import store
from standard_edition.upload.ledger import Slot
from standard_edition.upload.rules import (
    CONTENT_SECURITY_POLICY,
    content_disposition,
    same_type,
    token_of,
)

if TYPE_CHECKING:
    from standard_edition.edge.limits import EdgeGuard
    from standard_edition.upload.service import UploadService

log = Logger(namespace="se.upload")

HIGH_WATER = 1 << 20  # bytes waiting for the disk before the connection stops reading
LOW_WATER = 1 << 18  # ... and starts again
READ_CHUNK = 1 << 16
MAX_OTHER_BODY = 1 << 16  # a body on anything but a PUT (nobody needs one)
IDLE_TIMEOUT = 60  # seconds a connection may send nothing


def _security_headers(request: server.Request) -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode())
    request.setHeader(b"Strict-Transport-Security", b"max-age=31536000")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    # XEP-0363 §8: web clients upload and fetch from another origin
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, PUT, OPTIONS")
    request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type")


def _plain(request: server.Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return f"{text}\n".encode()


class BodyWriter:
    """Appends a request body to a file off the reactor, in order, with backpressure."""

    def __init__(
        self,
        run: Callable[..., Deferred[Any]],
        part: Path,
        final: Path,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self.run, self.part, self.final = run, part, final
        self.pause, self.resume = pause, resume
        self.file: IO[bytes] | None = None
        self.waiting: list[bytes] = []
        self.waiting_bytes = 0
        self.busy = False
        self.paused = False
        self.failure: Failure | None = None
        self.done: Deferred[int] | None = None  # fires with the length once all is on disk
        self.ended = False  # closed or aborted: nothing more is written
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.ended or self.failure is not None:
            return
        self.waiting.append(data)
        self.waiting_bytes += len(data)
        if self.waiting_bytes > HIGH_WATER and not self.paused:
            self.paused = True
            self.pause()
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        if self.failure is not None:
            self._settle()
            return
        if self.waiting:
            data = b"".join(self.waiting)
            self.waiting.clear()
            self.busy = True
            self.run(self._append, data).addCallbacks(self._written, self._failed, (len(data),))
        elif self.done is not None:
            self._settle()

    def _append(self, data: bytes) -> None:  # upload thread
        if self.file is None:
            self.file = store.open_part(self.part)
        self.file.write(data)

    def _written(self, _: None, n: int) -> None:
        self.busy = False
        self.waiting_bytes -= n
        if self.aborted:
            self._discard()
            return
        if self.paused and self.waiting_bytes < LOW_WATER and not self.ended:
            self.paused = False
            self.resume()
        self._next()

    def _failed(self, f: Failure) -> None:
        self.busy = False
        self.failure = f
        if self.aborted:
            self._discard()
            return
        if self.paused:  # let the rest of the body drain, so that the client hears why
            self.paused = False
            self.resume()
        self._next()

    def _discard(self) -> None:
        d = self.run(store.discard_part, self.file, self.part)
        d.addErrback(lambda f: log.failure("upload: removing {part}", f, part=self.part))

    def close(self) -> Deferred[int]:
        """The body is complete: flush it, move it into place; fires with its length."""
        self.ended = True
        done: Deferred[int] = Deferred()
        self.done = done
        self._next()
        return done

    def _settle(self) -> None:
        done, self.done = self.done, None
        if done is None:
            return
        if self.failure is not None:
            self._discard()
            done.errback(self.failure)
            return
        if self.file is None:
            done.errback(Failure(OSError("no body was written")))
            return
        self.run(store.finish_part, self.file, self.part, self.final).chainDeferred(done)

    def abort(self) -> None:
        """The connection went away mid-body: the partial file goes."""
        if self.ended:
            return
        self.ended = self.aborted = True
        self.waiting.clear()
        if not self.busy:
            self._discard()


class FileSender:
    """Streams a kept file to a GET response, read on the upload threads (IPushProducer)."""

    def __init__(self, run: Callable[..., Deferred[Any]], path: Path, request: Any) -> None:
        self.run, self.path, self.request = run, path, request
        self.file: IO[bytes] | None = None
        self.paused = self.reading = self.stopped = False

    def start(self) -> Deferred[None]:
        """Fires once the file is open (the headers may then be sent), fails if it is not there."""
        d: Deferred[Any] = self.run(open, self.path, "rb")

        def opened(f: IO[bytes]) -> None:
            self.file = f

        return d.addCallback(opened)

    def send(self) -> None:
        self.request.registerProducer(self, True)
        self._read()

    def _read(self) -> None:
        if self.paused or self.reading or self.stopped or self.file is None:
            return
        self.reading = True
        self.run(self.file.read, READ_CHUNK).addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self.reading = False
        if self.stopped:
            self._close()
            return
        if not data:
            self.stopped = True
            self._close()
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.request.write(data)
        self._read()

    def _failed(self, f: Failure) -> None:
        self.reading = False
        log.failure("upload: reading {path} failed", f, path=self.path)
        self.stopped = True
        self._close()
        self.request.unregisterProducer()
        # the headers are out: only dropping the connection tells the client it is cut short
        channel = self.request.channel
        if channel is not None:
            channel.transport.abortConnection()

    def _close(self) -> None:
        f, self.file = self.file, None
        if f is not None:
            self.run(f.close)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._read()

    def stopProducing(self) -> None:
        self.stopped = True
        if not self.reading:
            self._close()


class UploadRequest(server.Request):
    """A request whose PUT body goes to disk as it arrives (see UploadChannel)."""

    slot: Slot | None = None
    writer: BodyWriter | None = None
    refused = False

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        super().__init__(channel, *args, **kw)
        # kept: Request.connectionLost forgets the channel, and the slot must still go back
        self.service: UploadService = channel.site.service

    def judge(self, method: bytes, path: bytes, length: int | None) -> tuple[int, str] | None:
        """The headers are in: (status, text) to refuse at once, or None to read the body."""
        if method != b"PUT":
            if length is None or length > MAX_OTHER_BODY:
                return 413, "this request may not carry a body"
            return None
        token = token_of(path)
        ledger = self.service.ledger
        state = "gone" if token is None else ledger.slot_state(token)
        if state == "busy":
            return 409, "this slot is being used by another upload"
        if token is None or state != "open":
            return 404, "no such upload slot (unknown, used or expired)"
        slot = ledger.pending[token]
        if length is None:
            return 411, "send the body with a Content-Length"
        if length != slot.size:
            code = 413 if length > slot.size else 400
            return code, f"this slot takes exactly {slot.size} bytes, not {length}"
        sent = self.requestHeaders.getRawHeaders(b"Content-Type", [None])[0]
        if slot.declared and not same_type(slot.content_type, sent and sent.decode("latin-1")):
            return 415, f"this slot takes Content-Type {slot.content_type}"
        self.slot = ledger.claim(token)
        transport = self.channel.transport
        self.writer = BodyWriter(
            self.service.run,
            self.service.dir.part(slot.put_token),
            self.service.dir.path(slot.get_token),
            transport.pauseProducing,
            transport.resumeProducing,
        )
        return None

    def gotLength(self, length: int | None) -> None:
        if self.writer is not None:
            self.content = io.BytesIO()  # the body goes to the writer, not here
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        if self.writer is not None:
            self.writer.write(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return  # answered when the headers came; the connection is closing
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.writer is not None and not self.writer.ended:
            self.writer.abort()
            if self.slot is not None:
                self.service.ledger.release(self.slot)

    def log(self, *args: Any) -> None:  # no access log: the URLs hold the secrets
        return


class UploadChannel(HTTPChannel):
    guard: EdgeGuard | None = None  # the edge's connection limits, on the edge listeners
    _refused_unheard = False
    _host = ""

    def connectionMade(self) -> None:
        guard = self.site.guard  # type: ignore[attr-defined]
        if guard is not None:
            self._host = str(getattr(self.transport.getPeer(), "host", "?"))
            if not guard.connection_opened(self._host):
                # DESIGN §7: too many connections from this address
                self._refused_unheard = True
                self.transport.abortConnection()
                return
            self.guard = guard
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        if self._refused_unheard:
            return
        if self.guard is not None:
            self.guard.connection_closed(self._host)
        super().connectionLost(reason)

    def allHeadersReceived(self) -> None:
        req = self.requests[-1]
        refusal = req.judge(self._command, self._path, self.length)
        if refusal is None:
            super().allHeadersReceived()
            return
        # refuse before the body: say why, then close (RFC 9110 §15.5.14 for a body too large)
        code, text = refusal
        req.refused = True
        req.content = io.BytesIO()
        self.persistent = False
        body = f"{text}\n".encode()
        reason = {400: b"Bad Request", 404: b"Not Found", 409: b"Conflict", 411: b"Length Required"}
        reason |= {413: b"Content Too Large", 415: b"Unsupported Media Type"}
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n"
            b"Access-Control-Allow-Origin: *\r\n\r\n%s" % (code, reason[code], len(body), body)
        )
        self.loseConnection()


class UploadResource(resource.Resource):
    isLeaf = True

    def __init__(self, service: UploadService) -> None:
        super().__init__()
        self.service = service

    def render_OPTIONS(self, request: server.Request) -> bytes:
        _security_headers(request)
        request.setResponseCode(204)
        return b""

    def render_HEAD(self, request: server.Request) -> bytes:
        _security_headers(request)
        token = token_of(request.path)
        f = None if token is None else self.service.ledger.lookup(token)
        if f is None:
            request.setResponseCode(404)
            return b""
        self._file_headers(request, f)
        return b""

    def render_GET(self, request: server.Request) -> bytes | int:
        _security_headers(request)
        token = token_of(request.path)
        f = None if token is None else self.service.ledger.lookup(token)
        if f is None:
            return _plain(request, 404, "no such file (unknown or expired)")
        sender = FileSender(self.service.run, self.service.dir.path(f.token), request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def opened(_: None) -> None:
            if gone:  # the client left while the file was being opened
                sender.stopProducing()
                return
            self._file_headers(request, f)
            sender.send()

        def missing(failure: Failure) -> None:
            log.warn(
                "upload: a file of {owner} has a row but cannot be read: {e}",
                owner=f.owner,
                e=failure.getErrorMessage(),
            )
            if not gone:
                request.write(_plain(request, 404, "no such file"))
                request.finish()

        sender.start().addCallbacks(opened, missing)
        return server.NOT_DONE_YET

    @staticmethod
    def _file_headers(request: server.Request, f: Any) -> None:
        request.setHeader(b"Content-Type", f.content_type.encode("latin-1"))
        request.setHeader(b"Content-Length", b"%d" % f.size)
        request.setHeader(b"Content-Disposition", content_disposition(f.filename, f.content_type))
        request.setHeader(b"Cache-Control", b"private, max-age=86400")

    def render_PUT(self, request: UploadRequest) -> bytes | int:  # type: ignore[override]
        _security_headers(request)
        slot, writer = request.slot, request.writer
        if slot is None or writer is None:
            return _plain(request, 404, "no such upload slot")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(code: int, text: str) -> None:
            if not gone:
                request.write(_plain(request, code, text))
                request.finish()

        def written(size: int) -> Deferred[Any] | None:
            if size != slot.size:  # cannot happen with Content-Length framing; never keep it
                self.service.run(store.unlink, self.service.dir.path(slot.get_token))
                self.service.ledger.release(slot)
                answer(400, f"this slot takes exactly {slot.size} bytes")
                return None
            d = self.service.commit(slot)
            d.addCallbacks(lambda _: answer(201, "stored"), failed)
            return d

        def failed(f: Failure) -> None:
            log.failure("upload: storing a file of {owner} failed", f, owner=slot.owner)
            self.service.ledger.release(slot)
            answer(500, "the file could not be stored")

        writer.close().addCallbacks(written, failed)
        return server.NOT_DONE_YET


class UploadSite(server.Site):
    protocol = UploadChannel  # type: ignore[assignment]
    requestFactory = UploadRequest  # type: ignore[assignment]

    def __init__(self, service: UploadService, guard: EdgeGuard | None = None) -> None:
        super().__init__(UploadResource(service), timeout=IDLE_TIMEOUT)
        self.service = service
        self.guard = guard
        self.noisy = False

    def log(self, request: Any) -> None:  # no access log: the URLs hold the secrets
        return
