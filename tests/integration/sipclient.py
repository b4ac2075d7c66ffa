"""A small blocking SIP user agent for the tests: UDP, TCP or TLS, digest MD5 or SHA-256.

Debian's sipp speaks neither TLS nor SHA-256 digest; this client covers those paths. The
digest answer is computed here from the password (RFC 7616 §3.4.1), independently of the
server's code.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import socket
import ssl
import time
from typing import Any

from standard_edition.sip.framing import KeepAlive, StreamFramer, parse_datagram
from standard_edition.sip.message import (
    Headers,
    Request,
    Response,
    make_response,
    parse_auth,
    serialize,
)

from .rawxmpp import insecure_context

_counter = itertools.count(1)


def digest_answer(
    challenge: str, user: str, password: str, method: str, uri: str, nc: int = 1
) -> tuple[str, str]:
    """(algorithm, credentials header value) for one Digest challenge."""
    ch = parse_auth(challenge)
    realm = ch.get("realm") or ""
    nonce = ch.get("nonce") or ""
    alg = (ch.get("algorithm") or "MD5").upper()
    h = hashlib.sha256 if alg == "SHA-256" else hashlib.md5

    def hx(s: str) -> str:
        return h(s.encode()).hexdigest()

    ha1 = hx(f"{user}:{realm}:{password}")
    ha2 = hx(f"{method}:{uri}")
    cnonce = secrets.token_hex(8)
    ncs = f"{nc:08x}"
    resp = hx(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    value = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{resp}", algorithm={ch.get("algorithm") or "MD5"}, qop=auth, '
        f'nc={ncs}, cnonce="{cnonce}"'
    )
    return alg, value


class SipClient:
    def __init__(
        self,
        port: int,
        user: str,
        password: str,
        domain: str = "example.test",
        transport: str = "udp",
        prefer: str = "MD5",
        *,
        host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None,
    ) -> None:
        """host: the server's address (an edge listener's, for a remote user); context: the
        TLS context to use (e.g. one with a client certificate), else one that trusts any."""
        self.user = user
        self.password = password
        self.domain = domain
        self.transport = transport.upper()
        self.prefer = prefer.upper()
        self.server = (host, port)
        if self.transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            raw = socket.create_connection(self.server, timeout=5)
            if self.transport == "TLS":
                tls = context or insecure_context()
                raw = tls.wrap_socket(raw, server_hostname=domain)
            self.sock = raw
        self.framer = StreamFramer()
        self.local = self.sock.getsockname()[:2]
        self.call_id = f"{secrets.token_hex(8)}@test"
        self.tag = secrets.token_hex(4)
        self.cseq = next(_counter) * 100
        self.queue: list[Request | Response] = []
        self.algorithms_seen: list[str] = []
        self.pending_requests: list[Request] = []

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        t = f";transport={self.transport.lower()}" if self.transport != "UDP" else ""
        return f"<sip:{self.user}@{self.local[0]}:{self.local[1]}{t}>"

    def close(self) -> None:
        self.sock.close()

    # -- wire --------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def send(self, msg: Request | Response) -> None:
        self.send_raw(serialize(msg))

    def recv(self, timeout: float = 5.0) -> Request | Response:
        if self.queue:
            return self.queue.pop(0)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no SIP message")
            self.sock.settimeout(left)
            if self.transport == "UDP":
                data, _ = self.sock.recvfrom(65535)
                msg = parse_datagram(data)
                if isinstance(msg, KeepAlive):
                    continue
                return msg
            data = self.sock.recv(65535)
            if not data:
                raise ConnectionError("server closed the connection")
            for ev in self.framer.feed(data):
                if isinstance(ev, Request | Response):
                    self.queue.append(ev)
            if self.queue:
                return self.queue.pop(0)

    # -- requests ----------------------------------------------------------------------------

    def build(
        self,
        method: str,
        ruri: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        to: str | None = None,
        to_tag: str | None = None,
        call_id: str | None = None,
        contact: bool = True,
    ) -> Request:
        self.cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        via = f"SIP/2.0/{self.transport} {self.local[0]}:{self.local[1]};branch={branch};rport"
        to_value = f"<{to or ruri or self.aor}>" + (f";tag={to_tag}" if to_tag else "")
        items = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self.tag}"),
            ("To", to_value),
            ("Call-ID", call_id or self.call_id),
            ("CSeq", f"{self.cseq} {method}"),
        ]
        if contact:
            items.append(("Contact", self.contact))
        items += headers or []
        return Request(method, ruri or f"sip:{self.domain}", Headers(items), body)

    def request(
        self,
        method: str,
        ruri: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        auth: bool = True,
        password: str | None = None,
        timeout: float = 10.0,
        **kw: Any,
    ) -> Response:
        """Send a request, answer a digest challenge once, return the final response."""
        req = self.build(method, ruri, headers, body, **kw)
        resp = self._transact(req, timeout)
        if auth and resp.status in (401, 407):
            name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            challenges = resp.headers.get_all(name)
            self.algorithms_seen = [
                (parse_auth(c).get("algorithm") or "MD5").upper() for c in challenges
            ]
            pick = next(
                (
                    c
                    for c in challenges
                    if (parse_auth(c).get("algorithm") or "MD5").upper() == self.prefer
                ),
                challenges[0],
            )
            _, value = digest_answer(pick, self.user, password or self.password, method, req.uri)
            cred = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            req2 = self.build(method, ruri, [*(headers or []), (cred, value)], body, **kw)
            resp = self._transact(req2, timeout)
        return resp

    def _transact(self, req: Request, timeout: float) -> Response:
        self.send(req)
        end = time.monotonic() + timeout
        branch = req.top_via.branch
        retransmit = time.monotonic() + 0.5
        while True:
            left = (
                min(end, retransmit) - time.monotonic()
                if self.transport == "UDP"
                else end - time.monotonic()
            )
            try:
                msg = self.recv(max(0.01, left))
            except TimeoutError:
                if time.monotonic() >= end:
                    raise TimeoutError(f"no answer to {req.method}") from None
                self.send(req)  # RFC 3261 Timer E, roughly
                retransmit = time.monotonic() + 1.0
                continue
            if isinstance(msg, Response) and msg.top_via.branch == branch:
                if msg.status >= 200:
                    return msg
                continue
            if isinstance(msg, Request):
                # requests from the server (NOTIFY, MESSAGE) wait for expect()
                self.pending_requests.append(msg)

    def expect(self, method: str, timeout: float = 10.0, answer: int = 200) -> Request:
        """The next request of `method` from the server, answered with `answer`."""
        end = time.monotonic() + timeout
        while True:
            for i, r in enumerate(self.pending_requests):
                if r.method == method:
                    del self.pending_requests[i]
                    self.answer(r, answer)
                    return r
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} arrived")
            msg = self.recv(left)
            if isinstance(msg, Request):
                self.pending_requests.append(msg)

    def answer(self, req: Request, status: int = 200) -> None:
        self.send(make_response(req, status, to_tag=secrets.token_hex(4)))

    def register(self, expires: int = 300, **kw: Any) -> Response:
        kw.setdefault("to", self.aor)
        return self.request("REGISTER", f"sip:{self.domain}", [("Expires", str(expires))], **kw)
