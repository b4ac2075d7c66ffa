"""The SIP service: the transaction user between the transports and the protocol-free core.

Messages from `transport.py` are checked (RFC 3261 §8.2, §18.2.1), run through the sans-I/O
transaction layer, and each new request is answered here: REGISTER by the registrar, MESSAGE
through the core's router (RFC 3428, RFC 7572), SUBSCRIBE / PUBLISH by `presence.py`, INVITE
with 488 (DESIGN §3: IM and presence only). Requests the core sends to SIP users (MESSAGE,
NOTIFY) go out as client transactions whose timers run on the reactor.
"""

from __future__ import annotations

import email.parser
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Hashable
from datetime import UTC
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.python import failure, log

from standard_edition.conference.rooms import RoomError
from standard_edition.conference.service import INVITE
from standard_edition.core.jid import JID, InvalidJID, parse_jid, prepare_username
from standard_edition.core.model import Message, Presence, Undeliverable
from standard_edition.core.router import Router
from standard_edition.core.subscription import Kind
from standard_edition.core.url_filter import LINK_BLOCKED
from standard_edition.edge.limits import EdgeGuard
from standard_edition.presence.model import AVAILABLE, EndpointState
from standard_edition.sip.auth import Authenticator
from standard_edition.sip.edge import EdgeSipStream
from standard_edition.sip.endpoint import SipEndpoint
from standard_edition.sip.message import (
    KNOWN_METHODS,
    Headers,
    ParseError,
    Request,
    Response,
    SipURI,
    Via,
    make_response,
    parse_uri,
    quote_string,
    serialize,
)
from standard_edition.sip.registrar import Binding, Registrar, resource_for
from standard_edition.sip.transaction import (
    CancelTimer,
    Deliver,
    Send,
    ServerTransaction,
    StartTimer,
    Terminated,
    Timeout,
    TransactionLayer,
    new_branch,
)
from standard_edition.sip.transport import Peer, Transports
from standard_edition.store.database import Database

if TYPE_CHECKING:
    from standard_edition.conference.service import Conferences
    from standard_edition.sip.federation import SipFederation

__all__ = ["ALLOW", "SipService", "status_for"]

ALLOW = "REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, OPTIONS, ACK, CANCEL, BYE"
ACCEPT = "text/plain, message/cpim, application/pidf+xml"
UDP_MAX_BODY = (
    1300  # DESIGN §3, RFC 3261 §18.1.1: larger requests use a congestion-controlled transport
)
MAX_IM_BODY = 32 * 1024  # RFC 3428 §7: beyond this a MESSAGE is refused with 413
NS_CLIENT_BODY = "{jabber:client}body"
# DESIGN §3: said to the sender of a large message that has no reliable way to its recipient
TOO_LARGE = (
    "the message is too large for the recipient's connection "
    f"(over {UDP_MAX_BODY} bytes, and no TCP or TLS path to it)"
)
# the start of the text of a federation failure where the partner's server could not be used
CANNOT_CONNECT = "cannot connect to the partner's server"


def status_for(e: Undeliverable) -> tuple[int, str | None]:
    """The SIP answer for a message the core could not deliver (RFC 7572 §6, DESIGN §5)."""
    if e.condition == "service-unavailable":
        if "not signed in" in e.text:
            return 480, None  # offline, and offline IM is off
        if "full" in e.text:
            return 480, "Offline storage full"
        return 404, None  # no such user, or one who blocked the sender: the same answer
    if e.condition == "not-acceptable" and e.text == TOO_LARGE:
        return 513, "Message Too Large for the recipient's connection"
    if e.condition == "not-acceptable":
        return 403, e.text or None
    if e.condition == "remote-server-not-found" and e.text.startswith(CANNOT_CONNECT):
        # RFC 3263 §4.3: no server of the domain could be used; the reason says why
        return 503, e.text[len(CANNOT_CONNECT) :].lstrip(": ")[:80] or None
    if e.condition in ("item-not-found", "remote-server-not-found", "jid-malformed"):
        return 404, None
    if e.condition == "remote-server-timeout":
        return 408, None
    if e.condition == "not-allowed":
        return 403, e.text[:80] or None  # federation policy (DESIGN §7)
    if e.condition == "resource-constraint":
        return 500, "Message not archived, not delivered"  # archive critical mode (DESIGN §6)
    return 500, None


def address_of(uri: Any) -> JID | None:
    """The bare user@host address a SIP URI with a user part names, or None."""
    if not isinstance(uri, SipURI) or not uri.user:
        return None
    try:
        return parse_jid(f"{uri.user}@{uri.host.lower().rstrip('.')}").bare
    except InvalidJID:
        return None


class TransactionTimers:
    """The transaction layer's timers on the reactor, kept by transaction: one that ends
    cancels its own without looking at anyone else's (under load there are tens of thousands,
    most of them Timer J and K waiting out retransmissions)."""

    def __init__(self, reactor: Any, fire: Callable[[Hashable, str], None]) -> None:
        self._reactor = reactor
        self._fire = fire  # (transaction key, timer name) when a timer runs out
        self._running: dict[Hashable, dict[str, Any]] = {}

    def __len__(self) -> int:
        return sum(len(r) for r in self._running.values())

    def start(self, key: Hashable, name: str, seconds: float) -> None:
        """Start (or restart) timer `name` of transaction `key`."""
        running = self._running.setdefault(key, {})
        old = running.pop(name, None)
        if old is not None and old.active():
            old.cancel()
        running[name] = self._reactor.callLater(seconds, self._fire, key, name)

    def cancel(self, key: Hashable, name: str) -> None:
        running = self._running.get(key)
        if running is None:
            return
        call = running.pop(name, None)
        if call is not None and call.active():
            call.cancel()
        if not running:
            del self._running[key]

    def fired(self, key: Hashable, name: str) -> None:
        """Forget a timer that has run out (called by `fire`'s owner before acting on it)."""
        running = self._running.get(key)
        if running is not None:
            running.pop(name, None)
            if not running:
                del self._running[key]

    def end(self, key: Hashable) -> None:
        """Transaction `key` is over: its timers go."""
        for call in self._running.pop(key, {}).values():
            if call.active():
                call.cancel()

    def stop(self) -> None:
        for running in self._running.values():
            for call in running.values():
                if call.active():
                    call.cancel()
        self._running.clear()


class SipService:
    """The transaction user; implements transport.Core."""

    def __init__(
        self,
        reactor: Any,
        router: Router,
        db: Database,
        domain: str,
        digest: tuple[str, ...] = ("MD5",),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reactor = reactor
        self.router = router
        self.domain = domain
        self.clock = clock
        self.transports = Transports(reactor, self)
        self.tx = TransactionLayer()
        self.auth = Authenticator(reactor, router.accounts, domain, digest)
        self.registrar = Registrar(reactor, db, self._bound, self._unbound, clock=clock)
        self._timers = TransactionTimers(reactor, self._timer_fired)
        self._pending: dict[Hashable, defer.Deferred[Response]] = {}
        self.counters = {"requests": 0, "responses": 0, "malformed": 0}
        # conferences (conference/service.py): sip:room@conference.<domain>, set by the server
        self.conferences: Conferences | None = None
        # DESIGN §7, set by the edge: partners' servers (sip/federation.py), and the limits and
        # outside-access policy of remote users on the edge listener
        self.federation: SipFederation | None = None
        self.edge_guard: EdgeGuard | None = None
        self.policy: Any = None
        from standard_edition.sip.presence import PresenceAgent

        self.presence = PresenceAgent(self)

    def start(self) -> defer.Deferred[int]:
        return self.registrar.load()

    def stop(self) -> None:
        self.presence.stop()
        self.registrar.stop()
        self._timers.stop()
        self.transports.close_all()

    # -- transport.Core ----------------------------------------------------------------------

    def received(self, msg: Request | Response, peer: Peer) -> None:
        try:
            msg.validate()
        except ParseError as e:
            self.counters["malformed"] += 1
            if isinstance(msg, Request) and e.status is not None and msg.method != "ACK":
                self._reply_stateless(msg.headers, e.status, e.phrase, peer)
            return
        reply_peer = peer
        if isinstance(msg, Request):
            self.counters["requests"] += 1
            via = msg.top_via
            # RFC 3261 §18.2.1, RFC 3581 §4: note where the request really came from
            marked = via.with_received(peer.host, peer.port)
            if marked != via:
                msg.replace_top_via(marked)
            if not peer.reliable and not via.has_rport:
                # §18.2.2: without rport, answers go to the source address and sent-by port
                reply_peer = Peer("UDP", peer.host, via.port or 5060)
        else:
            self.counters["responses"] += 1
        try:
            actions = self.tx.receive(msg, reply_peer, peer.reliable)
        except ParseError as e:
            if isinstance(msg, Request) and e.status is not None and msg.method != "ACK":
                self._reply_stateless(msg.headers, e.status, e.phrase, reply_peer)
            return
        self._run(actions, source=peer)

    def malformed(self, error: ParseError, peer: Peer) -> None:
        self.counters["malformed"] += 1
        if error.status is None or error.headers is None:
            return
        self._reply_stateless(error.headers, error.status, error.phrase, peer)

    def flow_closed(self, peer: Peer) -> None:
        self.registrar.flow_closed(peer)
        if self.federation is not None:
            self.federation.flow_closed(peer)

    def edge_stream(self, peer: Peer) -> EdgeSipStream | None:
        """The edge connection a request came on (None: a LAN listener's)."""
        stream = self.transports.connections.get(peer)
        return stream if isinstance(stream, EdgeSipStream) else None

    def edge_streams_of(self, user: str) -> list[EdgeSipStream]:
        """The open edge connections on which `user` authenticated a request."""
        return [
            s
            for s in self.transports.connections.values()
            if isinstance(s, EdgeSipStream) and user in s.users and not s.closed
        ]

    def _reply_stateless(self, headers: Headers, status: int, phrase: str, peer: Peer) -> None:
        """Answer a request the transaction layer cannot take (RFC 3261 §8.2, §16.3)."""
        if headers.get("Via") is None:
            return  # no way to address an answer
        fake = Request("OPTIONS", "sip:invalid", headers)
        resp = make_response(fake, status, phrase)
        self.transports.send(peer, serialize(resp)).addErrback(lambda f: None)

    # -- transaction actions -----------------------------------------------------------------

    def _run(self, actions: list[Any], source: Peer | None = None) -> None:
        for a in actions:
            if isinstance(a, Send):
                d = self.transports.send(a.peer, serialize(a.message))
                d.addErrback(self._send_failed, a)
            elif isinstance(a, StartTimer):
                self._timers.start(a.key, a.name, a.seconds)
            elif isinstance(a, CancelTimer):
                self._timers.cancel(a.key, a.name)
            elif isinstance(a, Deliver):
                if isinstance(a.message, Request):
                    if a.transaction is not None:
                        assert isinstance(a.transaction, ServerTransaction)
                        self._request_safely(a.message, a.transaction, source or a.peer)
                elif a.transaction is not None and a.message.status >= 200:
                    d = self._pending.pop(a.transaction.key, None)
                    if d is not None:
                        d.callback(a.message)
            elif isinstance(a, Timeout):
                self._finish_client(a.key, 408, "Request Timeout")
            elif isinstance(a, Terminated):
                self._timers.end(a.key)
                if a.reason == "transport error":
                    self._finish_client(a.key, 503, "Service Unavailable")
                else:
                    self._finish_client(a.key, 408, "Request Timeout")

    def _finish_client(self, key: Hashable, status: int, reason: str) -> None:
        d = self._pending.pop(key, None)
        if d is not None:
            d.callback(Response(status, reason))

    def _timer_fired(self, key: Any, name: str) -> None:
        self._timers.fired(key, name)
        self._run(self.tx.timer_fired(key, name))

    def _send_failed(self, f: failure.Failure, action: Send) -> None:
        log.msg(f"sip: cannot send to {action.peer}: {f.getErrorMessage()}")
        if isinstance(action.message, Request):
            try:
                key = ("c", action.message.top_via.branch or "", action.message.cseq.method)
            except ParseError:
                return
            self._run(self.tx.transport_error(key))

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        self._run(self.tx.send_response(tx, response))

    def reply(
        self,
        tx: ServerTransaction,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        *,
        delay: float = 0.0,
        to_tag: str | None = None,
    ) -> None:
        resp = make_response(
            tx.request, status, reason, to_tag=to_tag or secrets.token_hex(6), headers=headers
        )
        if delay > 0:
            self.reactor.callLater(delay, self.respond, tx, resp)
        else:
            self.respond(tx, resp)

    def send_request(self, req: Request, peer: Peer) -> defer.Deferred[Response]:
        """Start a client transaction; fires with the final response (408/503 synthesized)."""
        d: defer.Deferred[Response] = defer.Deferred()
        try:
            ct, actions = self.tx.send_request(req, peer, peer.reliable)
        except ValueError as e:
            return defer.fail(e)
        self._pending[ct.key] = d
        self._run(actions)
        return d

    # -- requests ----------------------------------------------------------------------------

    def _request_safely(self, req: Request, tx: ServerTransaction, peer: Peer) -> None:
        try:
            self._request(req, tx, peer)
        except ParseError as e:
            self.reply(tx, e.status or 400, e.phrase)
        except Exception:
            log.err(None, f"sip: {req.method} from {peer}")
            self.reply(tx, 500)

    def _request(self, req: Request, tx: ServerTransaction, peer: Peer) -> None:
        method = req.method
        edge = self.edge_stream(peer) if peer.transport == "TLS" else None
        if edge is not None:
            # DESIGN §7: a partner's server (its certificate, checked per domain) or a remote
            # user (digest, like on the LAN, under the edge limits)
            if self.federation is not None and (
                edge.domain is not None or self.federation.partner_domain(req) is not None
            ):
                self.federation.handle(req, tx, peer, edge)
                return
            if not edge.take_request():
                if self.edge_guard is not None:
                    self.edge_guard.counters["stanza_rate_exceeded"] += 1
                self.reply(tx, 503, "Too many requests", headers=[("Retry-After", "1")])
                return
        if method == "CANCEL":
            # RFC 3261 §9.2: every request is answered at once, so nothing is left to cancel
            self.reply(tx, 481)
            return
        unsupported = [t for t in req.tokens("Require") if t]
        if unsupported:
            # RFC 3261 §8.2.2.3
            self.reply(tx, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "REGISTER":
            self._with_user(req, tx, peer, proxy=False, then=self._register)
        elif method == "MESSAGE":
            if req.max_forwards == 0:
                self.reply(tx, 483)
                return
            self._with_user(req, tx, peer, proxy=True, then=self._message)
        elif method in ("SUBSCRIBE", "PUBLISH"):
            self._with_user(req, tx, peer, proxy=True, then=self.presence.handle)
        elif method == "NOTIFY":
            # we subscribe to nobody, so no NOTIFY can belong to a subscription (RFC 6665 §4.1.3)
            self.reply(tx, 481)
        elif method == "OPTIONS":
            self.reply(
                tx,
                200,
                headers=[
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Allow-Events", "presence, presence.winfo"),
                ],
            )
        elif method == "INVITE":
            # DESIGN §3: this server carries IM and presence, not calls
            self.reply(tx, 488, headers=[("Allow", ALLOW), ("Warning", '399 - "no calls"')])
        elif method == "BYE":
            self.reply(tx, 481)
        elif method in KNOWN_METHODS:
            # RFC 3261 §8.2.1: a method we know but do not serve
            self.reply(tx, 405, headers=[("Allow", ALLOW)])
        else:
            self.reply(tx, 501, headers=[("Allow", ALLOW)])

    def _with_user(
        self,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        *,
        proxy: bool,
        then: Callable[[Request, ServerTransaction, Peer, str], None],
    ) -> None:
        """Authenticate (RFC 3261 §22), check the identity claimed, then go on."""
        edge = self.edge_stream(peer)
        guard = self.edge_guard if edge is not None else None
        attempted = _digest_user(req, proxy) if guard is not None else None
        if guard is not None and attempted is not None:
            wait = guard.login_wait("edge", peer.host, attempted)
            if wait > 0:
                # DESIGN §7: locked out on the edge only; the LAN is another origin
                guard.login_refused()
                retry = str(int(wait) + 1)
                self.reply(tx, 503, "Too many failed logins", headers=[("Retry-After", retry)])
                return
        res = self.auth.check(req, peer.host, proxy=proxy)
        if res.user is None:
            if res.forbidden and guard is not None:
                guard.login_failed("edge", peer.host, attempted)
            if res.forbidden:
                self.reply(tx, 403, "Wrong credentials", delay=res.delay)
            else:
                self.reply(tx, 407 if proxy else 401, headers=res.challenge, delay=res.delay)
            return
        user = res.user
        claimed = req.to if req.method == "REGISTER" else req.from_
        if self._user_of(claimed.uri) != user:
            # the digest user may act only as itself (RFC 3261 §10.3 step 3)
            self.reply(tx, 403, "Identity does not match credentials", delay=res.delay)
            return
        if edge is not None:
            # DESIGN §7: every request of a remote user, registered or not, is an edge one
            if self.policy is not None and not self.policy.outside_access(user):
                if guard is not None:
                    guard.counters["outside_access_refused"] += 1
                self.reply(tx, 403, "No outside access for this account")
                return
            edge.users.add(user)
            if guard is not None:
                guard.login_succeeded("edge", peer.host, user)
        if res.delay > 0:
            self.reactor.callLater(res.delay, then, req, tx, peer, user)
        else:
            then(req, tx, peer, user)

    def remote_of(self, uri: Any) -> JID | None:
        """The address in another domain a sip: URI names (federation), or None."""
        if not isinstance(uri, SipURI) or uri.scheme not in ("sip", "sips"):
            return None
        host = uri.host.lower().rstrip(".")
        if host == self.domain or host.endswith("." + self.domain) or not self.router.remote:
            return None
        return address_of(uri)

    def _user_of(self, uri: Any) -> str | None:
        """The local account a sip: URI names (user part folded like XMPP's), or None."""
        if not isinstance(uri, SipURI) or uri.scheme not in ("sip", "sips") or not uri.user:
            return None
        if uri.host.lower() != self.domain:
            return None
        try:
            return prepare_username(uri.user)
        except InvalidJID:
            return None

    # -- REGISTER ----------------------------------------------------------------------------

    def _register(self, req: Request, tx: ServerTransaction, peer: Peer, user: str) -> None:
        flow = peer if peer.reliable else None
        origin = "edge" if self.edge_stream(peer) is not None else "internal"
        self.respond(tx, self.registrar.register(req, user, str(peer), flow, origin))

    def _bound(self, b: Binding) -> None:
        jid = JID(b.username, self.domain, resource_for(b.contact))
        address = b.source.split(":", 1)[-1]
        ep = SipEndpoint(self, b, jid, address, self.clock())
        ep.origin = b.origin  # "edge": a remote user (DESIGN §7), policies and se-ctl see it
        b.endpoint = ep
        self.router.bind(ep)
        # DESIGN §5: a registration is available until PUBLISH says otherwise
        self.router.presence_update(ep, Presence(state=EndpointState(AVAILABLE)))

    def _unbound(self, b: Binding) -> None:
        ep = b.endpoint
        b.endpoint = None
        if ep is not None:
            self.presence.endpoint_gone(ep)
            if self.conferences is not None:
                self.conferences.endpoint_gone(ep.jid)
            self.router.unbind(ep)

    def endpoint_closed(self, ep: SipEndpoint) -> None:
        self.registrar.remove(ep.binding)

    def endpoint_for(self, user: str, req: Request, peer: Peer) -> SipEndpoint | None:
        """The registration a request comes from: its Contact, or the flow it arrived on."""
        contacts = {str(c.uri) for c in req.contacts} if req.headers.get("Contact") else set()
        for b in self.registrar.bindings(user):
            if b.contact in contacts or (peer.reliable and b.flow == peer):
                return b.endpoint  # type: ignore[no-any-return]
        return None

    # -- MESSAGE (RFC 3428) ------------------------------------------------------------------

    def _message(self, req: Request, tx: ServerTransaction, peer: Peer, user: str) -> None:
        room = self._room_of(req.ruri)
        target = self._user_of(req.ruri)
        remote = self.remote_of(req.ruri) if target is None and room is None else None
        if target is None and room is None and remote is None:
            self.reply(tx, 404)
            return
        if len(req.body) > MAX_IM_BODY:
            self.reply(tx, 413)
            return
        text = _text_of(req)
        if text is None:
            self.reply(tx, 415, headers=[("Accept", "text/plain, message/cpim")])
            return
        if room is not None:
            self._room_message(req, tx, peer, user, room, text)
            return
        if (
            remote is None
            and text.lstrip().lower().startswith(INVITE + " ")
            and self.conferences is not None
        ):
            assert target is not None
            self._escalate(req, tx, peer, user, target, text)
            return
        ep = self.endpoint_for(user, req, peer)
        sender = ep.jid if ep is not None else JID(user, self.domain, None)
        to = remote or JID(target, self.domain, None)
        self.deliver_text(
            tx,
            sender,
            to,
            text,
            self.router.route_message,
            f"sip: MESSAGE from {user}",
            origin="edge" if self.edge_stream(peer) is not None else "internal",
        )

    def deliver_text(
        self,
        tx: ServerTransaction,
        sender: JID,
        to: JID,
        text: str,
        route: Callable[[Message], defer.Deferred[None]],
        what: str,
        origin: str | None = None,
    ) -> None:
        """A MESSAGE's text as a chat message handed to `route`; the transaction gets 200, the
        status a refusal maps to, or 500 for anything else (logged as `what`)."""
        body = ET.Element(NS_CLIENT_BODY)
        body.text = text
        msg = Message(
            sender=sender,
            to=to,
            type="chat",
            body=text,
            id=secrets.token_hex(8),
            payload=(body,),
            protocol="sip",
            origin=origin,
        )
        try:
            d = route(msg)
        except Undeliverable as e:
            self._undeliverable(tx, e)
            return
        d.addCallbacks(lambda _: self.reply(tx, 200), lambda f: self._refused(tx, f, what))

    # -- conferences (DESIGN §5) -------------------------------------------------------------

    def _room_of(self, uri: Any) -> Any:
        """The conference room a sip:room@conference.<domain> URI names, if it exists."""
        conf = self.conferences
        if conf is None or not isinstance(uri, SipURI) or not uri.user:
            return None
        if uri.host.lower() != conf.domain:
            return None
        try:
            return conf.room_of(parse_jid(f"{uri.user}@{conf.domain}"))
        except InvalidJID:
            return None

    def _occupant_endpoint(self, user: str, req: Request, peer: Peer) -> SipEndpoint | None:
        """The registration that takes part in a room: the sender's, else any of the user's."""
        ep = self.endpoint_for(user, req, peer)
        if ep is None:
            ep = next((b.endpoint for b in self.registrar.bindings(user) if b.endpoint), None)
        return ep

    def _room_message(
        self, req: Request, tx: ServerTransaction, peer: Peer, user: str, room: Any, text: str
    ) -> None:
        """A MESSAGE to a room: a line said there, the reply that joins, or /leave."""
        assert self.conferences is not None
        ep = self._occupant_endpoint(user, req, peer)
        if ep is None:
            self.reply(tx, 403, "Register before taking part in a conference")
            return
        try:
            d = self.conferences.plain_line(room, ep.jid, text)
        except RoomError as e:
            self.reply(tx, *_room_status(e))
            return
        what = f"sip: conference line from {user}"
        d.addCallbacks(lambda _: self.reply(tx, 200), lambda f: self._refused(tx, f, what))

    def _escalate(
        self, req: Request, tx: ServerTransaction, peer: Peer, user: str, target: str, text: str
    ) -> None:
        """`/invite carol` in a one-to-one chat: the chat becomes a conference (DESIGN §5)."""
        assert self.conferences is not None
        ep = self._occupant_endpoint(user, req, peer)
        if ep is None:
            self.reply(tx, 403, "Register before starting a conference")
            return
        others = []
        for word in text.split()[1:]:
            name = word.strip("<>,;").removeprefix("sip:").removeprefix("sips:")
            try:
                others.append(parse_jid(name if "@" in name else f"{name}@{self.domain}").bare)
            except InvalidJID:
                self.reply(tx, 404, f"No user {name}"[:80])
                return
        if not others:
            self.reply(tx, 400, "Say whom to invite: /invite NAME")
            return
        try:
            self.conferences.escalate(ep.jid, JID(target, self.domain, None), others)
        except RoomError as e:
            self.reply(tx, *_room_status(e))
            return
        self.reply(tx, 200)

    def _refused(self, tx: ServerTransaction, f: failure.Failure, what: str) -> None:
        e = f.value
        if isinstance(e, Undeliverable):
            self._undeliverable(tx, e)
        else:
            log.err(f, f"{what} not delivered")
            self.reply(tx, 500)

    def _undeliverable(self, tx: ServerTransaction, e: Undeliverable) -> None:
        """The final answer to a MESSAGE the core refused; a link the IM URL filter blocked
        also gets a Warning header (RFC 3261 §20.43, 399: miscellaneous) with the reason."""
        status, reason = status_for(e)
        headers: list[tuple[str, str]] = []
        if e.app == LINK_BLOCKED:
            headers.append(("Warning", f"399 {self.domain} {quote_string(e.text)}"))
        self.reply(tx, status, reason, headers)

    # -- MESSAGE to a registration -----------------------------------------------------------

    def send_message(self, b: Binding, msg: Message) -> defer.Deferred[None] | None:
        """The core delivers a message to a registration: a MESSAGE to its contact. The
        Deferred fails with Undeliverable when the contact does not take it."""
        if msg.body is None or msg.type == "error":
            return None  # chat states and receipts have no SIP page-mode form
        sender = msg.sender
        display = None
        text = msg.body
        conf = self.conferences
        if conf is not None and sender.domain == conf.domain:
            # a room speaks from its own URI, so that a reply goes back to the room; the
            # speaker's nickname is the display name and starts the line
            if sender.resource:
                display = sender.resource
                text = f"{sender.resource}: {text}"
            sender = sender.bare
        elif sender.local is not None and sender.domain == self.domain:
            acct = self.router.accounts.get(sender.local)
            display = acct.name if acct and acct.name else None
        from_uri = f"sip:{sender.local}@{sender.domain}" if sender.local else f"sip:{sender.domain}"
        name = f"{quote_string(display)} " if display else ""
        extra: list[tuple[str, str]] = []
        if msg.delay is not None:
            # stored while the user was offline, or room history: the original time, in the
            # Date header (RFC 3261 §20.17) and in the text, which is what clients show
            when = msg.delay.astimezone(UTC)
            extra.append(("Date", formatdate(when.timestamp(), usegmt=True)))
            text = f"[{when:%Y-%m-%d %H:%M} UTC] {text}"
        body = text.encode("utf-8")
        headers = [
            ("From", f"{name}<{from_uri}>;tag={secrets.token_hex(6)}"),
            ("To", f"<sip:{b.username}@{self.domain}>"),
            ("Call-ID", f"{secrets.token_hex(12)}@{self.domain}"),
            ("CSeq", "1 MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", "text/plain;charset=UTF-8"),
            *extra,
        ]
        large = len(body) > UDP_MAX_BODY
        # the core learns whether the request could be sent (a large body needs a TCP or TLS
        # connection, DESIGN §3); the contact's own answer comes later and is only logged
        if b.flow is not None and self.transports.connected(b.flow):
            where: defer.Deferred[Peer] = defer.succeed(b.flow)
        else:
            where = self.peer_for(b.contact, len(body))
        where.addCallback(lambda peer: self.transports.reachable(peer).addCallback(lambda _: peer))

        def send(peer: Peer) -> None:
            d = self.request_to(peer, "MESSAGE", b.contact, headers, body)
            d.addCallbacks(answered, lambda f: log.err(f, f"sip: MESSAGE to {b.username}"))

        def answered(resp: Response) -> None:
            if resp.status >= 300:
                log.msg(f"sip: MESSAGE to {b.username} at {b.contact}: {resp.status} {resp.reason}")

        def unsent(f: failure.Failure) -> None:
            log.msg(f"sip: MESSAGE to {b.username} at {b.contact} not sent: {f.getErrorMessage()}")
            if large:
                raise Undeliverable("not-acceptable", TOO_LARGE)
            raise Undeliverable("recipient-unavailable", f.getErrorMessage())

        return where.addCallbacks(send, unsent)

    def request_to_binding(
        self,
        b: Binding,
        method: str,
        ruri: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> defer.Deferred[Response]:
        """Send a request to a registered contact, over its flow when it is still open."""
        if b.flow is not None and self.transports.connected(b.flow):
            return self.request_to(b.flow, method, ruri, headers, body)
        return self.request_to_uri(b.contact, method, ruri, headers, body)

    def request_to_uri(
        self,
        target: str,
        method: str,
        ruri: str,
        headers: list[tuple[str, str]],
        body: bytes,
        flow: Peer | None = None,
    ) -> defer.Deferred[Response]:
        """Send a request to the address a URI names, or over `flow` while it is open."""
        d = self.peer_for(target, len(body), flow)
        return d.addCallback(lambda peer: self.request_to(peer, method, ruri, headers, body))

    def peer_for(
        self, target: str, body_len: int = 0, flow: Peer | None = None
    ) -> defer.Deferred[Peer]:
        """Where a request to `target` goes (RFC 3263 §4 for numeric hosts, A lookup else)."""
        if flow is not None and self.transports.connected(flow):
            return defer.succeed(flow)
        try:
            uri = parse_uri(target)
        except ParseError as e:
            return defer.fail(e)
        if not isinstance(uri, SipURI) or not uri.host:
            return defer.fail(ValueError(f"cannot send to {target}"))
        transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
        if transport not in ("UDP", "TCP", "TLS"):
            return defer.fail(ValueError(f"unsupported transport {transport}"))
        if transport == "UDP" and body_len > UDP_MAX_BODY:
            transport = "TCP"  # RFC 3261 §18.1.1: never a large body over UDP
        port = uri.port or (5061 if transport == "TLS" else 5060)
        host = uri.host.strip("[]")
        if isIPAddress(host) or isIPv6Address(host):
            resolved: defer.Deferred[str] = defer.succeed(host)
        else:
            resolved = self.reactor.resolve(host)
        return resolved.addCallback(lambda ip: Peer(transport, ip, port))

    def request_to(
        self,
        peer: Peer,
        method: str,
        ruri: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> defer.Deferred[Response]:
        if peer.transport == "UDP" and len(body) > UDP_MAX_BODY:
            peer = Peer("TCP", peer.host, peer.port)
        host, port = self.transports.sent_by(peer.transport)
        via = Via(peer.transport, host, port, (("branch", new_branch()), ("rport", None)))
        h = Headers([("Via", str(via))])
        for name, value in headers:
            h.add(name, value)
        return self.send_request(Request(method, ruri, h, body), peer)

    # -- subscriptions for winfo -------------------------------------------------------------

    def subscription_request(self, ep_jid: JID, sender: JID, kind: Kind) -> None:
        self.presence.subscription_request(ep_jid, sender, kind)


def _digest_user(req: Request, proxy: bool) -> str | None:
    """The account a request's digest credentials name, for the edge lockout."""
    names = ("Proxy-Authorization", "Authorization") if proxy else ("Authorization",)
    for name in names:
        for h in req.auth_headers(name):
            if h.scheme.lower() == "digest":
                raw = h.get("username") or ""
                try:
                    return prepare_username(raw)
                except InvalidJID:
                    return raw[:64] or None
    return None


def _room_status(e: RoomError) -> tuple[int, str | None]:
    """The SIP answer for a refused room operation."""
    if e.condition == "item-not-found":
        return 404, e.text or None
    if e.condition == "conflict":
        return 409, e.text or None
    if e.condition in ("bad-request", "jid-malformed"):
        return 400, e.text or None
    return 403, e.text or None  # registration-required, not-acceptable, forbidden


def _text_of(req: Request) -> str | None:
    """The text of a MESSAGE: text/plain, or the text/plain inside message/cpim (RFC 3862)."""
    ctype = req.content_type
    charset = _charset(req.headers.get("Content-Type") or "")
    if ctype is None and not req.body:
        return ""
    if ctype == "text/plain":
        return req.body.decode(charset, "replace")
    if ctype == "message/cpim":
        # CPIM: message headers, a blank line, then a MIME entity
        raw = req.body.replace(b"\r\n", b"\n")
        _, sep, entity = raw.partition(b"\n\n")
        if not sep:
            return None
        inner = email.parser.BytesParser().parsebytes(entity)
        if inner.get_content_type() != "text/plain":
            return None
        payload = inner.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        return payload.decode(inner.get_content_charset() or "utf-8", "replace")
    return None


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            cs = value.strip().strip('"')
            try:
                "".encode(cs)
            except LookupError:
                return "utf-8"
            return cs
    return "utf-8"
