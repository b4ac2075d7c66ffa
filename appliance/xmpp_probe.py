"""A small blocking XMPP client for `se-ctl test im|presence` (synthetic transactions).

It speaks just enough of RFC 6120 to log in over the real c2s listener: stream, STARTTLS,
SASL PLAIN with a one-time credential the server issued, resource binding; then it sends and
waits for stanzas. The server's certificate is pinned to the SHA-256 fingerprint the control
socket reported, so the credential only ever goes to this server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
C = "{" + NS_CLIENT + "}"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class ProbeError(Exception):
    """Why a synthetic transaction failed; str() is one line."""


class StreamReader:
    """Incremental parse of one XML stream: top-level children come out as elements."""

    def __init__(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.closed = False

    def feed(self, data: bytes) -> list[ET.Element]:
        out = []
        try:
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        out.append(el)
                    elif self._depth == 0:
                        self.closed = True
        except ET.ParseError as e:
            raise ProbeError(f"the server sent XML that does not parse: {e}") from None
        return out


class Probe:
    """One user's stream. Every wait has a deadline; failures raise ProbeError."""

    def __init__(self, jid: str, timeout: float = 10.0) -> None:
        self.jid = jid  # bare
        self.local, _, self.domain = jid.partition("@")
        self.timeout = timeout
        self.full_jid = ""
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._reader = StreamReader()
        self._pending: list[ET.Element] = []

    # -- connection ------------------------------------------------------------------------

    def login(self, address: str, token: str, fingerprint: str | None) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        try:
            self._sock = socket.create_connection((host, int(port)), timeout=self.timeout)
        except OSError as e:
            raise ProbeError(f"cannot connect to the c2s listener {address}: {e}") from None
        features = self._open()
        if features.find(f"{{{NS_TLS}}}starttls") is None:
            raise ProbeError("the server offers no STARTTLS")
        self._send(f"<starttls xmlns='{NS_TLS}'/>")
        self._expect(f"{{{NS_TLS}}}proceed", "STARTTLS")
        self._start_tls(fingerprint)
        features = self._open()
        mechs = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        if "PLAIN" not in mechs:
            raise ProbeError(f"the server offers no SASL PLAIN over TLS (offers {mechs})")
        payload = base64.b64encode(f"\0{self.local}\0{token}".encode()).decode()
        self._send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{payload}</auth>")
        el = self._next(lambda e: e.tag.startswith(f"{{{NS_SASL}}}"), "the SASL answer")
        if el.tag != f"{{{NS_SASL}}}success":
            reason = next((_local(c.tag) for c in el if _local(c.tag) != "text"), "failure")
            raise ProbeError(f"{self.jid}: login refused ({reason})")
        self._reader = StreamReader()
        self._open()
        resource = "se-ctl-test-" + secrets.token_hex(4)
        self._send(
            f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        el = self._next(lambda e: e.tag == C + "iq" and e.get("id") == "bind", "resource binding")
        jid = el.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        if el.get("type") != "result" or not jid:
            raise ProbeError(f"{self.jid}: resource binding failed")
        self.full_jid = jid

    def _open(self) -> ET.Element:
        self._send(
            f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' "
            f"xmlns:stream='{NS_STREAM}' to={quoteattr(self.domain)} version='1.0'>"
        )
        return self._expect(f"{{{NS_STREAM}}}features", "stream features")

    def _start_tls(self, fingerprint: str | None) -> None:
        ctx = ssl.create_default_context()
        # the certificate is checked by its pinned fingerprint below, not by a CA
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert self._sock is not None
        try:
            tls = ctx.wrap_socket(self._sock, server_hostname=self.domain)
        except (OSError, ssl.SSLError) as e:
            raise ProbeError(f"TLS handshake failed: {e}") from None
        der = tls.getpeercert(binary_form=True) or b""
        if fingerprint and not hmac.compare_digest(hashlib.sha256(der).hexdigest(), fingerprint):
            tls.close()
            raise ProbeError("the c2s listener's certificate is not the server's; not logging in")
        self._sock = tls
        self._reader = StreamReader()

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            self._send("</stream:stream>")
            end = time.monotonic() + 1.0
            while not self._reader.closed and time.monotonic() < end:
                self._read(end)
        except (ProbeError, OSError):
            pass
        finally:
            self._sock.close()
            self._sock = None

    # -- stanzas ---------------------------------------------------------------------------

    def send(self, xml: str) -> None:
        self._send(xml)

    def wait_for(self, match: Callable[[ET.Element], bool], what: str) -> ET.Element:
        return self._next(match, what)

    def _send(self, text: str) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(text.encode("utf-8"))
        except OSError as e:
            raise ProbeError(f"{self.jid}: connection lost: {e}") from None

    def _expect(self, tag: str, what: str) -> ET.Element:
        el = self._next(lambda e: True, what)
        if el.tag == f"{{{NS_STREAM}}}error":
            cond = next((_local(c.tag) for c in el), "error")
            raise ProbeError(f"{self.jid}: stream error during {what}: {cond}")
        if el.tag != tag:
            raise ProbeError(f"{self.jid}: expected {what}, got <{_local(el.tag)}/>")
        return el

    def _next(self, match: Callable[[ET.Element], bool], what: str) -> ET.Element:
        end = time.monotonic() + self.timeout
        while True:
            for i, el in enumerate(self._pending):
                if el.tag == f"{{{NS_STREAM}}}error" or match(el):
                    del self._pending[i]
                    if el.tag == f"{{{NS_STREAM}}}error" and not match(el):
                        cond = next((_local(c.tag) for c in el), "error")
                        raise ProbeError(
                            f"{self.jid}: stream error while waiting for {what}: {cond}"
                        )
                    return el
            if self._reader.closed:
                raise ProbeError(f"{self.jid}: the server closed the stream before {what}")
            if time.monotonic() >= end:
                raise ProbeError(f"{self.jid}: no {what} within {self.timeout:g} s")
            self._read(end)

    def _read(self, end: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return
        except OSError as e:
            raise ProbeError(f"{self.jid}: connection lost: {e}") from None
        if not data:
            self._reader.closed = True
            return
        self._pending.extend(self._reader.feed(data))


# -- the two transactions ------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _login(jid: str, cred: dict[str, object], timeout: float) -> tuple[Probe, int]:
    addresses = cred.get("c2s") or []
    if not isinstance(addresses, list) or not addresses:
        raise ProbeError("the server has no c2s listener to test through")
    probe = Probe(jid, timeout)
    started = time.monotonic()
    fingerprint = cred.get("certificate_sha256")
    probe.login(str(addresses[0]), str(cred["token"]), str(fingerprint) if fingerprint else None)
    return probe, _ms(time.monotonic() - started)


def run_im(
    a: str, b: str, creds: dict[str, dict[str, object]], timeout: float = 10.0
) -> dict[str, object]:
    """A logs in, B logs in, A sends B a message; the timings in ms. Raises ProbeError."""
    timings: dict[str, object] = {}
    pa = pb = None
    try:
        pa, timings["login_a_ms"] = _login(a, creds[a], timeout)
        pb, timings["login_b_ms"] = _login(b, creds[b], timeout)
        mark = "se-ctl-test-" + secrets.token_hex(6)
        started = time.monotonic()
        pa.send(
            f"<message to={quoteattr(pb.full_jid)} type='chat' id='{mark}'>"
            f"<body>{escape('se-ctl test im ' + mark)}</body>"
            "<no-store xmlns='urn:xmpp:hints'/></message>"
        )

        def arrived(el: ET.Element) -> bool:
            return el.tag == C + "message" and mark in (el.findtext(C + "body") or "")

        def bounced(el: ET.Element) -> bool:
            return el.tag == C + "message" and el.get("type") == "error"

        got = pb.wait_for(lambda e: arrived(e) or bounced(e), "the test message")
        if bounced(got):
            raise ProbeError(f"the message to {b} bounced with an error")
        timings["delivery_ms"] = _ms(time.monotonic() - started)
        return timings
    finally:
        for p in (pa, pb):
            if p is not None:
                p.close()


def run_presence(
    a: str, b: str, creds: dict[str, dict[str, object]], timeout: float = 10.0
) -> dict[str, object]:
    """A logs in, B logs in, A tells B its presence (away, then busy); B must see both changes.

    Directed presence (RFC 6121 §4.6) reaches B whether or not they are contacts, and A's
    contacts never see the test session come online."""
    timings: dict[str, object] = {}
    pa = pb = None
    try:
        pa, timings["login_a_ms"] = _login(a, creds[a], timeout)
        pb, timings["login_b_ms"] = _login(b, creds[b], timeout)
        for step, show in (("away", "away"), ("change", "dnd")):
            mark = "se-ctl-test-" + secrets.token_hex(6)
            started = time.monotonic()
            pa.send(
                f"<presence to={quoteattr(pb.full_jid)}><show>{show}</show>"
                f"<status>{mark}</status></presence>"
            )
            sender = pa.full_jid

            def seen(el: ET.Element, mark: str = mark, sender: str = sender) -> bool:
                return (
                    el.tag == C + "presence"
                    and el.get("from") == sender
                    and (el.findtext(C + "status") == mark or el.get("type") == "error")
                )

            got = pb.wait_for(seen, f"{a}'s presence ({show})")
            if got.get("type") == "error":
                raise ProbeError(f"{a}'s presence to {b} bounced with an error")
            if got.findtext(C + "show") != show:
                raise ProbeError(f"{b} saw {a} as {got.findtext(C + 'show')!r}, not {show!r}")
            timings[f"presence_{step}_ms"] = _ms(time.monotonic() - started)
        return timings
    finally:
        for p in (pa, pb):
            if p is not None:
                p.close()
