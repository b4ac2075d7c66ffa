"""A small XMPP client that logs in with SCRAM-*-PLUS, for the channel bindings slixmpp lacks.

Python's ssl module has no TLS exporter, so this client runs TLS through pyOpenSSL over memory
BIOs (the socket keeps its timeout) and computes both channel bindings the server offers:

- tls-exporter (RFC 9266): the TLS exporter with label "EXPORTER-Channel-Binding", 32 bytes;
- tls-server-end-point (RFC 5929 §4.1): a hash of the server certificate, with the certificate's
  signature hash, or SHA-256 when that is MD5 or SHA-1.

The SCRAM arithmetic (RFC 5802, RFC 7677) is a plain class, ScramClient, checked against the
RFC test vectors in test_login.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import socket
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"

HASHES = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256}


class ScramError(Exception):
    """The server's SCRAM messages do not check out (bad nonce, bad signature, server error)."""


def _saslname(name: str) -> str:
    # RFC 5802 §5.1: ',' and '=' in a username are escaped
    return name.replace("=", "=3D").replace(",", "=2C")


def _attrs(msg: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in msg.decode("utf-8").split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"malformed SCRAM attribute {part!r}")
        out[key] = value
    return out


@dataclass
class ScramClient:
    """The client side of one SCRAM exchange (RFC 5802 §3, §5), sans I/O.

    gs2_flag: "n" (no binding), "y" (client could bind but thinks the server cannot), or
    "p" (binding of type cb_type with the bytes cb_data).
    """

    hash_name: str
    username: str
    password: str
    gs2_flag: str = "n"
    cb_type: str = ""
    cb_data: bytes = b""
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    server_signature: bytes = b""
    _first_bare: str = ""

    @property
    def mechanism(self) -> str:
        return f"SCRAM-{self.hash_name}" + ("-PLUS" if self.gs2_flag == "p" else "")

    @property
    def gs2_header(self) -> str:
        flag = f"p={self.cb_type}" if self.gs2_flag == "p" else self.gs2_flag
        return f"{flag},,"

    def client_first(self) -> bytes:
        self._first_bare = f"n={_saslname(self.username)},r={self.nonce}"
        return (self.gs2_header + self._first_bare).encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        attrs = _attrs(server_first)
        if "e" in attrs:
            raise ScramError(f"server error {attrs['e']}")
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce) or len(nonce) <= len(self.nonce):
            raise ScramError("server nonce does not extend the client nonce")
        digest = HASHES[self.hash_name]
        salted = hashlib.pbkdf2_hmac(digest().name, self.password.encode("utf-8"), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", digest)
        stored_key = digest(client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode("utf-8") + self.cb_data).decode()
        final_bare = f"c={cbind},r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode('utf-8')},{final_bare}".encode()
        signature = hmac.digest(stored_key, auth_message, digest)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", digest)
        self.server_signature = hmac.digest(server_key, auth_message, digest)
        return f"{final_bare},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, server_final: bytes) -> None:
        attrs = _attrs(server_final)
        if "e" in attrs:
            raise ScramError(f"server error {attrs['e']}")
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self.server_signature):
            raise ScramError("server signature does not match: the server does not know the key")


# -- TLS over pyOpenSSL ------------------------------------------------------------------------


class Channel:
    """Bytes to and from the server over a plain socket; TLS is layered on with start_tls()."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.tls: SSL.Connection | None = None

    def start_tls(self, server_name: str) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *_: True)  # the test server's cert is self-signed
        conn = SSL.Connection(ctx, None)  # memory BIOs: the socket keeps its timeout
        conn.set_tlsext_host_name(server_name.encode("ascii"))
        conn.set_connect_state()
        self.tls = conn
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                self._flush()
                self._feed()
        self._flush()

    def _flush(self) -> None:
        assert self.tls is not None
        while True:
            try:
                data = self.tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            self.sock.sendall(data)

    def _feed(self) -> None:
        assert self.tls is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection during TLS")
        self.tls.bio_write(data)

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        self.tls.sendall(data)
        self._flush()

    def recv(self) -> bytes:
        """Some bytes from the server; b"" once it has closed."""
        if self.tls is None:
            return self.sock.recv(65536)
        while True:
            try:
                return self.tls.recv(65536)
            except SSL.WantReadError:
                self._flush()
                try:
                    self._feed()
                except ConnectionError:
                    return b""
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""

    def tls_exporter(self) -> bytes:
        """RFC 9266 §2: 32 bytes of the exporter labelled EXPORTER-Channel-Binding, no context."""
        assert self.tls is not None
        return self.tls.export_keying_material(b"EXPORTER-Channel-Binding", 32)

    def tls_server_end_point(self) -> bytes:
        """RFC 5929 §4.1: the server certificate hashed with its signature's hash algorithm,
        SHA-256 in place of MD5 or SHA-1."""
        assert self.tls is not None
        cert = self.tls.get_peer_certificate(as_cryptography=True)
        assert cert is not None
        algo = cert.signature_hash_algorithm
        if algo is None or isinstance(algo, hashes.MD5 | hashes.SHA1):
            algo = hashes.SHA256()
        h = hashes.Hash(algo)
        h.update(cert.public_bytes(serialization.Encoding.DER))
        return h.finalize()

    @property
    def tls_version(self) -> str:
        return self.tls.get_protocol_version_name() if self.tls else ""

    def close(self) -> None:
        with contextlib.suppress(SSL.Error, OSError):
            if self.tls is not None:
                self.tls.shutdown()
                self._flush()
        self.sock.close()


# -- the XMPP side -----------------------------------------------------------------------------


@dataclass
class LoginResult:
    success: bool
    condition: str = ""  # the SASL failure condition (RFC 6120 §6.5) when not success
    features: str = ""  # the stream features after TLS, as text
    jid: str = ""  # the bound full JID after success
    tls_version: str = ""


class XmppConnection:
    """Just enough XMPP to reach SASL: stream headers, STARTTLS or direct TLS, bind."""

    def __init__(self, host: str, port: int, domain: str, direct_tls: bool, timeout: float = 15):
        self.domain = domain
        sock = socket.create_connection((host, port), timeout=timeout)
        self.ch = Channel(sock)
        self.buf = b""
        if direct_tls:
            self.ch.start_tls(domain)
        self.features = self._open_stream()
        if not direct_tls:
            if "<starttls" not in self.features:
                raise AssertionError(f"no STARTTLS offered: {self.features!r}")
            self.ch.send(f"<starttls xmlns='{TLS_NS}'/>".encode())
            self._expect(rb"<proceed[^>]*/>|<proceed[^>]*>\s*</proceed>")
            self.buf = b""
            self.ch.start_tls(domain)
            self.features = self._open_stream()

    def _open_stream(self) -> str:
        self.ch.send(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
            f"xmlns:stream='{STREAM_NS}' version='1.0'>".encode()
        )
        got = self._expect(rb"<stream:features.*?</stream:features>|<stream:features[^>]*/>")
        return got.decode("utf-8")

    def _expect(self, pattern: bytes) -> bytes:
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end() :]
                return m.group(0)
            if b"</stream:error>" in self.buf:
                raise ConnectionError(f"stream error: {self.buf[-400:]!r}")
            chunk = self.ch.recv()
            if not chunk:
                raise ConnectionError(f"closed while waiting for {pattern!r}: {self.buf[-400:]!r}")
            self.buf += chunk

    def sasl_step(self, payload: bytes | None, mechanism: str | None = None) -> tuple[str, bytes]:
        """Send <auth/> (with mechanism) or <response/>; returns (kind, decoded payload)."""
        body = base64.b64encode(payload).decode() if payload else "="
        if mechanism:
            self.ch.send(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{body}</auth>".encode())
        else:
            self.ch.send(f"<response xmlns='{SASL_NS}'>{body}</response>".encode())
        got = self._expect(
            rb"<(challenge|success|failure)\b[^>]*/>|<(challenge|success|failure)\b[^>]*>.*?</\2>"
        )
        kind = re.match(rb"<(\w+)", got).group(1).decode()  # type: ignore[union-attr]
        if kind == "failure":
            cond = re.search(rb"<([a-z-]+)(?:\s[^>]*)?/>", got[len(b"<failure") :])
            return kind, (cond.group(1) if cond else b"")
        inner = re.sub(rb"^<[^>]*>|</\w+>$", b"", got) if not got.endswith(b"/>") else b""
        inner = inner.strip()
        return kind, (b"" if inner in (b"", b"=") else base64.b64decode(inner))

    def bind(self, resource: str) -> str:
        self.buf = b""
        feats = self._open_stream()
        if "urn:ietf:params:xml:ns:xmpp-bind" not in feats:
            raise AssertionError(f"no bind offered after SASL: {feats!r}")
        self.ch.send(
            f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'>"
            f"<resource>{resource}</resource></bind></iq>".encode()
        )
        got = self._expect(rb"<iq\b.*?</iq>").decode()
        m = re.search(r"<jid>([^<]+)</jid>", got)
        if ("type='result'" not in got and 'type="result"' not in got) or not m:
            raise AssertionError(f"bind failed: {got}")
        return m.group(1)

    def ping(self) -> bool:
        self.ch.send(b"<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
        got = self._expect(rb"<iq\b[^>]*(?:/>|>.*?</iq>)").decode()
        return "result" in got

    def close(self) -> None:
        with contextlib.suppress(OSError, SSL.Error):
            self.ch.send(b"</stream:stream>")
        self.ch.close()


def scram_plus_login(
    host: str,
    port: int,
    domain: str,
    username: str,
    password: str,
    hash_name: str = "SHA-256",
    cb_type: str = "tls-exporter",
    direct_tls: bool = False,
    gs2_flag: str = "p",
    tamper: bool = False,
    claim_type: str | None = None,
    resource: str = "plus",
) -> LoginResult:
    """Log in with SCRAM-<hash>[-PLUS]; tamper flips a bit of the binding data,
    claim_type names a different binding type in the GS2 header than the data's."""
    conn = XmppConnection(host, port, domain, direct_tls)
    try:
        if cb_type == "tls-exporter":
            cb = conn.ch.tls_exporter()
        elif cb_type == "tls-server-end-point":
            cb = conn.ch.tls_server_end_point()
        else:
            cb = b""
        if tamper:
            cb = bytes([cb[0] ^ 0x01]) + cb[1:]
        scram = ScramClient(
            hash_name,
            username,
            password,
            gs2_flag=gs2_flag,
            cb_type=claim_type or cb_type,
            cb_data=cb if gs2_flag == "p" else b"",
        )
        result = LoginResult(False, features=conn.features, tls_version=conn.ch.tls_version)
        kind, data = conn.sasl_step(scram.client_first(), scram.mechanism)
        if kind == "failure":
            result.condition = data.decode()
            return result
        if kind != "challenge":
            raise AssertionError(f"expected a SCRAM challenge, got <{kind}/>")
        kind, data = conn.sasl_step(scram.client_final(data))
        if kind == "failure":
            result.condition = data.decode()
            return result
        if kind == "challenge":  # RFC 6120 §6.4.6: server-final may come as a challenge
            scram.check_server_final(data)
            kind, data = conn.sasl_step(None)
            if kind != "success":
                result.condition = data.decode()
                return result
        else:
            scram.check_server_final(data)
        result.success = True
        result.jid = conn.bind(resource)
        if not conn.ping():
            raise AssertionError("logged-in session does not answer a ping")
        return result
    finally:
        conn.close()
