"""XMPP client-to-server streams: the thin Twisted shell around the sans-I/O parts.

The protocol frames bytes through `xml.StreamParser`, negotiates TLS, SASL and resource binding
(RFC 6120 §5 to §7), then hands each stanza to the core (messages, presence) or to the IQ handlers.
It is also the core's `Endpoint` for the resource it bound.
"""

from __future__ import annotations

import base64
import binascii
import copy
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.threads import deferToThread
from twisted.python import failure, log

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, RosterItem, Undeliverable
from standard_edition.core.router import Router
from standard_edition.core.subscription import Kind
from standard_edition.edge.limits import EdgeGuard, TokenBucket
from standard_edition.xmpp import sasl, sm
from standard_edition.xmpp.iq import IqHandlers
from standard_edition.xmpp.muc import MucService
from standard_edition.xmpp.presence_wire import WIRE
from standard_edition.xmpp.stanzas import (
    C,
    StanzaError,
    error_reply,
    local_name,
    message_from_stanza,
    message_stanza,
    presence_from_stanza,
    presence_stanza,
    roster_item_element,
    sub,
)
from standard_edition.xmpp.xml import (
    NS_CLIENT,
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamError,
    StreamOpened,
    StreamParser,
    serialize,
    stream_error,
    stream_header,
)

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_LIMITS = "urn:xmpp:stream-limits:0"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"
CSI = "{" + NS_CSI + "}"
CSI_HOLD_MAX = 200  # senders whose presence an inactive client may have waiting
FEATURES = b"<stream:features>"
FEATURES_END = b"</stream:features>"

STANZAS = frozenset({C + "message", C + "presence", C + "iq"})
AUTH_TIMEOUT = 60.0  # seconds an unauthenticated stream may stay open
FAILED_AUTH_DELAY = 1.0  # every failed attempt answers after the same pause, known user or not
MAX_AUTH_ATTEMPTS = 5  # RFC 6120 §6.4.5: a few retries, then the stream ends
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 §2


@dataclass
class C2SContext:
    """What every client stream of one listener shares."""

    reactor: Any
    router: Router
    domain: str
    tls_options: Any  # twisted CertificateOptions
    server_end_point: bytes | None  # RFC 5929 hash of our certificate, when defined
    decoy_secret: bytes
    max_stanza_size: int
    iq: IqHandlers
    direct_tls: bool = False
    streams: set[C2SProtocol] = field(default_factory=set)
    muc: MucService | None = None
    resume_timeout: float = sm.RESUME_TIMEOUT
    sm_sessions: dict[str, C2SProtocol] = field(default_factory=dict)  # XEP-0198 ids
    # DESIGN §7: "edge" for the outside listeners, whose logins and rates are limited
    origin: str = "internal"
    edge: EdgeGuard | None = None
    s2s: Any = None  # xmpp/s2s.py S2SService, when federation is on: iq to other domains
    upload: Any = None  # upload/service.py UploadService on upload.<domain>, when listening
    pep: Any = None  # pep/service.py PepService: caps of each client, PEP notifications


class C2SProtocol(Protocol):
    protocol = "xmpp"

    def __init__(self, ctx: C2SContext) -> None:
        self.ctx = ctx
        self.parser = StreamParser(max_stanza_bytes=ctx.max_stanza_size)
        self.secure = ctx.direct_tls
        self.username: str | None = None
        self.header_sent = False
        self.closing = False
        self.mechanism: sasl.Mechanism | None = None
        self.auth_attempts = 0
        self.auth_pending = False
        self.restarted = False
        self.timeout: Any = None
        # Endpoint attributes, meaningful once a resource is bound
        self.jid: JID | None = None  # type: ignore[assignment]
        self.address = ""
        self.since = time.time()
        self.presence: Presence | None = None
        self.interested = False
        self.carbons = False  # XEP-0280: copies of this user's messages on other clients
        self.sm: sm.SmState | None = None  # XEP-0198, once the client enables it
        self.detached = False  # the connection dropped; the session waits to be resumed
        self.replaced = False  # resumed on another connection: this one no longer counts
        self.no_resume = False  # ended on purpose (stream close, stream error)
        self.resume_timer: Any = None
        self.csi_inactive = False  # XEP-0352: the user is not looking at this client
        self.csi_held: dict[str, ET.Element] = {}
        self._push_id = 0
        self.origin = ctx.origin  # travels with the session: policies and se-ctl see it
        self.host = ""  # the peer's IP address, for the edge limits
        self.refused = False  # the edge refused the connection before any byte
        self.attempted: str | None = None  # the account the last SASL exchange named
        self.bucket: TokenBucket | None = None

    # -- connection --------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.address = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.host = str(getattr(peer, "host", "?"))
        edge = self.ctx.edge
        if edge is not None and not edge.connection_opened(self.host):
            # DESIGN §7: too many connections from this address: nothing is said, nothing read
            self.refused = self.closing = True
            self.transport.abortConnection()
            return
        if edge is not None:
            rate = edge.limits.stanzas_per_second
            self.bucket = TokenBucket(rate, rate * 5, self.ctx.reactor.seconds)
        self.ctx.streams.add(self)
        self.timeout = self.ctx.reactor.callLater(AUTH_TIMEOUT, self._auth_timed_out)

    def connectionLost(self, reason: failure.Failure | None = None) -> None:
        if self.refused:
            return
        if self.ctx.edge is not None:
            self.ctx.edge.connection_closed(self.host)
        self.ctx.streams.discard(self)
        self.closing = True
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        if self.replaced:
            return
        if self.jid is not None and self.jid.resource is not None:
            if self.sm is not None and self.sm.resumable and not self.no_resume:
                # XEP-0198 §5: keep the session, queueing, until resumed or timed out
                self.detached = True
                self.resume_timer = self.ctx.reactor.callLater(
                    self.ctx.resume_timeout, self.give_up
                )
                return
            self.end_session()

    def end_session(self) -> None:
        assert self.jid is not None
        if self.sm is not None:
            self.ctx.sm_sessions.pop(self.sm.id, None)
        if self.ctx.muc is not None:
            self.ctx.muc.endpoint_gone(self.jid)
        self.ctx.router.unbind(self)

    def give_up(self) -> None:
        """A dropped session was not resumed in time: it ends, and the messages its client
        never acknowledged are routed again (other clients or offline storage)."""
        self.resume_timer = None
        if self.replaced or self.jid is None:
            return
        self.end_session()
        pending = list(self.sm.unacked) if self.sm is not None else []
        if self.sm is not None:
            self.sm.unacked.clear()
        for _, el in pending:
            if isinstance(el, bytes):
                continue  # a presence, serialised once for all its watchers
            if el.tag != C + "message" or el.get("type") in ("error", "groupchat"):
                continue
            if el.findtext(C + "body") is None:
                continue
            try:
                sender = parse_jid(el.get("from", ""))
            except InvalidJID:
                continue
            payload = tuple(ch for ch in el if ch.tag != "{urn:xmpp:delay}delay")
            # this server sent it to this session, so the IM URL filter has had its say: it
            # must not defang it, prefix it or refuse it a second time
            msg = Message(
                sender,
                self.jid.bare,
                el.get("type", "normal"),
                el.findtext(C + "body"),
                el.get("id"),
                payload,
                filtered=True,
            )
            try:
                d = self.ctx.router.route_message(msg)
            except Undeliverable as e:
                log.msg(
                    f"c2s {self.jid}: unacknowledged message from {sender} not kept: {e.condition}"
                )
                continue
            d.addErrback(lambda f, s=sender: log.err(f, f"unacknowledged message from {s}"))

    def _auth_timed_out(self) -> None:
        self.timeout = None
        if self.jid is None:
            self.stream_error("connection-timeout", "no session was established in time")

    def send(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def send_stanza(self, el: ET.Element) -> None:
        if self.csi_inactive and el.tag in STANZAS:
            if el.tag == C + "presence" and el.get("type") in (None, "unavailable"):
                # XEP-0352: an inactive client gets presence in batches, the latest per sender
                self.csi_held[el.get("from", "")] = copy.copy(el)
                if len(self.csi_held) < CSI_HOLD_MAX:
                    return
            self._csi_flush()
        self._write_stanza(el)

    def _csi_flush(self) -> None:
        held, self.csi_held = self.csi_held, {}
        for el in held.values():
            self._write_stanza(el)

    def _write_stanza(self, el: ET.Element | bytes) -> None:
        """Write a stanza, counting it for XEP-0198; bytes: a stanza serialised already."""
        if self.sm is not None and (isinstance(el, bytes) or el.tag in STANZAS):
            try:
                ask = self.sm.sent(el)
            except sm.SmError as e:
                self.stream_error(e.condition, e.text)
                return
            if not self.closing and not self.detached:
                self.transport.write(_wire(el) + (sm.element("r") if ask else b""))
            return
        if not self.closing:
            self.transport.write(_wire(el))

    def stream_error(self, condition: str, text: str = "") -> None:
        """RFC 6120 §4.9: send the error, close the stream and the connection."""
        self.no_resume = True
        if self.closing:
            return
        if not self.header_sent:
            # §4.9.1.2: the error follows an opening header even before the client's arrived
            self._send_header()
        self.transport.write(stream_error(condition, text))
        self.closing = True
        self.transport.loseConnection()

    def _send_header(self) -> None:
        self.header_sent = True
        self.transport.write(
            stream_header(from_=self.ctx.domain, to=None, stream_id=secrets.token_hex(8))
        )

    # -- bytes in ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)
            return
        self.restarted = False
        for ev in events:
            if self.closing or self.restarted:
                # RFC 6120 §5.3.4: what followed <starttls/> in the same read was sent in the
                # clear; after a stream restart it belongs to no stream at all
                return
            try:
                if isinstance(ev, StanzaReceived):
                    self._stanza(ev.element)
                elif isinstance(ev, StreamOpened):
                    self._stream_opened(ev)
                elif isinstance(ev, StreamClosed):
                    self.no_resume = True  # a clean goodbye ends the session (XEP-0198 §5)
                    self.send(STREAM_CLOSE)
                    self.closing = True
                    self.transport.loseConnection()
            except Exception:
                log.err(None, f"c2s {self.address}: while handling input")
                self.stream_error("internal-server-error")

    def _stream_opened(self, ev: StreamOpened) -> None:
        self._send_header()
        if ev.default_ns != NS_CLIENT:
            self.stream_error("invalid-namespace", "this port serves jabber:client streams")
            return
        if ev.attrs.get("to", "").lower().rstrip(".") != self.ctx.domain:
            self.stream_error("host-unknown", f"this server serves {self.ctx.domain}")
            return
        if not ev.attrs.get("version", "").startswith("1."):
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        self.send(self._features())

    def _features(self) -> bytes:
        out = [FEATURES]
        size = self.ctx.max_stanza_size
        limits = f"<limits xmlns='{NS_LIMITS}'><max-bytes>{size}</max-bytes></limits>".encode()
        if not self.secure:
            # RFC 6120 §5.3.1: TLS is mandatory here, so nothing else is offered before it
            out.append(f"<starttls xmlns='{NS_TLS}'><required/></starttls>".encode())
        elif self.username is None:
            cb = self._channel_binding()
            mechs = sasl.offered_mechanisms(True, cb.data.keys())
            out.append(f"<mechanisms xmlns='{sasl.NS_SASL}'>".encode())
            out.extend(f"<mechanism>{m}</mechanism>".encode() for m in mechs)
            out.append(b"</mechanisms>")
            if cb.data:
                # XEP-0440: which channel-binding types the -PLUS mechanisms accept
                out.append(f"<sasl-channel-binding xmlns='{NS_SASL_CB}'>".encode())
                out.extend(f"<channel-binding type='{t}'/>".encode() for t in sorted(cb.data))
                out.append(b"</sasl-channel-binding>")
            out.append(limits)
        else:
            out.append(f"<bind xmlns='{NS_BIND}'/>".encode())
            out.append(f"<sm xmlns='{sm.NS_SM}'/>".encode())
            out.append(f"<csi xmlns='{NS_CSI}'/>".encode())
            out.append(f"<session xmlns='{NS_SESSION}'><optional/></session>".encode())
            out.append(limits)
        out.append(FEATURES_END)
        return b"".join(out)

    def _channel_binding(self) -> sasl.ChannelBinding:
        conn = self._tls_connection()
        if conn is None:
            return sasl.ChannelBinding({})
        data: dict[str, bytes] = {}
        if self.ctx.server_end_point is not None:
            data["tls-server-end-point"] = self.ctx.server_end_point
        # RFC 9266 §3: tls-exporter is defined for TLS 1.3 only
        if conn.get_protocol_version_name() == "TLSv1.3":
            try:
                data["tls-exporter"] = conn.export_keying_material(TLS_EXPORTER_LABEL, 32)
            except SSL.Error:
                log.msg(f"c2s {self.address}: TLS exporter unavailable")
        return sasl.ChannelBinding(data)

    def _tls_connection(self) -> SSL.Connection | None:
        handle = self.transport.getHandle()
        return handle if isinstance(handle, SSL.Connection) else None

    # -- stanzas -------------------------------------------------------------------------------

    def _stanza(self, el: ET.Element) -> None:
        if self.username is not None and el.tag.startswith(sm.SM):
            self._stream_management(el)
            return
        if self.jid is not None and el.tag in (CSI + "active", CSI + "inactive"):
            self.csi_inactive = el.tag == CSI + "inactive"
            if not self.csi_inactive:
                self._csi_flush()  # §5: back in view: everything held now
            return
        if not self.secure:
            self._before_tls(el)
        elif self.username is None:
            self._before_auth(el)
        elif self.jid is None:
            self._before_bind(el)
        else:
            self._session_stanza(el)

    def _before_tls(self, el: ET.Element) -> None:
        if el.tag != "{" + NS_TLS + "}starttls":
            self.stream_error("policy-violation", "STARTTLS is required first")
            return
        self.send(f"<proceed xmlns='{NS_TLS}'/>".encode())
        self.transport.startTLS(self.ctx.tls_options)
        self.secure = True
        self.parser.reset()  # RFC 6120 §5.4.3.3: a new stream over TLS
        self.restarted = True

    def _before_auth(self, el: ET.Element) -> None:
        if el.tag == "{" + NS_TLS + "}starttls":
            self.stream_error("policy-violation", "TLS is already in place")
            return
        if self.auth_pending:
            self.stream_error("policy-violation", "wait for the answer to the last SASL step")
            return
        name = local_name(el.tag)
        if not el.tag.startswith("{" + sasl.NS_SASL + "}"):
            self.stream_error("not-authorized", "authenticate first")
            return
        if name == "auth":
            self.auth_attempts += 1
            edge = self.ctx.edge
            if edge is not None and edge.login_wait(self.origin, self.host, None) > 0:
                self._edge_locked()
                return
            self.attempted = None
            self.mechanism = sasl.make_mechanism(
                el.get("mechanism", ""),
                lookup=self._lookup,
                decoy_secret=self.ctx.decoy_secret,
                channel_binding=self._channel_binding(),
                tls=True,
                domain=self.ctx.domain,
                test_token=self.ctx.router.accounts.redeem_test_token,
            )
            if self.mechanism is None:
                self._sasl_failure(sasl.Failure("invalid-mechanism"), delay=False)
                return
            self._sasl_step(el.text or "")
        elif name == "response":
            if self.mechanism is None:
                self._sasl_failure(sasl.Failure("malformed-request", "no exchange in progress"))
                return
            self._sasl_step(el.text or "")
        elif name == "abort":
            self.mechanism = None
            self._sasl_failure(sasl.Failure("aborted"), delay=False)
        else:
            self.stream_error("bad-format", f"unexpected SASL element <{name}/>")

    def _lookup(self, username: str) -> Any:
        self.attempted = username  # whom this exchange tries, known or not (edge limits)
        return self.ctx.router.accounts.sasl_lookup(username)

    def _edge_locked(self) -> None:
        """Too many failed logins from this address (for this account): refused unheard, and
        the stream ends, so each further guess costs a new connection."""
        assert self.ctx.edge is not None
        self.ctx.edge.login_refused()
        self.mechanism = None
        self.auth_attempts = MAX_AUTH_ATTEMPTS
        # no pause: the guess is not even looked at, and the connection is not kept open
        self._sasl_failure(
            sasl.Failure("temporary-auth-failure", "too many failed logins; try again later"),
            delay=False,
        )

    def _edge_login(self, step: sasl.Success) -> sasl.SaslStep:
        """DESIGN §7: a login on the edge must not be locked out and needs outside access."""
        edge = self.ctx.edge
        assert edge is not None
        if edge.login_wait(self.origin, self.host, step.username) > 0:
            edge.login_refused()
            self.auth_attempts = MAX_AUTH_ATTEMPTS
            return sasl.Failure("temporary-auth-failure", "too many failed logins; try later")
        policy = getattr(self.ctx.router, "federation", None)
        if policy is not None and not policy.outside_access(step.username):
            edge.counters["outside_access_refused"] += 1
            return sasl.Failure("not-authorized", "this account may not sign in from outside")
        edge.login_succeeded(self.origin, self.host, step.username)
        return step

    def _sasl_step(self, text: str) -> None:
        text = text.strip()
        try:
            data = b"" if text in ("", "=") else base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self.mechanism = None
            self._sasl_failure(sasl.Failure("incorrect-encoding"))
            return
        mech = self.mechanism
        assert mech is not None
        if mech.blocking:
            # PLAIN hashes the password (PBKDF2): never on the reactor thread
            self.auth_pending = True
            d = deferToThread(mech.step, data)
            d.addCallback(self._sasl_result)
            d.addErrback(self._sasl_crashed)
        else:
            self._sasl_result(mech.step(data))

    def _sasl_crashed(self, f: failure.Failure) -> None:
        log.err(f, f"c2s {self.address}: SASL step failed")
        self._sasl_result(sasl.Failure("temporary-auth-failure"))

    def _sasl_result(self, step: sasl.SaslStep) -> None:
        self.auth_pending = False
        if self.closing:
            return
        if isinstance(step, sasl.Success) and self.ctx.edge is not None:
            step = self._edge_login(step)
        elif (
            isinstance(step, sasl.Failure)
            and self.ctx.edge is not None
            and step.condition in ("not-authorized", "account-disabled", "credentials-expired")
        ):
            self.ctx.edge.login_failed(self.origin, self.host, self.attempted)
        if isinstance(step, sasl.Challenge):
            payload = base64.b64encode(step.data).decode() if step.data else "="
            self.send(f"<challenge xmlns='{sasl.NS_SASL}'>{payload}</challenge>".encode())
        elif isinstance(step, sasl.Success):
            self.mechanism = None
            self.username = step.username
            payload = base64.b64encode(step.data).decode() if step.data else ""
            self.send(f"<success xmlns='{sasl.NS_SASL}'>{payload}</success>".encode())
            self.parser.reset()  # RFC 6120 §6.4.6: the client opens a new stream
            self.restarted = True
        else:
            self.mechanism = None
            self._sasl_failure(step)

    def _sasl_failure(self, f: sasl.Failure, delay: bool = True) -> None:
        def send() -> None:
            self.auth_pending = False
            if self.closing:
                return
            text = f"<text xml:lang='en'>{_escape(f.text)}</text>" if f.text else ""
            self.send(f"<failure xmlns='{sasl.NS_SASL}'><{f.condition}/>{text}</failure>".encode())
            if self.auth_attempts >= MAX_AUTH_ATTEMPTS:
                self.stream_error("policy-violation", "too many failed authentication attempts")

        if delay:
            self.auth_pending = True
            self.ctx.reactor.callLater(FAILED_AUTH_DELAY, send)
        else:
            send()

    def _before_bind(self, el: ET.Element) -> None:
        if el.tag != C + "iq" or el.get("type") != "set":
            self.stream_error("not-authorized", "bind a resource first")
            return
        bind = el.find("{" + NS_BIND + "}bind")
        if bind is None:
            self.send_stanza(error_reply(el, "not-allowed", "bind a resource first"))
            return
        acct = self.ctx.router.accounts.get(self.username or "")
        if acct is None or not acct.enabled:
            self.stream_error("not-authorized", "account no longer available")
            return
        wanted = (bind.findtext("{" + NS_BIND + "}resource") or "").strip()
        resource = wanted or f"se-{secrets.token_hex(6)}"
        try:
            jid = parse_jid(f"{self.username}@{self.ctx.domain}/{resource}")
        except InvalidJID:
            self.send_stanza(error_reply(el, "bad-request", "resource is not valid"))
            return
        self.jid = jid
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.since = time.time()
        self.ctx.router.bind(self)
        reply = ET.Element(C + "iq", {"type": "result", "id": el.get("id", "")})
        b = sub(reply, "{" + NS_BIND + "}bind")
        sub(b, "{" + NS_BIND + "}jid", text=str(jid))
        self.send_stanza(reply)

    def _stream_management(self, el: ET.Element) -> None:
        name = local_name(el.tag)
        try:
            if name == "enable":
                if self.jid is None or self.sm is not None:
                    self.send(sm.failed("unexpected-request"))
                    return
                resumable = el.get("resume") in ("true", "1")
                self.sm = sm.SmState(resumable)
                attrs = {"id": self.sm.id}
                if resumable:
                    self.ctx.sm_sessions[self.sm.id] = self
                    attrs.update(resume="true", max=str(int(self.ctx.resume_timeout)))
                self.send(sm.element("enabled", **attrs))
            elif name == "r":
                if self.sm is not None:
                    self.send(sm.element("a", h=str(self.sm.handled_in)))
            elif name == "a":
                if self.sm is not None:
                    self.sm.ack(sm.parse_h(el))
            elif name == "resume":
                self._resume(el)
            else:
                self.send(sm.failed("feature-not-implemented"))
        except sm.SmError as e:
            if name == "a":
                self.stream_error("undefined-condition", e.text)  # §4: a bad ack ends the stream
            else:
                self.send(sm.failed(e.condition))

    def _resume(self, el: ET.Element) -> None:
        """§5: take over a dropped session of the same user, then re-send what it missed."""
        if self.jid is not None:
            self.send(sm.failed("unexpected-request"))
            return
        old = self.ctx.sm_sessions.get(el.get("previd", ""))
        if old is None or old.username != self.username or old.replaced or old.sm is None:
            self.send(sm.failed("item-not-found"))
            return
        state = old.sm
        state.ack(sm.parse_h(el))
        if old.resume_timer is not None and old.resume_timer.active():
            old.resume_timer.cancel()
        old.replaced = True
        if not old.detached:
            old.closing = True
            old.transport.abortConnection()  # the old connection is stale: drop it
        self.jid, self.presence, self.interested = old.jid, old.presence, old.interested
        self.carbons, self.since, self.sm = old.carbons, old.since, state
        state.requested = False
        self.ctx.sm_sessions[state.id] = self
        self.ctx.router.sessions.add(self)  # same address: no conflict, just the new stream
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.send(sm.element("resumed", h=str(state.handled_in), previd=state.id))
        for _, stanza in list(state.unacked):
            self.transport.write(_wire(stanza))

    def _session_stanza(self, el: ET.Element) -> None:
        assert self.jid is not None
        if self.bucket is not None and not self.bucket.take():
            # DESIGN §7: a remote session sending faster than the edge allows
            if self.ctx.edge is not None:
                self.ctx.edge.counters["stanza_rate_exceeded"] += 1
            self.stream_error("policy-violation", "too many stanzas per second")
            return
        if self.sm is not None:
            self.sm.received()
        sender = el.get("from")
        if sender is not None:
            try:
                claimed = parse_jid(sender)
            except InvalidJID:
                self.stream_error("invalid-from", "the from address is not valid")
                return
            # RFC 6120 §8.1.2.1: a client may only claim its own bare or full address
            if claimed not in (self.jid, self.jid.bare):
                self.stream_error("invalid-from", "the from address is not yours")
                return
        el.set("from", str(self.jid))
        kind = local_name(el.tag)
        if not el.tag.startswith(C):
            self.stream_error("unsupported-stanza-type", f"<{kind}/> is not a stanza")
            return
        try:
            if kind == "message":
                self._message(el)
            elif kind == "presence":
                self._presence(el)
            elif kind == "iq":
                self._iq(el)
            else:
                self.stream_error("unsupported-stanza-type", f"<{kind}/> is not a stanza")
        except StanzaError as e:
            if el.get("type") != "error":
                self.send_stanza(error_reply(el, e.condition, e.text))
        except Undeliverable as e:
            if el.get("type") != "error":
                self.send_stanza(error_reply(el, e.condition, e.text, app=e.app))

    def _target(self, el: ET.Element) -> JID:
        to = el.get("to")
        if to is None:
            assert self.jid is not None
            return self.jid.bare
        try:
            return parse_jid(to)
        except InvalidJID:
            raise StanzaError("jid-malformed", "the to address is not valid") from None

    def _message(self, el: ET.Element) -> None:
        assert self.jid is not None
        to = self._target(el)
        muc = self.ctx.muc
        if muc is not None and to.domain == muc.domain:
            muc.message(self, el, to)
            return
        if self.ctx.upload is not None and to.domain == self.ctx.upload.domain:
            raise StanzaError(
                "service-unavailable", "the upload service answers slot requests only"
            )
        remote = to.domain != self.ctx.domain
        if remote and self.ctx.router.remote is None:
            raise StanzaError("remote-server-not-found", f"no route to {to.domain}")
        if to.local is None and not remote:
            raise StanzaError("service-unavailable")
        msg = message_from_stanza(el, self.jid, to)
        d = self.ctx.router.route_message(msg)
        d.addErrback(self._undelivered, el)
        if muc is not None and el.find("{jabber:x:conference}x") is not None:
            muc.direct_invite_seen(self.jid, to, el)

    def _undelivered(self, f: failure.Failure, el: ET.Element) -> None:
        if f.check(Undeliverable):
            e = f.value
            self.send_stanza(error_reply(el, e.condition, e.text, app=e.app))
        else:
            log.err(f, f"c2s {self.address}: message not stored")
            self.send_stanza(error_reply(el, "internal-server-error", "message not stored"))

    def _presence(self, el: ET.Element) -> None:
        assert self.jid is not None
        ptype = el.get("type")
        to = None if el.get("to") is None else self._target(el)
        router = self.ctx.router
        muc = self.ctx.muc
        if muc is not None and to is not None and to.domain == muc.domain:
            muc.presence(self, el, to)
            return
        if to is not None and self.ctx.upload is not None and to.domain == self.ctx.upload.domain:
            return  # the upload service has no presence; nothing to route to another server
        if muc is not None and to is None and ptype == "unavailable":
            muc.endpoint_gone(self.jid)  # going offline leaves every room
        if ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            if to is None or to.local is None:
                raise StanzaError("bad-request", "a subscription needs a contact address")
            router.subscription(self.jid.local or "", to.bare, Kind(ptype))
        elif ptype == "probe":
            if to is not None:
                router.probe(self, to)
        elif ptype == "error":
            return
        elif ptype in (None, "unavailable"):
            now = self.ctx.reactor.seconds()
            presence = None if ptype == "unavailable" else presence_from_stanza(el, now)
            if to is None:
                if presence is None:
                    router.presence_unavailable(self, el.findtext(C + "status"))
                else:
                    initial = self.presence is None
                    router.presence_update(self, presence)
                    if self.ctx.pep is not None:
                        # XEP-0163 §4.3: what the client wants to hear of, and what it missed
                        self.ctx.pep.endpoint_available(self, presence, initial)
            else:
                router.directed_presence(self, to, presence)
        else:
            raise StanzaError("bad-request", f"unknown presence type {ptype[:20]!r}")

    def _iq(self, el: ET.Element) -> None:
        assert self.jid is not None
        itype = el.get("type")
        if itype not in ("get", "set", "result", "error") or el.get("id") is None:
            raise StanzaError("bad-request", "an iq needs an id and a type")
        to = self._target(el) if el.get("to") is not None else None
        if self.ctx.muc is not None and to is not None and to.domain == self.ctx.muc.domain:
            answer = self.ctx.muc.iq(self, el, to)
            if isinstance(answer, Deferred):
                answer.addCallback(self.send_stanza)
                answer.addErrback(self._iq_failed, el)
            elif answer is not None:
                self.send_stanza(answer)
            return
        upload = self.ctx.upload
        if upload is not None and to is not None and to.domain == upload.domain:
            reply = upload.iq(self, el, to)  # XEP-0363 slots and the service's disco
            if reply is not None:
                self.send_stanza(reply)
            return
        if to is not None and to.domain != self.ctx.domain and self.ctx.s2s is not None:
            # another domain: over federation, when the policy lets this user reach it
            self.ctx.s2s.forward_iq(self, el, to)
            return
        if to is not None and to.domain == self.ctx.domain and to.local is not None and to.resource:
            # addressed to one endpoint of a user: pass it through (RFC 6121 §8.5.3.1)
            if self._route_iq_to_endpoint(el, to):
                return
            if itype in ("result", "error"):
                return
            raise StanzaError("service-unavailable")
        if itype in ("result", "error"):
            if self.ctx.pep is not None:
                self.ctx.pep.iq_answer(self, el)  # the answer to the server's caps query
            return
        reply = self.ctx.iq.handle(self, el, to)
        if isinstance(reply, Deferred):
            # a handler that reads the store answers later (XEP-0313 queries)
            reply.addCallback(lambda r: r is not None and self.send_stanza(r))
            reply.addErrback(self._iq_failed, el)
        elif reply is not None:
            self.send_stanza(reply)

    def _iq_failed(self, f: failure.Failure, el: ET.Element) -> None:
        if f.check(StanzaError):
            self.send_stanza(error_reply(el, f.value.condition, f.value.text))
            return
        log.err(f, f"c2s {self.address}: iq failed")
        self.send_stanza(error_reply(el, "internal-server-error"))

    def _route_iq_to_endpoint(self, el: ET.Element, to: JID) -> bool:
        target = self.ctx.router.sessions.get(to)
        if target is None or not isinstance(target, C2SProtocol):
            return False
        target.deliver_stanza(el)
        return True

    # -- Endpoint: what the core delivers -----------------------------------------------------

    def deliver_stanza(self, el: ET.Element) -> None:
        el.set("to", str(self.jid))
        self.send_stanza(el)

    def deliver_message(self, msg: Message) -> None:
        assert self.jid is not None
        self.send_stanza(message_stanza(msg, self.jid, self.ctx.domain))

    def deliver_carbon(self, msg: Message, direction: str) -> None:
        """XEP-0280: a copy of a message this user sent or got on another client."""
        assert self.jid is not None
        outer = ET.Element(
            C + "message", {"from": str(self.jid.bare), "to": str(self.jid), "type": msg.type}
        )
        wrapper = sub(outer, f"{{{NS_CARBONS}}}{direction}")
        forwarded = sub(wrapper, "{urn:xmpp:forward:0}forwarded")
        forwarded.append(message_stanza(msg, msg.to, self.ctx.domain))
        self.send_stanza(outer)

    def deliver_presence(self, sender: JID, presence: Presence | None) -> None:
        assert self.jid is not None
        if presence is not None and not self.csi_inactive:
            # a broadcast's stanza is serialised once for all its watchers (presence_wire.py);
            # a client that is not looking (XEP-0352) gets the element, which may be held
            self._write_stanza(WIRE.stanza(sender, self.jid, presence))
            return
        self.send_stanza(presence_stanza(sender, self.jid, presence))

    def deliver_subscription(self, sender: JID, kind: Kind) -> None:
        assert self.jid is not None
        el = ET.Element(
            C + "presence", {"from": str(sender), "to": str(self.jid.bare), "type": kind.value}
        )
        self.send_stanza(el)

    def deliver_roster_push(self, item: RosterItem, removed: bool = False) -> None:
        assert self.jid is not None
        self._push_id += 1
        iq = ET.Element(
            C + "iq", {"type": "set", "id": f"push{self._push_id}", "to": str(self.jid)}
        )
        q = sub(iq, "{jabber:iq:roster}query")
        q.append(roster_item_element(item, removed))
        self.send_stanza(iq)

    def close(self, condition: str, text: str = "") -> None:
        self.stream_error(condition, text)


def _wire(el: ET.Element | bytes) -> bytes:
    return el if isinstance(el, bytes) else serialize(el)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class C2SFactory(ServerFactory):
    def __init__(self, ctx: C2SContext) -> None:
        self.ctx = ctx

    def buildProtocol(self, addr: Any) -> C2SProtocol:
        p = C2SProtocol(self.ctx)
        p.factory = self
        return p
