"""A lean asyncio XMPP client speaking raw XML: for checks a polite library would not make
(features before TLS, hostile input after login) and for counting bytes on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import time
from dataclasses import dataclass

STREAM_NS = "http://etherx.jabber.org/streams"


def header(domain: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
        f"xmlns:stream='{STREAM_NS}' version='1.0'>"
    ).encode()


def insecure_context() -> ssl.SSLContext:
    """Trusts the server's self-signed certificate (made in data_dir at first start)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def stream_error(data: bytes) -> str | None:
    """The condition of the stream error in data (RFC 6120 §4.9.3), or None."""
    m = re.search(
        rb"<(?:stream:error|error\s+xmlns=['\"]http://etherx\.jabber\.org/streams['\"])[^>]*>"
        rb"\s*<([a-z-]+)[\s/>]",
        data,
    )
    return m.group(1).decode() if m else None


@dataclass
class RawStream:
    r: asyncio.StreamReader
    w: asyncio.StreamWriter
    domain: str
    buf: bytes = b""
    jid: str = ""

    def send(self, data: bytes) -> None:
        self.w.write(data)

    async def until(self, marker: bytes | re.Pattern[bytes], timeout: float = 15) -> bytes:
        """Read until marker (bytes or compiled regex); returns everything up to its end."""
        end = time.monotonic() + timeout
        while True:
            if isinstance(marker, bytes):
                i = self.buf.find(marker)
                stop = -1 if i < 0 else i + len(marker)
            else:
                m = marker.search(self.buf)
                stop = -1 if m is None else m.end()
            if stop >= 0:
                out, self.buf = self.buf[:stop], self.buf[stop:]
                return out
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {timeout}s for {marker!r}; have {self.buf[-300:]!r}")
            chunk = await asyncio.wait_for(self.r.read(65536), left)
            if not chunk:
                raise ConnectionError(f"closed while waiting for {marker!r}: {self.buf[-300:]!r}")
            self.buf += chunk

    async def read_until_closed(self, timeout: float = 10) -> tuple[bytes, bool]:
        """Everything the server sends until it closes the TCP connection.

        Once the server's </stream:stream> arrives the client closes its side of the stream too,
        as RFC 6120 §4.4 asks, and the server must then close TCP. Returns (bytes, closed)."""
        got, self.buf = self.buf, b""
        end = time.monotonic() + timeout
        answered = False
        while True:
            if not answered and b"</stream:stream>" in got:
                answered = True
                with contextlib.suppress(OSError, RuntimeError):
                    self.w.write(b"</stream:stream>")
                    await self.w.drain()
            left = end - time.monotonic()
            if left <= 0:
                return got, False
            try:
                chunk = await asyncio.wait_for(self.r.read(65536), left)
            except TimeoutError:
                return got, False
            except (OSError, ssl.SSLError):
                return got, True
            if not chunk:
                return got, True
            got += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.w.close()


FEATURES = re.compile(rb"<stream:features\b.*?</stream:features>|<stream:features\b[^>]*/>", re.S)


async def open_stream(
    port: int, domain: str, direct_tls: bool = False, host: str = "127.0.0.1"
) -> tuple[RawStream, bytes]:
    """Connect, send a stream header and read the first stream features."""
    if direct_tls:
        r, w = await asyncio.open_connection(
            host, port, ssl=insecure_context(), server_hostname=domain
        )
    else:
        r, w = await asyncio.open_connection(host, port)
    s = RawStream(r, w, domain)
    s.send(header(domain))
    return s, await s.until(FEATURES)


async def starttls(s: RawStream) -> bytes:
    """Negotiate STARTTLS (RFC 6120 §5) and return the features of the restarted stream."""
    s.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    got = await s.until(re.compile(rb"<proceed\b[^>]*(/>|>\s*</proceed>)|<failure\b[^>]*/>"))
    if b"proceed" not in got:
        raise ConnectionError(f"STARTTLS refused: {got!r}")
    s.buf = b""
    await s.w.start_tls(insecure_context(), server_hostname=s.domain)
    s.send(header(s.domain))
    return await s.until(FEATURES)


SASL_RESULT = re.compile(rb"<(success|failure)\b[^>]*/>|<(success|failure)\b.*?</\2>", re.S)


async def auth_plain(s: RawStream, user: str, password: str) -> bytes:
    """SASL PLAIN (RFC 4616); returns the <success/> or <failure/> element."""
    tok = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    s.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>".encode()
    )
    return await s.until(SASL_RESULT)


async def bind(s: RawStream, resource: str) -> str:
    s.buf = b""
    s.send(header(s.domain))
    await s.until(FEATURES)
    s.send(
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        + f"<resource>{resource}</resource></bind></iq>".encode()
    )
    got = await s.until(b"</iq>")
    m = re.search(rb"<jid>([^<]+)</jid>", got)
    if not m:
        raise ConnectionError(f"bind failed: {got!r}")
    s.jid = m.group(1).decode()
    return s.jid


async def login(
    port: int, domain: str, user: str, password: str, resource: str, host: str = "127.0.0.1"
) -> RawStream:
    """STARTTLS + PLAIN + bind: a bound session ready for raw stanzas."""
    s, _ = await open_stream(port, domain, host=host)
    await starttls(s)
    got = await auth_plain(s, user, password)
    if b"<success" not in got:
        s.close()
        raise ConnectionError(f"{user}: authentication failed: {got!r}")
    await bind(s, resource)
    return s
