"""XMPP server-to-server streams (RFC 6120, jabber:server): federation with other domains.

Both directions are thin Twisted shells over the sans-I/O `xml.StreamParser` and
`dialback.py`. A stream is always TLS-protected first (STARTTLS is required both ways); the
originating server is then authenticated by SASL EXTERNAL when its certificate is valid for its
domain (a public CA, or the certificate the admin pinned with `se-ctl federation trust`), else
by XEP-0220 dialback with keys from a per-boot secret (XEP-0185). Streams are unidirectional:
we send on streams we opened and receive on streams the peer opened.

`S2SService` is the core's `RemoteDelivery` (core/remote.py): it finds the peer (the static
[federation.hosts] map, else DNS SRV _xmpp-server._tcp, else the domain itself on 5269),
queues stanzas while the stream comes up, and bounces messages with remote-server-not-found or
remote-server-timeout when it cannot. The federation policy is checked before a connection is
opened or accepted: a refused domain gets a stream error and nothing else.

Outgoing streams are per pair of domains (RFC 6120 §4.1): stanzas from our conference service
(conference.<domain>) leave on a stream of their own, authenticated for that name. A stream
with no stanza for [federation] idle_timeout seconds is closed with </stream:stream> (either
direction); the next stanza opens a new one and waits in the queue meanwhile. Whitespace
keepalives are accepted but do not count as traffic. A certificate reload (SIGHUP) reaches the
streams opened after it, as our server certificate and as our client certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import random
import secrets
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.python import failure, log
from zope.interface import implementer

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, Undeliverable
from standard_edition.core.subscription import Kind
from standard_edition.edge.limits import EdgeGuard, TokenBucket
from standard_edition.xmpp import dialback
from standard_edition.xmpp.dialback import DB, NS_DB, NS_DB_FEATURE
from standard_edition.xmpp.stanzas import (
    C,
    StanzaError,
    error_reply,
    local_name,
    message_from_stanza,
    message_stanza,
    presence_from_stanza,
    presence_stanza,
)
from standard_edition.xmpp.xml import (
    NS_CLIENT,
    NS_SERVER,
    NS_STREAMS,
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamError,
    StreamOpened,
    StreamParser,
    serialize,
    stream_error,
)

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
TLS = "{" + NS_TLS + "}"
SASL = "{" + NS_SASL + "}"
_CLIENT_PREFIX = "{" + NS_CLIENT + "}"
FEATURES = "{" + NS_STREAMS + "}features"
STREAM_ERROR = "{" + NS_STREAMS + "}error"
DEFAULT_PORT = 5269
MAX_QUEUE = 1000  # stanzas waiting for one domain's stream
AUTH_TIMEOUT = 60.0  # seconds an inbound stream may stay unauthenticated
CLOSE_GRACE = 10.0  # seconds we wait for the peer's </stream:stream> after sending ours
STANZAS = frozenset({"message", "presence", "iq"})
MUC_USER_X = "{http://jabber.org/protocol/muc#user}x"


def s2s_header(from_: str, to: str | None, stream_id: str | None) -> bytes:
    """RFC 6120 §4.7 for servers, with the dialback namespace declared (XEP-0220 §2.1)."""
    attrs = [f"from='{_esc(from_)}'"]
    if to:
        attrs.append(f"to='{_esc(to)}'")
    if stream_id:
        attrs.append(f"id='{stream_id}'")
    return (
        "<?xml version='1.0'?><stream:stream "
        + " ".join(attrs)
        + f" version='1.0' xml:lang='en' xmlns='{NS_SERVER}' xmlns:db='{NS_DB}'"
        + f" xmlns:stream='{NS_STREAMS}'>"
    ).encode()


def _out(el: ET.Element) -> bytes:
    """A stanza of ours for a jabber:server stream. Written as if its parent were in
    jabber:client, a stanza in that namespace (and its jabber:client children) carries no
    xmlns, so it is read in the stream's own jabber:server; a jabber:client stanza wrapped in
    another namespace (a forwarded message) keeps its namespace, as XEP-0297 wants."""
    return serialize(el, NS_CLIENT if el.tag.startswith(_CLIENT_PREFIX) else NS_SERVER)


def _esc(v: str) -> str:
    return v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")


def _db(name: str, **attrs: str) -> bytes:
    """A dialback element with the db: prefix the stream header declared; values escaped."""
    text = _esc(attrs.pop("text", ""))
    a = " ".join(f"{k}='{_esc(v)}'" for k, v in attrs.items())
    return f"<db:{name} {a}>{text}</db:{name}>".encode() if text else f"<db:{name} {a}/>".encode()


# -- TLS ---------------------------------------------------------------------------------------


def _accept_any(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
    # identity is checked after the handshake (dialback.certificate_identity), not by OpenSSL
    return True


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Our certificate for inbound STARTTLS, asking the peer for its certificate (EXTERNAL)."""

    def __init__(self, options: Any) -> None:
        self._ctx: SSL.Context = options.getContext()
        self._ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
        self._ctx.set_session_id(b"se-appliance-s2s")

    def getContext(self) -> SSL.Context:
        return self._ctx

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """Our certificate as the client's, with SNI naming the peer domain."""

    def __init__(self, options: Any, domain: str) -> None:
        self._ctx: SSL.Context = options.getContext()
        self.domain = domain

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        conn.set_tlsext_host_name(self.domain.encode("idna"))
        conn.set_connect_state()
        return conn


def _peer_chain(transport: Any) -> list[bytes]:
    handle = transport.getHandle() if hasattr(transport, "getHandle") else None
    if not isinstance(handle, SSL.Connection):
        return []
    chain = handle.get_peer_cert_chain(as_cryptography=True) or []
    if not chain:
        cert = handle.get_peer_certificate(as_cryptography=True)
        chain = [cert] if cert is not None else []
    from cryptography.hazmat.primitives import serialization

    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


def _leaf_sha256(transport: Any) -> str | None:
    chain = _peer_chain(transport)
    return hashlib.sha256(chain[0]).hexdigest() if chain else None


def _ours(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def address_of(host: str, resolver: Any) -> Deferred[str]:
    """The address to connect to for `host`: itself when it is one; else its A record from
    the configured resolver ([federation] dns); without one, the name (the system resolves)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if resolver is not None:
            from twisted.names import dns

            def first(answer: Any) -> str:
                found = [r.payload.dottedQuad() for r in answer[0] if r.type == dns.A]
                if not found:
                    raise LookupError(f"no A record for {host}")
                return str(found[0])

            d: Deferred[Any] = resolver.lookupAddress(host)
            return d.addCallback(first)
    return succeed(host)


# -- the service ---------------------------------------------------------------------------------


@dataclass
class _Pending:
    data: bytes
    done: Deferred[None] | None


class S2SService:
    """Federation over XMPP: the streams, the queues and the core's RemoteDelivery."""

    def __init__(
        self,
        reactor: Any,
        router: Any,
        domain: str,
        policy: Any,
        tls_options: Callable[[], Any],
        hosts: dict[str, Any],
        *,
        connect_timeout: float = 20.0,
        guard: EdgeGuard | None = None,
        max_stanza_size: int = 262_144,
        bind_host: str | None = None,
        resolver: Any = None,
        idle_timeout: float = 0,
    ) -> None:
        self.reactor = reactor
        self.router = router
        self.domain = domain
        self.policy = policy
        # answers iq gets for a local user's bare address, as (iq, sender, user) -> reply,
        # a Deferred reply, or None when not its namespace (xmpp/vcard.py: XEP-0054 cards)
        self.account_iq: Callable[[ET.Element, JID, str], Any] | None = None
        # told of each available (extension elements) or unavailable (None) presence from a
        # remote full address to a local user (pep/service.py: a partner client's caps)
        self.presence_seen: list[Callable[[JID, JID, tuple[ET.Element, ...] | None], None]] = []
        # told of each presence one of our endpoints sends to a remote address, as (sender,
        # to, presence or None), and of each room presence passed through to one of our
        # clients, as (room occupant, to, stanza) (xmpp/partner_rooms.py: partners' rooms)
        self.presence_sent: list[Callable[[JID, JID, Presence | None], None]] = []
        self.room_presence_seen: list[Callable[[JID, JID, ET.Element], None]] = []
        # offered each iq result or error from a remote address to the domain itself, as
        # (iq, sender) -> True when it answered a query of theirs (pep/service.py: caps)
        self.iq_results: list[Callable[[ET.Element, JID], bool]] = []
        self.tls_options = tls_options  # a fresh CertificateOptions of our pair
        self.hosts = hosts
        self.connect_timeout = connect_timeout
        self.guard = guard
        self.max_stanza_size = max_stanza_size
        self.bind_host = bind_host
        self.resolver = resolver
        self.idle_timeout = (
            idle_timeout  # seconds without a stanza before a stream closes; 0: never
        )
        self.secret = secrets.token_bytes(32)  # XEP-0185: per boot, never stored
        # the names streams are opened from and accepted for: the domain, and services of ours
        # that federate themselves (conference.<domain>, added by xmpp/muc_federation.py)
        self.local_domains: set[str] = {domain}
        # (our domain, theirs) -> the outgoing stream between them
        self.outgoing: dict[tuple[str, str], Outbound] = {}
        self.inbound: set[Inbound] = set()
        # the peer's certificate (SHA-256 of its DER) last seen per domain and direction
        self.peer_certificates: dict[str, dict[str, str]] = {}
        # stanzas for our conference service (xmpp/muc_federation.py), when rooms federate
        self.rooms: Any = None
        # which federation reaches a domain (edge/routes.py), when SIP federation exists too
        self.routes: Any = None
        self.counters = {
            "s2s_in_streams": 0,
            "s2s_out_streams": 0,
            "s2s_refused": 0,
            "s2s_dialback": 0,
            "s2s_external": 0,
            "s2s_bounced": 0,
            "s2s_idle_closed": 0,
            "s2s_policy_closed": 0,
            "s2s_rate_limited": 0,
        }
        policy.on_refused.append(self._policy_changed)
        self._server_tls: ServerTLS | None = None
        self._client_options: Any = None

    def client_options(self) -> Any:
        if self._client_options is None:
            self._client_options = self.tls_options()
        return self._client_options

    def server_tls(self) -> ServerTLS:
        if self._server_tls is None:
            self._server_tls = ServerTLS(self.tls_options())
        return self._server_tls

    def set_certificate(self, server_options: Any, client_options: Any) -> None:
        """A reloaded certificate: streams opened from now on use it, both ways; open ones
        keep theirs. The options are built off the reactor (they read the PEM files)."""
        self._server_tls = ServerTLS(server_options)
        self._client_options = client_options

    # -- policy ------------------------------------------------------------------------------

    def allowed(self, domain: str) -> bool:
        return not _ours(domain, self.domain) and self.policy.domain_allowed(domain)

    def is_local(self, domain: str) -> bool:
        """A name this server answers s2s streams for."""
        return domain in self.local_domains

    def _policy_changed(self, _: str) -> None:
        """A domain may no longer be allowed: its streams end, its queue bounces."""
        for (_local, domain), out in list(self.outgoing.items()):
            if not self.allowed(domain):
                self.counters["s2s_policy_closed"] += 1
                log.msg(f"s2s: closing the stream to {domain}: federation is not allowed")
                out.abandon(
                    "remote-server-not-found",
                    "federation with it is not allowed",
                    stream_error="policy-violation",
                )
        for stream in list(self.inbound):
            refused = sorted(d for d in stream.authenticated if not self.allowed(d))
            if refused:
                self.counters["s2s_policy_closed"] += 1
                log.msg(f"s2s: closing the stream from {', '.join(refused)}: not allowed")
                stream.stream_error("policy-violation", "federation with you is not allowed")

    # -- RemoteDelivery ----------------------------------------------------------------------

    def send_message(self, msg: Message) -> Deferred[None]:
        el = message_stanza(msg, msg.to, self.domain)
        return self.send(msg.to.domain, el, want_result=True)

    def send_presence(self, sender: JID, to: JID, presence: Presence | None) -> None:
        self.send(to.domain, presence_stanza(sender, to, presence))
        for sent in self.presence_sent:
            sent(sender, to, presence)

    def send_subscription(self, sender: JID, to: JID, kind: Kind) -> None:
        el = ET.Element(C + "presence", {"from": str(sender), "to": str(to), "type": kind.value})
        self.send(to.domain, el)

    def send_probe(self, sender: JID, to: JID) -> None:
        el = ET.Element(C + "presence", {"from": str(sender), "to": str(to), "type": "probe"})
        self.send(to.domain, el)

    def forward_iq(self, c2s: Any, el: ET.Element, to: JID) -> None:
        """An iq from a local client to another domain (disco, vCard, ping of a contact)."""
        user = c2s.jid.local if c2s.jid is not None else None
        if not self.router.may_federate(user, to.domain):
            if el.get("type") in ("get", "set"):
                c2s.send_stanza(error_reply(el, "remote-server-not-found"))
            return
        if self.routes is not None:
            # DESIGN §7: a partner reached over SIP federation has no XMPP server to ask
            d = self.routes.decide(to.domain)
            d.addCallback(self._forward_iq_by, c2s, el, to)
            d.addErrback(log.err, f"s2s: iq to {to}")
            return
        self._forward_iq(c2s, el, to)

    def _forward_iq_by(self, route: str, c2s: Any, el: ET.Element, to: JID) -> None:
        if route == "xmpp":
            self._forward_iq(c2s, el, to)
        elif el.get("type") in ("get", "set"):
            c2s.send_stanza(
                error_reply(el, "service-unavailable", f"{to.domain} is reached over SIP")
            )

    def _forward_iq(self, c2s: Any, el: ET.Element, to: JID) -> None:
        d = self.send(to.domain, el, want_result=True)

        def bounced(f: failure.Failure) -> None:
            if el.get("type") in ("get", "set"):
                cond = f.value.condition if f.check(Undeliverable) else "remote-server-not-found"
                c2s.send_stanza(error_reply(el, cond))

        d.addErrback(bounced)

    def send(self, domain: str, el: ET.Element, want_result: bool = False) -> Deferred[None]:
        """Queue or write one stanza to `domain`; the Deferred fires when it is written.
        It leaves on the stream from the domain of its sender (ours or one of our services)."""
        if not self.allowed(domain):
            return fail(Undeliverable("remote-server-not-found", f"no route to {domain}"))
        out = self._stream(self._local_of(el), domain)
        d: Deferred[None] | None = Deferred() if want_result else None
        out.queue(_out(el), d)
        if d is None:
            return succeed(None)
        return d

    def _local_of(self, el: ET.Element) -> str:
        sender = el.get("from", "")
        host = sender.split("/", 1)[0].rsplit("@", 1)[-1].lower()
        return host if host in self.local_domains else self.domain

    def _stream(self, local: str, domain: str) -> Outbound:
        out = self.outgoing.get((local, domain))
        if out is None or out.finished:
            out = self.outgoing[(local, domain)] = Outbound(self, domain, local)
            out.start()
        return out

    # -- dialback verification (we are the receiving server) ---------------------------------

    def verify(
        self, originating: str, stream_id: str, key: str, receiving: str | None = None
    ) -> Deferred[bool]:
        """XEP-0220 §2.3: ask `originating`'s authoritative server whether the key is its own
        (made for `receiving`, one of our names), over our domain's stream to it."""
        out = self._stream(self.domain, originating)
        return out.ask_verify(stream_id, key, receiving or self.domain)

    # -- what arrives --------------------------------------------------------------------------

    def incoming(self, stream: Inbound, el: ET.Element) -> None:
        """A stanza on an authenticated inbound stream, addresses already checked."""
        el = dialback.to_client(el)
        kind = local_name(el.tag)
        sender = parse_jid(el.get("from", ""))
        to = parse_jid(el.get("to", ""))
        try:
            if to.domain != self.domain and self.rooms is not None and self.rooms.handles(to):
                self.rooms.incoming(el, sender, to)
            elif self._passed_through(el, sender, to):
                pass
            elif kind == "message":
                self._message_in(el, sender, to)
            elif kind == "presence":
                self._presence_in(el, sender, to)
            elif kind == "iq":
                self._iq_in(el, sender, to)
        except StanzaError as e:
            self._bounce(el, e.condition, e.text)
        except Undeliverable as e:
            self._bounce(el, e.condition, e.text)

    def _passed_through(self, el: ET.Element, sender: JID, to: JID) -> bool:
        """An error presence for one of our clients (a partner's room refused a join), or a
        room's unavailable presence with its XEP-0045 status codes (a leave, a kick), goes to
        that client as it is; the core's presence value has no place for either."""
        if local_name(el.tag) != "presence" or to.resource is None:
            return False
        ptype = el.get("type")
        if ptype == "unavailable" and el.find(MUC_USER_X) is not None:
            if to.local is None or not self.router.may_federate(to.local, sender.domain):
                return True  # nothing for a user who may not federate
        elif ptype != "error":
            return False
        for seen in self.room_presence_seen:
            seen(sender, to, el)
        target = self.router.sessions.get(to) if to.domain == self.domain else None
        if target is not None and hasattr(target, "deliver_stanza"):
            target.deliver_stanza(el)
        return True

    def _bounce(self, el: ET.Element, condition: str, text: str = "") -> None:
        if el.get("type") == "error":
            return  # RFC 6120 §8.3.1: never an error about an error
        self.counters["s2s_bounced"] += 1
        reply = error_reply(el, condition, text)
        try:
            to = parse_jid(reply.get("to", ""))
        except InvalidJID:
            return
        self.send(to.domain, reply)

    def _message_in(self, el: ET.Element, sender: JID, to: JID) -> None:
        if to.local is None or to.domain != self.domain:
            raise StanzaError("service-unavailable")
        msg = message_from_stanza(el, sender, to)
        d = self.router.remote_message(msg)

        def failed(f: failure.Failure) -> None:
            if f.check(Undeliverable):
                self._bounce(el, f.value.condition, f.value.text)
            else:
                log.err(f, f"s2s: message from {sender} not delivered")
                self._bounce(el, "internal-server-error")

        d.addErrback(failed)

    def _presence_in(self, el: ET.Element, sender: JID, to: JID) -> None:
        ptype = el.get("type")
        if to.domain != self.domain or to.local is None:
            return
        if ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.router.remote_subscription(sender, to, Kind(ptype))
        elif ptype == "probe":
            self.router.remote_probe(sender, to)
        elif ptype is None:
            presence = presence_from_stanza(el, self.reactor.seconds())
            self.router.remote_presence(sender, to, presence)
            for seen in self.presence_seen:
                seen(sender, to, presence.payload)
        elif ptype == "unavailable":
            self.router.remote_presence(sender, to, None)
            for seen in self.presence_seen:
                seen(sender, to, None)

    def _iq_in(self, el: ET.Element, sender: JID, to: JID) -> None:
        itype = el.get("type")
        if to.domain != self.domain:
            raise StanzaError("service-unavailable")
        if to.local is not None and not self.router.may_federate(to.local, sender.domain):
            raise StanzaError("service-unavailable")
        if to.resource is not None:
            target = self.router.sessions.get(to)
            if target is not None and hasattr(target, "deliver_stanza"):
                target.deliver_stanza(el)
                return
        if itype in ("result", "error"):
            for answered in self.iq_results if to.local is None else ():
                if answered(el, sender):
                    break
            return
        if to.local is None and el.find("{urn:xmpp:ping}ping") is not None:
            self.send(sender.domain, ET.Element(C + "iq", _answer(el)))  # XEP-0199
            return
        if to.local is None and el.find("{http://jabber.org/protocol/disco#info}query") is not None:
            reply = ET.Element(C + "iq", _answer(el))
            q = ET.SubElement(reply, "{http://jabber.org/protocol/disco#info}query")
            ET.SubElement(
                q,
                "{http://jabber.org/protocol/disco#info}identity",
                {"category": "server", "type": "im", "name": "SE Appliance"},
            )
            for var in ("http://jabber.org/protocol/disco#info", "urn:xmpp:ping"):
                ET.SubElement(q, "{http://jabber.org/protocol/disco#info}feature", {"var": var})
            self.send(sender.domain, reply)
            return
        user = self.router.local_user(to) if to.resource is None else None
        answer = (
            None if user is None or self.account_iq is None else self.account_iq(el, sender, user)
        )
        if answer is not None:
            d = answer if isinstance(answer, Deferred) else succeed(answer)
            d.addCallback(lambda reply: self.send(sender.domain, reply))
            d.addErrback(self._account_iq_failed, el, sender)
            return
        raise StanzaError("service-unavailable")

    def _account_iq_failed(self, f: failure.Failure, el: ET.Element, sender: JID) -> None:
        log.err(f, f"s2s: iq from {sender} not answered")
        self._bounce(el, "internal-server-error")

    # -- finding the peer ----------------------------------------------------------------------

    def resolve(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        """[federation.hosts] first (a partner's entry serves its subdomains too, e.g. its
        conference service), then SRV _xmpp-server._tcp (RFC 6120 §3.2.1), then the domain's
        own address on 5269 (§3.2.2)."""
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            entry = self.hosts.get(".".join(labels[i:]), {}).get("xmpp")
            if entry is not None:
                return succeed([(entry.host, entry.port)])
        from twisted.names import client, dns, error

        resolver = self.resolver or client

        def srv(answer: Any) -> list[tuple[str, int]]:
            records = [
                r.payload for r in answer[0] if r.type == dns.SRV and str(r.payload.target) != "."
            ]
            records.sort(key=lambda p: (p.priority, -p.weight, random.random()))
            return [(str(p.target), p.port) for p in records] or [(domain, DEFAULT_PORT)]

        def no_srv(f: failure.Failure) -> list[tuple[str, int]]:
            if not f.check(error.DomainError, error.DNSNameError, error.DNSServerError):
                log.msg(f"s2s: SRV lookup for {domain} failed: {f.getErrorMessage()}")
            return [(domain, DEFAULT_PORT)]

        d: Deferred[Any] = resolver.lookupService(f"_xmpp-server._tcp.{domain}")
        return d.addCallbacks(srv, no_srv)

    def status(self) -> dict[str, Any]:
        authenticated = sorted({d for s in self.inbound for d in s.authenticated})
        outgoing = {
            (d if local == self.domain else f"{local} -> {d}"): o.state
            for (local, d), o in sorted(self.outgoing.items())
            if not o.finished
        }
        return {
            **self.counters,
            "outgoing": outgoing,
            "incoming": authenticated,
            "idle_timeout": self.idle_timeout,
            "peer_certificates": {d: dict(v) for d, v in sorted(self.peer_certificates.items())},
        }

    def saw_certificate(self, domain: str, direction: str, transport: Any) -> None:
        fp = _leaf_sha256(transport)
        if fp is not None:
            self.peer_certificates.setdefault(domain, {})[direction] = fp

    def stop(self) -> None:
        for out in list(self.outgoing.values()):
            out.abandon("remote-server-timeout", "the server is shutting down", shutdown=True)
        for stream in list(self.inbound):
            stream.stream_error("system-shutdown")


def _answer(el: ET.Element) -> dict[str, str]:
    return {
        "type": "result",
        "id": el.get("id", ""),
        "to": el.get("from", ""),
        "from": el.get("to", ""),
    }


# -- outbound: we are the originating server -------------------------------------------------------


class Outbound:
    """The outgoing stream from one of our names to one domain: resolve, connect, TLS,
    authenticate, then send; closed again after idle_timeout without a stanza."""

    def __init__(self, service: S2SService, domain: str, local: str | None = None) -> None:
        self.service = service
        self.domain = domain
        self.local = local or service.domain  # the name we speak as on this stream
        self.state = "resolving"
        self.finished = False
        self.pending: list[_Pending] = []
        self.verifies: dict[tuple[str, str], list[Deferred[bool]]] = {}
        self.unsent_verifies: list[tuple[str, str, str]] = []
        self.protocol: OutboundProtocol | None = None
        self.timer: Any = None
        self.idle_timer: Any = None
        self.last_stanza = 0.0
        self.addresses: list[tuple[str, int]] = []

    def start(self) -> None:
        svc = self.service
        svc.counters["s2s_out_streams"] += 1
        self.timer = svc.reactor.callLater(svc.connect_timeout, self._timed_out)
        d = svc.resolve(self.domain)
        d.addCallback(self._resolved)
        d.addErrback(lambda f: self.abandon("remote-server-not-found", f.getErrorMessage()))

    def _resolved(self, addresses: list[tuple[str, int]]) -> None:
        if self.finished:
            return
        self.addresses = list(addresses)
        self._connect_next()

    def _connect_next(self) -> None:
        if self.finished:
            return
        if not self.addresses:
            self.abandon("remote-server-not-found", f"cannot reach {self.domain}")
            return
        host, port = self.addresses.pop(0)
        self.state = "connecting"
        svc = self.service
        d = address_of(host, svc.resolver)
        d.addCallback(self._connect, port)
        d.addErrback(lambda f: self.connection_failed(f"cannot resolve {host}: {f.value}"))

    def _connect(self, ip: str, port: int) -> None:
        if self.finished:
            return
        svc = self.service
        bind = (svc.bind_host, 0) if svc.bind_host else None
        svc.reactor.connectTCP(
            ip, port, OutboundFactory(self), timeout=svc.connect_timeout, bindAddress=bind
        )

    def _timed_out(self) -> None:
        self.timer = None
        if self.state != "ready":
            log.msg(f"s2s: {self.domain}: no authenticated stream in time")
            self.abandon("remote-server-timeout", f"{self.domain} did not answer in time")

    def queue(self, data: bytes, d: Deferred[None] | None) -> None:
        if self.state == "ready" and self.protocol is not None:
            self.protocol.transport.write(data)
            self.last_stanza = self.service.reactor.seconds()
            if d is not None:
                d.callback(None)
            return
        if len(self.pending) >= MAX_QUEUE:
            if d is not None:
                d.errback(Undeliverable("resource-constraint", "too many stanzas waiting"))
            return
        self.pending.append(_Pending(data, d))

    def ask_verify(self, stream_id: str, key: str, receiving: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        first = (stream_id, key) not in self.verifies
        self.verifies.setdefault((stream_id, key), []).append(d)
        if first:
            p = self.protocol
            if p is not None and p.secure and p.header_in:
                p.send_verify(stream_id, key, receiving)
            else:
                self.unsent_verifies.append((stream_id, key, receiving))
        return d

    def verify_answer(self, stream_id: str, valid: bool) -> None:
        for k in [k for k in self.verifies if k[0] == stream_id]:
            for d in self.verifies.pop(k):
                d.callback(valid)

    def ready(self) -> None:
        self.state = "ready"
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        assert self.protocol is not None
        self.service.saw_certificate(self.domain, "outbound", self.protocol.transport)
        pending, self.pending = self.pending, []
        for p in pending:
            self.protocol.transport.write(p.data)
            if p.done is not None:
                p.done.callback(None)
        self.last_stanza = self.service.reactor.seconds()
        self._watch_idle()
        log.msg(f"s2s: stream {self.local} -> {self.domain} authenticated")

    def _watch_idle(self, delay: float | None = None) -> None:
        timeout = self.service.idle_timeout
        if timeout > 0 and not self.finished:
            self.idle_timer = self.service.reactor.callLater(
                timeout if delay is None else delay, self._idle_check
            )

    def _idle_check(self) -> None:
        """No stanza for idle_timeout: close the stream cleanly; the next stanza reopens it."""
        self.idle_timer = None
        if self.finished:
            return
        quiet = self.service.reactor.seconds() - self.last_stanza
        timeout = self.service.idle_timeout
        if quiet < timeout or self.verifies:
            # traffic meanwhile, or a dialback answer still awaited on this stream
            self._watch_idle(max(timeout - quiet, 0.05) if not self.verifies else timeout)
            return
        log.msg(f"s2s: stream {self.local} -> {self.domain} idle for {quiet:.0f}s; closing it")
        self.service.counters["s2s_idle_closed"] += 1
        self.abandon("remote-server-timeout", "the stream was idle")

    def connection_failed(self, reason: str) -> None:
        if self.addresses and self.state != "ready":
            self._connect_next()
            return
        self.abandon("remote-server-not-found", reason)

    def abandon(
        self,
        condition: str,
        text: str = "",
        shutdown: bool = False,
        stream_error: str | None = None,
    ) -> None:
        """The stream is gone or will not come: bounce what waits, answer verifies 'invalid'."""
        if self.finished:
            return
        self.finished = True
        self.state = "closed"
        if self.service.outgoing.get((self.local, self.domain)) is self:
            del self.service.outgoing[(self.local, self.domain)]
        for timer in (self.timer, self.idle_timer):
            if timer is not None and timer.active():
                timer.cancel()
        pending, self.pending = self.pending, []
        for p in pending:
            if p.done is not None:
                self.service.counters["s2s_bounced"] += 1
                p.done.errback(Undeliverable(condition, text))
        for ds in self.verifies.values():
            for d in ds:
                d.callback(False)
        self.verifies.clear()
        if self.protocol is not None and not self.protocol.closing:
            self.protocol.close(shutdown, stream_error)


class OutboundFactory(ClientFactory):
    noisy = False

    def __init__(self, out: Outbound) -> None:
        self.out = out

    def buildProtocol(self, addr: Any) -> OutboundProtocol:
        p = OutboundProtocol(self.out)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector: Any, reason: failure.Failure) -> None:
        self.out.connection_failed(f"cannot connect: {reason.getErrorMessage()}")


class OutboundProtocol(Protocol):
    def __init__(self, out: Outbound) -> None:
        self.out = out
        self.svc = out.service
        self.parser = StreamParser(max_stanza_bytes=self.svc.max_stanza_size)
        self.secure = False
        self.authenticated = False
        self.header_in = False
        self.stream_id = ""
        self.closing = False
        self.tried_external = False
        self.tried_dialback = False
        self.restarted = False
        self.draining = False  # we sent </stream:stream> and read until the peer's
        self.peer_closed = False
        self.grace: Any = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # many small stanzas: no Nagle pauses
        self.out.protocol = self
        self.out.state = "negotiating"
        self._open()

    def _open(self) -> None:
        self.header_in = False
        self.transport.write(s2s_header(self.out.local, self.out.domain, None))

    def connectionLost(self, reason: failure.Failure | None = None) -> None:
        self.closing = True
        if self.grace is not None and self.grace.active():
            self.grace.cancel()
        if self.out.protocol is self:
            self.out.protocol = None
            if self.out.state == "ready":
                # a stream that worked and dropped: the next stanza connects again
                self.out.abandon("remote-server-not-found", "the stream closed")
            else:
                self.out.connection_failed("the stream closed during negotiation")

    def close(self, shutdown: bool = False, error: str | None = None) -> None:
        """RFC 6120 §4.4: our </stream:stream>, then the peer's before the TCP goes; a
        stream that was authenticated waits (a short while) for the peer's closing tag.
        With `error`, a stream error (§4.9) ends it at once instead."""
        if self.closing:
            return
        self.closing = True
        if error is not None:
            self.transport.write(stream_error(error))
            self.transport.loseConnection()
            return
        self.transport.write(STREAM_CLOSE)
        if self.authenticated and self.header_in and not shutdown and not self.peer_closed:
            self.draining = True
            self.grace = self.svc.reactor.callLater(CLOSE_GRACE, self.transport.loseConnection)
        else:
            self.transport.loseConnection()

    def fail(self, why: str) -> None:
        log.msg(f"s2s: stream {self.out.local} -> {self.out.domain}: {why}")
        self.out.addresses = []
        self.out.abandon("remote-server-not-found", why)

    def dataReceived(self, data: bytes) -> None:
        if self.closing and not self.draining:
            return
        try:
            events = self.parser.feed(data)
        except StreamError as e:
            self.transport.write(stream_error(e.condition, e.text))
            self.fail(f"bad stream from the peer: {e}")
            return
        self.restarted = False
        for ev in events:
            if self.draining:
                if isinstance(ev, StreamClosed):
                    self.draining = False
                    self.transport.loseConnection()
                    return
                continue  # only the peer's closing tag matters now
            if self.closing or self.restarted:
                return
            if isinstance(ev, StreamOpened):
                self.header_in = True
                self.stream_id = ev.attrs.get("id", "")
            elif isinstance(ev, StanzaReceived):
                try:
                    self._element(ev.element)
                except Exception:
                    log.err(None, f"s2s: stream to {self.out.domain}")
                    self.fail("internal error")
            elif isinstance(ev, StreamClosed):
                self.peer_closed = True
                self.fail("the peer closed the stream")

    def _element(self, el: ET.Element) -> None:
        tag = el.tag
        if tag == FEATURES:
            self._features(el)
        elif tag == TLS + "proceed":
            self.transport.startTLS(ClientTLS(self.svc.client_options(), self.out.domain))
            self.secure = True
            self.parser.reset()
            self.restarted = True
            self._open()
        elif tag == TLS + "failure":
            self.fail("the peer refused TLS")
        elif tag == SASL + "success":
            self.authenticated = True
            self.svc.counters["s2s_external"] += 1
            self.parser.reset()
            self.restarted = True
            self._open()
        elif tag == SASL + "failure":
            self._dialback()  # RFC 6120 §13.7.2.2: fall back when EXTERNAL fails
        elif tag == DB + "result":
            if el.get("type") == "valid":
                self.svc.counters["s2s_dialback"] += 1
                self.authenticated = True
                self.out.ready()
            else:
                self.fail(f"dialback refused ({el.get('type')})")
        elif tag == DB + "verify":
            self.out.verify_answer(el.get("id", ""), el.get("type") == "valid")
        elif tag == STREAM_ERROR:
            cond = next((local_name(c.tag) for c in el), "undefined-condition")
            self.fail(f"stream error {cond}")

    def _features(self, el: ET.Element) -> None:
        if not self.secure:
            if el.find(TLS + "starttls") is None:
                self.fail("the peer does not offer TLS, which federation requires")
                return
            self.transport.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
            return
        for stream_id, key, receiving in self.out.unsent_verifies:
            self.send_verify(stream_id, key, receiving)
        self.out.unsent_verifies.clear()
        if self.authenticated:
            self.out.ready()  # after SASL EXTERNAL and the stream restart
            return
        mechs = el.find(SASL + "mechanisms")
        names = [m.text for m in mechs] if mechs is not None else []
        if "EXTERNAL" in names and not self.tried_external:
            self.tried_external = True
            authzid = base64.b64encode(self.out.local.encode()).decode()
            self.transport.write(
                f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{authzid}</auth>".encode()
            )
            return
        self._dialback()

    def _dialback(self) -> None:
        if self.tried_dialback:
            self.fail("neither SASL EXTERNAL nor dialback succeeded")
            return
        self.tried_dialback = True
        key = dialback.dialback_key(
            self.svc.secret, self.out.domain, self.out.local, self.stream_id
        )
        self.transport.write(
            _db("result", **{"from": self.out.local, "to": self.out.domain, "text": key})
        )

    def send_verify(self, stream_id: str, key: str, receiving: str) -> None:
        self.transport.write(
            _db(
                "verify",
                **{"from": receiving, "to": self.out.domain, "id": stream_id, "text": key},
            )
        )


# -- inbound: we are the receiving (and the authoritative) server ---------------------------------


class Inbound(Protocol):
    def __init__(self, service: S2SService) -> None:
        self.svc = service
        self.parser = StreamParser(max_stanza_bytes=service.max_stanza_size)
        self.secure = False
        self.closing = False
        self.restarted = False
        self.header_sent = False
        self.stream_id = ""
        self.peer_from: str | None = None
        self.authenticated: set[str] = set()
        self.sasl_done = False
        self.host = ""
        self.refused = False
        self.timer: Any = None
        self.local = service.domain  # the name the peer opened the stream to
        self.draining = False  # we closed it (idle) and still read until the peer's close
        self.idle_timer: Any = None
        self.last_stanza = 0.0
        self.bucket: TokenBucket | None = None
        if service.guard is not None:
            # DESIGN §7: stanzas per second on one partner's stream, bursts of five times that
            rate = service.guard.limits.federation_stanzas_per_second
            self.bucket = TokenBucket(rate, rate * 5, service.guard.clock)
        # parsed but not yet handled: what waits while the stream is over its rate (bounded by
        # one read's worth, since reading stops meanwhile)
        self.backlog: deque[object] = deque()
        self.throttle: Any = None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.host = str(getattr(peer, "host", "?"))
        guard = self.svc.guard
        if guard is not None and not guard.connection_opened(self.host):
            self.refused = self.closing = True
            self.transport.abortConnection()
            return
        self.svc.inbound.add(self)
        self.svc.counters["s2s_in_streams"] += 1
        self.timer = self.svc.reactor.callLater(AUTH_TIMEOUT, self._auth_timeout)

    def _auth_timeout(self) -> None:
        self.timer = None
        if not self.authenticated:
            self.stream_error("connection-timeout")

    def connectionLost(self, reason: failure.Failure | None = None) -> None:
        self.closing = True
        if self.refused:
            return
        if self.svc.guard is not None:
            self.svc.guard.connection_closed(self.host)
        self.svc.inbound.discard(self)
        self.backlog.clear()
        for timer in (self.timer, self.idle_timer, self.throttle):
            if timer is not None and timer.active():
                timer.cancel()

    def _watch_idle(self, delay: float | None = None) -> None:
        timeout = self.svc.idle_timeout
        if timeout > 0 and not self.closing:
            self.idle_timer = self.svc.reactor.callLater(
                timeout if delay is None else delay, self._idle_check
            )

    def _idle_check(self) -> None:
        """No stanza for idle_timeout (whitespace does not count): RFC 6120 §4.4 close; the
        peer opens a new stream when it has something to send."""
        self.idle_timer = None
        if self.closing:
            return
        quiet = self.svc.reactor.seconds() - self.last_stanza
        if quiet < self.svc.idle_timeout:
            self._watch_idle(max(self.svc.idle_timeout - quiet, 0.05))
            return
        who = ", ".join(sorted(self.authenticated)) or self.host
        log.msg(f"s2s: stream from {who} idle for {quiet:.0f}s; closing it")
        self.svc.counters["s2s_idle_closed"] += 1
        self.closing = self.draining = True
        self.transport.write(STREAM_CLOSE)
        # stanzas the peer sent before it saw our closing tag are still read (§4.4)
        self.timer = self.svc.reactor.callLater(CLOSE_GRACE, self.transport.loseConnection)

    def stream_error(self, condition: str, text: str = "") -> None:
        if self.draining:
            self.transport.loseConnection()  # our closing tag went out already
            return
        if self.closing:
            return
        if not self.header_sent:
            self._header(None)
        self.transport.write(stream_error(condition, text))
        self.closing = True
        self.transport.loseConnection()

    def _header(self, to: str | None) -> None:
        self.header_sent = True
        self.stream_id = secrets.token_hex(12)
        self.transport.write(s2s_header(self.local, to, self.stream_id))

    def dataReceived(self, data: bytes) -> None:
        if self.closing and not self.draining:
            return
        try:
            events = self.parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)
            return
        self.backlog.extend(events)
        if self.throttle is None:
            self._drain()

    def _drain(self) -> None:
        """Handle the parsed events in order; over the partner's stanza rate, stop reading the
        socket until the rate allows the next stanza (TCP pushes back on the partner), so
        nothing is refused or lost for being fast."""
        self.restarted = False
        while self.backlog:
            if (self.closing and not self.draining) or self.restarted:
                self.backlog.clear()
                return
            ev = self.backlog[0]
            if (
                isinstance(ev, StanzaReceived)
                and self.authenticated
                and self.bucket is not None
                and not self.bucket.take()
            ):
                self.svc.counters["s2s_rate_limited"] += 1
                if self.svc.guard is not None:
                    self.svc.guard.counters["federation_rate_exceeded"] += 1
                self.transport.pauseProducing()
                self.throttle = self.svc.reactor.callLater(self.bucket.wait(), self._resume)
                return
            self.backlog.popleft()
            try:
                if isinstance(ev, StreamOpened):
                    self._opened(ev)
                elif isinstance(ev, StanzaReceived):
                    self._element(ev.element)
                elif isinstance(ev, StreamClosed):
                    if not self.closing:
                        self.transport.write(STREAM_CLOSE)
                    self.closing, self.draining = True, False
                    self.transport.loseConnection()
            except Exception:
                log.err(None, f"s2s: inbound stream from {self.host}")
                self.stream_error("internal-server-error")

    def _resume(self) -> None:
        self.throttle = None
        if self.closing and not self.draining:
            return
        self.transport.resumeProducing()
        self._drain()

    def _opened(self, ev: StreamOpened) -> None:
        peer = (ev.attrs.get("from") or "").lower().rstrip(".") or None
        to = (ev.attrs.get("to") or "").lower().rstrip(".")
        if to and self.svc.is_local(to):
            self.local = to  # our domain, or a service of ours such as conference.<domain>
        self._header(peer)
        if ev.default_ns != NS_SERVER:
            self.stream_error("invalid-namespace", "this port serves jabber:server streams")
            return
        if to and not self.svc.is_local(to):
            self.stream_error("host-unknown")
            return
        if peer is not None and not self.svc.allowed(peer):
            # DESIGN §7: a refused domain learns nothing beyond this
            self.svc.counters["s2s_refused"] += 1
            log.msg(f"s2s: refused a stream from {peer} ({self.host}): not allowed")
            self.stream_error("policy-violation")
            return
        self.peer_from = peer or self.peer_from
        self.transport.write(self._features())

    def _features(self) -> bytes:
        out = [b"<stream:features>"]
        if not self.secure:
            out.append(f"<starttls xmlns='{NS_TLS}'><required/></starttls>".encode())
        elif not self.sasl_done:
            if self.peer_from and self._cert_proves(self.peer_from):
                mech = "<mechanism>EXTERNAL</mechanism>"
                out.append(f"<mechanisms xmlns='{NS_SASL}'>{mech}</mechanisms>".encode())
            out.append(f"<dialback xmlns='{NS_DB_FEATURE}'><errors/></dialback>".encode())
        out.append(b"</stream:features>")
        return b"".join(out)

    def _cert_proves(self, domain: str) -> bool:
        chain = _peer_chain(self.transport)
        return (
            dialback.certificate_identity(chain, domain, self.svc.policy.pinned(domain)) is not None
        )

    def _element(self, el: ET.Element) -> None:
        tag = el.tag
        if not self.secure:
            if tag != TLS + "starttls":
                self.stream_error("policy-violation", "STARTTLS is required first")
                return
            self.transport.write(f"<proceed xmlns='{NS_TLS}'/>".encode())
            self.transport.startTLS(self.svc.server_tls())
            self.secure = True
            self.parser.reset()
            self.restarted = True
            return
        if tag == SASL + "auth":
            self._external(el)
        elif tag == DB + "result":
            self._db_result(el)
        elif tag == DB + "verify":
            self._db_verify(el)
        elif tag.startswith("{" + NS_SERVER + "}") and local_name(tag) in STANZAS:
            self._stanza(el)
        elif tag == STREAM_ERROR:
            # RFC 6120 §4.9.1.2: the peer ends its stream with an error; nothing to answer
            cond = next((local_name(c.tag) for c in el), "undefined-condition")
            who = ", ".join(sorted(self.authenticated)) or self.peer_from or self.host
            log.msg(f"s2s: stream from {who} ended with stream error {cond}")
            self.closing = True
            self.transport.loseConnection()
        else:
            self.stream_error("unsupported-stanza-type")

    def _external(self, el: ET.Element) -> None:
        """RFC 6120 §13.7.1.2 / XEP-0178: the peer's certificate names its domain."""
        if self.sasl_done or el.get("mechanism") != "EXTERNAL":
            self.transport.write(
                f"<failure xmlns='{NS_SASL}'><invalid-mechanism/></failure>".encode()
            )
            return
        text = (el.text or "").strip()
        try:
            authzid = (
                base64.b64decode(text, validate=True).decode() if text not in ("", "=") else ""
            )
        except (binascii.Error, UnicodeDecodeError):
            authzid = "\x00"
        domain = (authzid or self.peer_from or "").lower()
        if not domain or not self.svc.allowed(domain) or not self._cert_proves(domain):
            self.transport.write(f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode())
            return
        self.sasl_done = True
        self._authenticated(domain, "SASL EXTERNAL")
        self.transport.write(f"<success xmlns='{NS_SASL}'/>".encode())
        self.parser.reset()
        self.restarted = True

    def _authenticated(self, domain: str, how: str) -> None:
        first = not self.authenticated
        self.authenticated.add(domain)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.svc.saw_certificate(domain, "inbound", self.transport)
        if first:
            self.last_stanza = self.svc.reactor.seconds()
            self._watch_idle()
        log.msg(f"s2s: stream from {domain} to {self.local} ({self.host}) authenticated by {how}")

    def _db_result(self, el: ET.Element) -> None:
        """XEP-0220 §2.2: the originating server offers a key; we check it with its server."""
        originating = (el.get("from") or "").lower()
        receiving = (el.get("to") or "").lower()
        key = (el.text or "").strip()
        if not self.svc.is_local(receiving):
            self.transport.write(
                _db("result", **{"from": receiving, "to": originating, "type": "error"})
            )
            return
        if not originating or not self.svc.allowed(originating):
            self.svc.counters["s2s_refused"] += 1
            self.stream_error("policy-violation")
            return
        if self._cert_proves(originating):
            # XEP-0344: a certificate that proves the domain makes the round trip unnecessary
            self._db_answer(originating, True, receiving)
            return
        d = self.svc.verify(originating, self.stream_id, key, receiving)
        d.addCallback(lambda valid: self._db_answer(originating, valid, receiving))
        d.addErrback(
            lambda f: (log.err(f, "s2s: dialback verify"), self._db_answer(originating, False))
        )

    def _db_answer(self, originating: str, valid: bool, receiving: str | None = None) -> None:
        if self.closing:
            return
        result = "valid" if valid else "invalid"
        ours = receiving or self.local
        self.transport.write(_db("result", **{"from": ours, "to": originating, "type": result}))
        if valid:
            self._authenticated(originating, "dialback")
        else:
            self.stream_error("not-authorized", "dialback failed")

    def _db_verify(self, el: ET.Element) -> None:
        """XEP-0220 §2.4: we are the authoritative server; was this key made by us?"""
        receiving = (el.get("from") or "").lower()
        originating = (el.get("to") or "").lower()
        stream_id = el.get("id") or ""
        ok = (
            self.svc.is_local(originating)
            and self.svc.allowed(receiving)
            and dialback.key_matches(
                self.svc.secret, receiving, originating, stream_id, el.text or ""
            )
        )
        self.transport.write(
            _db(
                "verify",
                **{
                    "from": originating,
                    "to": receiving,
                    "id": stream_id,
                    "type": "valid" if ok else "invalid",
                },
            )
        )

    def _stanza(self, el: ET.Element) -> None:
        try:
            sender = parse_jid(el.get("from", ""))
            to = parse_jid(el.get("to", ""))
        except InvalidJID:
            self.stream_error("improper-addressing", "a stanza needs valid from and to addresses")
            return
        if sender.domain not in self.authenticated:
            self.stream_error("invalid-from", f"{sender.domain} is not authenticated here")
            return
        if to.domain != self.svc.domain and not to.domain.endswith("." + self.svc.domain):
            self.stream_error("host-unknown")
            return
        if not self.svc.allowed(sender.domain):
            self.stream_error("policy-violation")
            return
        self.last_stanza = self.svc.reactor.seconds()  # whitespace keepalives do not count
        self.svc.incoming(self, el)


class InboundFactory(ServerFactory):
    noisy = False

    def __init__(self, service: S2SService) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> Inbound:
        p = Inbound(self.service)
        p.factory = self
        return p
