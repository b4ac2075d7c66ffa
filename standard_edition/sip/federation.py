"""SIP federation: IM and presence with partner domains over mutual TLS (DESIGN §7).

`SipFederation` is a second `RemoteDelivery` (core/remote.py) beside XMPP s2s; which of the two
serves a domain is decided in edge/routes.py. What leaves: a message is a MESSAGE (RFC 3428),
a subscription request a SUBSCRIBE dialog (RFC 3856, RFC 6665), presence a NOTIFY with PIDF in
the partner's dialog, as RFC 8048 maps them to RFC 6121: subscribe ⇄ SUBSCRIBE, subscribed ⇄
NOTIFY active, unsubscribe ⇄ SUBSCRIBE with Expires 0, unsubscribed ⇄ NOTIFY terminated
(reason=rejected), probe ⇄ a SUBSCRIBE refresh. What arrives goes to the same core calls as
XMPP s2s (`router.remote_*`), which apply the one federation policy for both protocols.

Connections: one per partner domain, in both directions. We locate the partner (sip/locate.py),
connect with our certificate as the client's and check the partner's for its domain; a
partner's own connection on our edge listener, once its certificate proved its domain, is
used for our requests too. Requests wait in the domain's queue while the connection comes up;
when it cannot, each gets the answer RFC 3261 gives the sender: 404 (no such domain), 503 (no
server answers, or its certificate does not prove the domain), 408 (no answer in time), 403
(federation with it is not allowed).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.python import failure, log

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, Undeliverable
from standard_edition.core.router import SHOW
from standard_edition.core.subscription import Kind
from standard_edition.edge.limits import EdgeGuard, TokenBucket
from standard_edition.presence.model import AVAILABLE, AWAY, DND, IDLE, OFFLINE, band
from standard_edition.sip import pidf
from standard_edition.sip.dialog import (
    DialogId,
    IntervalTooBrief,
    Subscription,
    grant_expires,
    parse_event,
)
from standard_edition.sip.edge import EdgeServerTLS, EdgeSipStream, FederationStream
from standard_edition.sip.locate import locate
from standard_edition.sip.message import (
    Headers,
    ParseError,
    Request,
    Response,
    SipURI,
    Via,
    quote_string,
)
from standard_edition.sip.transaction import ServerTransaction, new_branch
from standard_edition.sip.transport import Peer
from standard_edition.xmpp.dialback import certificate_identity
from standard_edition.xmpp.s2s import ClientTLS, _peer_chain, address_of

if TYPE_CHECKING:
    from standard_edition.sip.service import SipService

__all__ = ["Link", "SipFederation"]

MAX_QUEUE = 1000  # requests waiting for one domain's connection
SUB_EXPIRES = 3600  # what we ask for our subscriptions, and the most we grant
SUB_MIN = 60
PIDF_TYPE = "application/pidf+xml"
ALLOW = "MESSAGE, SUBSCRIBE, NOTIFY, OPTIONS"
# the answer a remote status becomes for the core (and so for an XMPP or a SIP sender)
NOT_SIGNED_IN = "the recipient is not signed in"


@dataclass(eq=False)
class Link:
    """One partner domain's connection: where we are in reaching it, and what waits."""

    federation: SipFederation
    domain: str
    state: str = "idle"  # idle | resolving | connecting | ready
    peer: Peer | None = None
    stream: FederationStream | None = None  # the connection being made
    addresses: list[tuple[str, int]] = field(default_factory=list)
    queue: list[tuple[Callable[[Peer], Request], Deferred[Response]]] = field(default_factory=list)
    timer: Any = None
    refused: tuple[int, str] | None = None  # why the last attempt failed for good


@dataclass(eq=False)
class Watch:
    """A partner's user watching one of ours: the notifier side of their SUBSCRIBE."""

    sub: Subscription
    owner: str
    watcher: JID  # bare
    domain: str
    timer: Any = None
    last_body: bytes | None = None


@dataclass(eq=False)
class OutSub:
    """One of our users watching a partner's user: the subscriber side of our SUBSCRIBE."""

    user: str
    contact: JID  # bare
    call_id: str
    local_tag: str
    remote_tag: str | None = None
    cseq: int = 0
    state: str = "trying"  # trying | pending | active
    timer: Any = None
    resources: set[str] = field(default_factory=set)  # tuples last seen open


class SipFederation:
    def __init__(
        self,
        reactor: Any,
        service: SipService,
        policy: Any,
        tls_options: Callable[[], Any],
        hosts: dict[str, Any],
        *,
        sent_by: tuple[str, int],
        connect_timeout: float = 20.0,
        bind_host: str | None = None,
        resolver: Any = None,
    ) -> None:
        self.reactor = reactor
        self.service = service
        self.router = service.router
        self.domain = service.domain
        self.policy = policy
        self.tls_options = tls_options
        self.hosts = hosts
        self.sent_by = sent_by
        self.connect_timeout = connect_timeout
        self.bind_host = bind_host
        self.resolver = resolver
        self.links: dict[str, Link] = {}
        self.watches: dict[DialogId, Watch] = {}
        self.watch_index: dict[tuple[str, JID], set[DialogId]] = {}
        self.subs: dict[tuple[str, str], OutSub] = {}  # (Call-ID, our tag)
        self.sub_index: dict[tuple[str, JID], OutSub] = {}
        self.inbound: set[EdgeSipStream] = set()  # partners' connections that proved a domain
        self._client_options: Any = None
        self.server_tls: EdgeServerTLS | None = None  # the edge listener's, set by the edge
        self.counters = {
            "sip_fed_requests_in": 0,
            "sip_fed_requests_out": 0,
            "sip_fed_refused": 0,
            "sip_fed_certificate_refused": 0,
            "sip_fed_connections_out": 0,
            "sip_fed_rate_limited": 0,
        }
        self.guard: EdgeGuard | None = None  # the edge limits, set by the edge
        policy.on_refused.append(self._policy_changed)

    # -- policy --------------------------------------------------------------------------------

    def allowed(self, domain: str) -> bool:
        ours = domain == self.domain or domain.endswith("." + self.domain)
        return not ours and bool(self.policy.domain_allowed(domain))

    def _policy_changed(self, _: str) -> None:
        """A domain may no longer be allowed: its connections, dialogs and queue end."""
        for domain, link in list(self.links.items()):
            if not self.allowed(domain):
                self._fail(link, 403, "Federation with this domain is not allowed")
                if link.peer is not None:
                    self._close_peer(link.peer)
                del self.links[domain]
        for stream in list(self.inbound):
            if stream.domain is not None and not self.allowed(stream.domain):
                self.inbound.discard(stream)
                stream.close()
        for w in list(self.watches.values()):
            if not self.allowed(w.domain):
                self._drop_watch(w)
        for s in list(self.subs.values()):
            if not self.allowed(s.contact.domain):
                self._drop_sub(s)

    def user_withdrawn(self, user: str) -> None:
        """The user lost federation access (edge/enforce.py): partners watching them get a
        closed document (the core renders nothing for them now), and our subscriptions for
        the user lapse without an unsubscribe, so the partner's roster is left as it is."""
        for (owner, _), ids in list(self.watch_index.items()):
            if owner == user:
                for did in list(ids):
                    w = self.watches.get(did)
                    if w is not None and w.sub.state == "active":
                        self._notify(w)
        for s in list(self.subs.values()):
            if s.user == user:
                self._drop_sub(s)

    def _take(self, stream: EdgeSipStream) -> bool:
        """One request from a partner connection: False when it comes too fast."""
        if self.guard is None:
            return True
        if stream.federation_bucket is None:
            rate = self.guard.limits.federation_stanzas_per_second
            stream.federation_bucket = TokenBucket(rate, rate * 5, self.guard.clock)
        return stream.federation_bucket.take()

    def _close_peer(self, peer: Peer) -> None:
        stream = self.service.transports.connections.get(peer)
        if isinstance(stream, EdgeSipStream):
            stream.close()

    # -- connections ---------------------------------------------------------------------------

    def client_options(self) -> Any:
        if self._client_options is None:
            self._client_options = self.tls_options()
        return self._client_options

    def set_certificate(self, server_options: Any, client_options: Any) -> None:
        """A reloaded certificate: the edge listener and our new connections use it; open
        connections keep theirs. The options are built off the reactor (they read files)."""
        if self.server_tls is not None:
            self.server_tls.replace(server_options)
        self._client_options = client_options

    def request(self, domain: str, build: Callable[[Peer], Request]) -> Deferred[Response]:
        """Send a request to `domain` once its connection is up; fires with the final response
        (a failure to reach the partner is a synthesized 403, 404, 408 or 503)."""
        d: Deferred[Response] = Deferred()
        if not self.allowed(domain):
            d.callback(Response(403, "Federation with this domain is not allowed"))
            return d
        link = self.links.get(domain)
        if link is None:
            link = self.links[domain] = Link(self, domain)
        if link.state == "ready" and link.peer is not None:
            self._send(link.peer, build, d)
            return d
        if len(link.queue) >= MAX_QUEUE:
            d.callback(Response(503, "Too many requests waiting for this domain"))
            return d
        link.queue.append((build, d))
        if link.state == "idle":
            self._start(link)
        return d

    def _send(self, peer: Peer, build: Callable[[Peer], Request], d: Deferred[Response]) -> None:
        self.counters["sip_fed_requests_out"] += 1
        try:
            sent = self.service.send_request(build(peer), peer)
        except Exception as e:  # a request we could not even build is our fault, not theirs
            log.err(None, "sip federation: building a request")
            d.callback(Response(500, str(e)[:60] or "Server Internal Error"))
            return
        sent.addErrback(lambda f: Response(503, f.getErrorMessage()[:60] or "Unreachable"))
        sent.chainDeferred(d)

    def _start(self, link: Link) -> None:
        link.state = "resolving"
        link.refused = None
        link.timer = self.reactor.callLater(self.connect_timeout, self._timed_out, link)
        d = locate(link.domain, self.hosts, self.resolver or _default_resolver())
        d.addCallback(lambda addresses: self._resolved(link, addresses))
        d.addErrback(lambda f: self._fail(link, 404, f"Cannot locate {link.domain}"))

    def _resolved(self, link: Link, addresses: list[tuple[str, int]]) -> None:
        if link.state != "resolving":
            return
        link.addresses = list(addresses)
        self._connect_next(link)

    def _connect_next(self, link: Link) -> None:
        if link.state not in ("resolving", "connecting"):
            return
        if not link.addresses:
            status, reason = link.refused or (503, f"Cannot reach {link.domain}")
            self._fail(link, status, reason)
            return
        host, port = link.addresses.pop(0)
        link.state = "connecting"
        self.counters["sip_fed_connections_out"] += 1
        stream = link.stream = FederationStream(self.service.transports, link)

        def unresolved(f: failure.Failure) -> None:
            log.msg(f"sip federation: cannot resolve {host} for {link.domain}: {f.value}")
            if link.stream is stream:
                link.stream = None
                self._connect_next(link)

        d = address_of(host, self.resolver)
        d.addCallback(lambda ip: self._connect(link, stream, ip, port))
        d.addErrback(unresolved)

    def _connect(self, link: Link, stream: FederationStream, host: str, port: int) -> None:
        if link.stream is not stream:
            return  # given up meanwhile (timeout, policy)
        bind = (self.bind_host, 0) if self.bind_host else None
        tcp = HostnameEndpoint(
            self.reactor, host, port, timeout=self.connect_timeout, bindAddress=bind
        )
        tls = wrapClientTLS(ClientTLS(self.client_options(), link.domain), tcp)

        def failed(f: failure.Failure) -> None:
            log.msg(
                f"sip federation: cannot connect to {link.domain} at {host}:{port}: "
                f"{f.getErrorMessage()}"
            )
            if link.stream is stream:
                link.stream = None
                self._connect_next(link)

        connectProtocol(tls, stream).addErrback(failed)

    def handshake_done(self, stream: FederationStream) -> None:
        """Our connection's TLS is up: is the partner's certificate valid for its domain?"""
        link = stream.link
        chain = _peer_chain(stream.transport)
        how = certificate_identity(chain, link.domain, self.policy.pinned(link.domain))
        if how is None:
            self.counters["sip_fed_certificate_refused"] += 1
            log.msg(
                f"sip federation: {link.domain}'s certificate is neither valid for it nor "
                "pinned (se-ctl federation trust); not using the connection"
            )
            link.refused = (503, f"The certificate of {link.domain} is not trusted")
            stream.close()  # flow_closed tries the next address
            return
        stream.domain = link.domain
        if link.stream is stream:
            link.stream = None
        if link.state != "ready":
            log.msg(f"sip federation: connected to {link.domain} ({how} certificate)")
            self._ready(link, stream.peer)

    def _ready(self, link: Link, peer: Peer | None) -> None:
        if peer is None:
            return
        link.state = "ready"
        link.peer = peer
        _cancel(link.timer)
        link.timer = None
        queue, link.queue = link.queue, []
        for build, d in queue:
            self._send(peer, build, d)

    def _timed_out(self, link: Link) -> None:
        link.timer = None
        if link.state != "ready":
            stream, link.stream = link.stream, None
            self._fail(link, 408, f"{link.domain} did not answer in time")
            if stream is not None:
                stream.close()

    def _fail(self, link: Link, status: int, reason: str) -> None:
        if link.state != "ready" or link.queue:
            log.msg(f"sip federation: {link.domain}: {status} {reason}")
        link.state = "idle"
        link.peer = None
        _cancel(link.timer)
        link.timer = None
        queue, link.queue = link.queue, []
        for _, d in queue:
            d.callback(Response(status, reason))

    def flow_closed(self, peer: Peer) -> None:
        """A connection ended: a link that used it reconnects on its next request."""
        for stream in list(self.inbound):
            if stream.peer == peer:
                self.inbound.discard(stream)
        for link in self.links.values():
            if link.peer == peer:
                link.state = "idle"
                link.peer = None
                other = self._other_connection(link.domain)
                if other is not None:
                    self._ready(link, other)
            elif link.stream is not None and link.stream.peer == peer:
                link.stream = None
                self._connect_next(link)

    def _other_connection(self, domain: str) -> Peer | None:
        for stream in self.inbound:
            if stream.domain == domain and not stream.closed:
                return stream.peer
        return None

    def adopt(self, stream: EdgeSipStream, domain: str) -> None:
        """A partner's connection proved its domain: our requests may use it too."""
        stream.domain = domain
        self.inbound.add(stream)
        link = self.links.get(domain)
        if link is None:
            link = self.links[domain] = Link(self, domain)
        if link.state != "ready":
            self._ready(link, stream.peer)

    # -- requests from partners ----------------------------------------------------------------

    def partner_domain(self, req: Request) -> str | None:
        """The domain a request on an edge connection comes from, if it is not ours."""
        uri = req.from_.uri
        if not isinstance(uri, SipURI):
            return None
        host = uri.host.lower().rstrip(".")
        return None if host == self.domain else host

    def handle(
        self, req: Request, tx: ServerTransaction, peer: Peer, stream: EdgeSipStream
    ) -> None:
        """A request from a partner's server, on its connection or ours."""
        svc = self.service
        domain = self.partner_domain(req) or ""
        if req.method == "ACK":
            return
        if not self._take(stream):
            # DESIGN §7: requests per second per partner connection (RFC 3261 §21.5.4)
            self.counters["sip_fed_rate_limited"] += 1
            if self.guard is not None:
                self.guard.counters["federation_rate_exceeded"] += 1
            svc.reply(tx, 503, "Too many requests", headers=[("Retry-After", "1")])
            return
        if stream.domain is not None and domain != stream.domain:
            # a partner speaks only for its own domain (its certificate's)
            svc.reply(tx, 403, "From does not match the connection's domain")
            return
        if not self.allowed(domain):
            self.counters["sip_fed_refused"] += 1
            log.msg(f"sip federation: refused a {req.method} from {domain} ({stream.host})")
            svc.reply(tx, 403, "Federation with this domain is not allowed")
            stream.close()  # DESIGN §7: a refused domain learns nothing more
            return
        if stream.domain is None:
            if not stream.proves(domain, self.policy.pinned(domain)):
                self.counters["sip_fed_certificate_refused"] += 1
                log.msg(
                    f"sip federation: {stream.host} claims {domain} without a certificate "
                    "valid for it or pinned by the admin"
                )
                svc.reply(tx, 403, "No certificate valid for this domain")
                stream.close()
                return
            self.adopt(stream, domain)
        self.counters["sip_fed_requests_in"] += 1
        method = req.method
        if method == "MESSAGE":
            self._message_in(req, tx, domain)
        elif method == "SUBSCRIBE":
            self._subscribe_in(req, tx, domain)
        elif method == "NOTIFY":
            self._notify_in(req, tx)
        elif method == "OPTIONS":
            svc.reply(tx, 200, headers=[("Allow", ALLOW), ("Accept", "text/plain, " + PIDF_TYPE)])
        elif method in ("CANCEL", "BYE"):
            svc.reply(tx, 481)
        elif method == "INVITE":
            svc.reply(tx, 488, headers=[("Allow", ALLOW), ("Warning", '399 - "no calls"')])
        else:
            svc.reply(tx, 405, headers=[("Allow", ALLOW)])

    def _remote_user(self, req: Request) -> JID | None:
        from standard_edition.sip.service import address_of

        return address_of(req.from_.uri)

    def _local_target(self, req: Request) -> str | None:
        """The local account the Request-URI names (None: not ours, or no such user)."""
        name = self.service._user_of(req.ruri)
        if name is None:
            return None
        return self.router.local_user(JID(name, self.domain, None))

    def _message_in(self, req: Request, tx: ServerTransaction, domain: str) -> None:
        from standard_edition.sip.service import _text_of

        svc = self.service
        sender = self._remote_user(req)
        if sender is None:
            svc.reply(tx, 400, "From needs a user")
            return
        target = svc._user_of(req.ruri)
        if target is None:
            svc.reply(tx, 404)
            return
        text = _text_of(req)
        if text is None:
            svc.reply(tx, 415, headers=[("Accept", "text/plain, message/cpim")])
            return
        to = JID(target, self.domain, None)
        what = f"sip federation: MESSAGE from {sender}"
        svc.deliver_text(tx, sender, to, text, self.router.remote_message, what)

    # -- their SUBSCRIBE: we notify ------------------------------------------------------------

    def _contact(self, user: str) -> str:
        host, port = self.sent_by
        return f"<sip:{user}@{host}:{port};transport=tls>"

    def _subscribe_in(self, req: Request, tx: ServerTransaction, domain: str) -> None:
        svc = self.service
        try:
            package, _ = parse_event(req.headers.get("Event") or "")
        except ParseError:
            package = ""
        if package != "presence":
            svc.reply(tx, 489, headers=[("Allow-Events", "presence")])
            return
        try:
            expires = grant_expires(
                req.expires, default=SUB_EXPIRES, minimum=SUB_MIN, maximum=SUB_EXPIRES
            )
        except IntervalTooBrief as e:
            svc.reply(tx, 423, headers=[("Min-Expires", str(e.min_expires))])
            return
        now = svc.clock()
        if req.to.tag is not None:
            did = DialogId.of_incoming(req)
            w = self.watches.get(did) if did is not None else None
            if w is None or not w.sub.dialog.accept_remote_cseq(req):
                svc.reply(tx, 481)
                return
            w.sub.dialog.refresh_target(req)
            w.sub.refresh(expires, now)
            svc.reply(
                tx, 202 if w.sub.state == "pending" else 200, headers=[("Expires", str(expires))]
            )
            if expires == 0:
                # RFC 8048 §5: unsubscribe
                self._notify(w, force=True)
                self._drop_watch(w)
                self.router.remote_subscription(w.watcher, self._bare(w.owner), Kind.UNSUBSCRIBE)
                return
            self._arm_watch(w)
            self._notify(w, force=True)  # a refresh is also a probe
            return
        watcher = self._remote_user(req)
        owner = self._local_target(req)
        if watcher is None:
            svc.reply(tx, 400, "From needs a user")
            return
        if owner is None or not self.router.may_federate(owner, domain):
            svc.reply(tx, 404)  # no such user, or one who may not federate: the same answer
            return
        active = self.router.rosters.state(owner, watcher).has_from
        try:
            sub = Subscription.from_subscribe(
                req, self._contact(owner), now, expires, state="active" if active else "pending"
            )
        except ParseError as e:
            svc.reply(tx, e.status or 400, e.phrase)
            return
        w = Watch(sub, owner, watcher, domain)
        svc.reply(
            tx,
            200 if active else 202,
            headers=[("Expires", str(expires)), ("Contact", self._contact(owner))],
            to_tag=sub.dialog.local_tag,
        )
        if expires == 0:
            sub.terminate("timeout")  # a fetch (RFC 6665 §4.4.3)
            self._notify(w, force=True)
            return
        self.watches[sub.dialog.id] = w
        self.watch_index.setdefault((owner, watcher), set()).add(sub.dialog.id)
        self._arm_watch(w)
        self._notify(w, force=True)
        # RFC 8048 §5: a SUBSCRIBE is an RFC 6121 subscription request; an approved watcher's
        # comes back approved at once (send_subscription, SUBSCRIBED)
        self.router.remote_subscription(watcher, self._bare(owner), Kind.SUBSCRIBE)

    def _bare(self, user: str) -> JID:
        return JID(user, self.domain, None)

    def _arm_watch(self, w: Watch) -> None:
        _cancel(w.timer)
        delay = max(0.0, w.sub.expires_at - self.service.clock())
        w.timer = self.reactor.callLater(delay, self._watch_expired, w)

    def _watch_expired(self, w: Watch) -> None:
        w.timer = None
        if w.sub.state != "terminated":
            w.sub.terminate("timeout")
            self._notify(w, force=True)
        self._drop_watch(w)

    def _drop_watch(self, w: Watch) -> None:
        _cancel(w.timer)
        w.timer = None
        did = w.sub.dialog.id
        if self.watches.get(did) is w:
            del self.watches[did]
            key = (w.owner, w.watcher)
            ids = self.watch_index.get(key)
            if ids is not None:
                ids.discard(did)
                if not ids:
                    del self.watch_index[key]

    def _watches_of(self, owner: str, watcher: JID) -> list[Watch]:
        ids = self.watch_index.get((owner, watcher.bare), set())
        return [self.watches[i] for i in list(ids) if i in self.watches]

    def _notify(self, w: Watch, force: bool = False) -> None:
        sub = w.sub
        body = b""
        ctype = None
        if sub.state == "active" or (sub.state == "terminated" and w.last_body is not None):
            body = self.service.presence.document(w.owner, w.watcher)
            ctype = PIDF_TYPE
            if not force and body == w.last_body:
                return
            w.last_body = body
        elif sub.state == "pending" and not force:
            return

        def build(peer: Peer) -> Request:
            return sub.make_notify(
                self.service.clock(),
                transport="TLS",
                sent_by=self.sent_by,
                body=body,
                content_type=ctype,
            )

        def answered(resp: Response) -> None:
            # RFC 6665 §4.2.2: 481, a timeout or an unreachable partner ends the subscription
            if resp.status in (481, 408) or resp.status >= 500 or resp.status == 403:
                self._drop_watch(w)

        self.request(w.domain, build).addCallback(answered)

    # -- their NOTIFY: we subscribed -----------------------------------------------------------

    def _notify_in(self, req: Request, tx: ServerTransaction) -> None:
        svc = self.service
        s = self.subs.get((req.call_id, req.to.tag or ""))
        if s is None:
            svc.reply(tx, 481)
            return
        state_value = req.headers.get("Subscription-State") or ""
        state, params = _subscription_state(state_value)
        if state not in ("active", "pending", "terminated"):
            svc.reply(tx, 400, "Bad Subscription-State")
            return
        published: tuple[list[str], Presence | None] | None = None
        if req.body and state != "pending":
            if req.content_type != PIDF_TYPE:
                svc.reply(tx, 415, headers=[("Accept", PIDF_TYPE)])
                return
            try:
                published = _presence_of(req.body, svc.clock())
            except pidf.PidfError as e:
                svc.reply(tx, 400, f"Bad PIDF: {e}"[:80])
                return
        if s.remote_tag is None:
            s.remote_tag = req.from_.tag
        svc.reply(tx, 200)
        me = self._bare(s.user)
        if state == "active" and s.state != "active":
            s.state = "active"
            self.router.remote_subscription(s.contact, me, Kind.SUBSCRIBED)
        elif state == "pending":
            s.state = "pending"
        if published is not None:
            self._presence_in(s, *published)
        if state == "terminated":
            reason = params.get("reason", "")
            self._gone(s)
            self._drop_sub(s)
            if reason in ("rejected", "noresource"):
                # RFC 8048 §5: the contact refused or revoked the subscription
                self.router.remote_subscription(s.contact, me, Kind.UNSUBSCRIBED)
            elif reason in ("deactivated", "timeout", "probation", "") and self._wants(s):
                self._subscribe(s.user, s.contact)  # RFC 6665 §4.1.3: subscribe again

    def _presence_in(self, s: OutSub, open_ids: list[str], p: Presence | None) -> None:
        me = self._bare(s.user)
        now_open = set(open_ids) if p is not None else set()
        for res in sorted(s.resources - now_open):
            self.router.remote_presence(self._resource(s.contact, res), me, None)
        for res in sorted(now_open):
            self.router.remote_presence(self._resource(s.contact, res), me, p)
        s.resources = now_open

    def _gone(self, s: OutSub) -> None:
        me = self._bare(s.user)
        for res in sorted(s.resources):
            self.router.remote_presence(self._resource(s.contact, res), me, None)
        s.resources = set()

    def _resource(self, contact: JID, res: str) -> JID:
        try:
            return parse_jid(f"{contact}/{res}")
        except InvalidJID:
            return JID(contact.local, contact.domain, "sip")

    def _wants(self, s: OutSub) -> bool:
        st = self.router.rosters.state(s.user, s.contact)
        return bool(st.has_to or st.pending_out)

    # -- our SUBSCRIBE ---------------------------------------------------------------------------

    def _subscribe(self, user: str, contact: JID, expires: int = SUB_EXPIRES) -> None:
        """Start (or refresh) our user's subscription to a partner's user."""
        s = self.sub_index.get((user, contact))
        if s is None:
            if expires == 0:
                return
            s = OutSub(
                user, contact, f"{secrets.token_hex(12)}@{self.domain}", secrets.token_hex(8)
            )
            s.cseq = secrets.randbelow(2**16)
            self.subs[(s.call_id, s.local_tag)] = s
            self.sub_index[(user, contact)] = s
        elif s.state == "trying" and s.remote_tag is None and expires != 0:
            return  # the first SUBSCRIBE is still on its way
        s.cseq += 1
        cseq = s.cseq
        from_ = f"<sip:{user}@{self.domain}>;tag={s.local_tag}"
        to = f"<sip:{contact}>" + (f";tag={s.remote_tag}" if s.remote_tag else "")

        def build(peer: Peer) -> Request:
            h = self._headers(peer, from_, to, s.call_id, f"{cseq} SUBSCRIBE")
            h.add("Contact", self._contact(user))
            h.add("Event", "presence")
            h.add("Accept", PIDF_TYPE)
            h.add("Expires", str(expires))
            return Request("SUBSCRIBE", f"sip:{contact}", h, b"")

        if expires == 0:
            self._drop_sub(s)
        d = self.request(contact.domain, build)
        d.addCallback(self._subscribe_answered, s, expires)

    def _subscribe_answered(self, resp: Response, s: OutSub, expires: int) -> None:
        if expires == 0 or self.subs.get((s.call_id, s.local_tag)) is not s:
            return
        if 200 <= resp.status < 300:
            if s.remote_tag is None:
                s.remote_tag = resp.to.tag
            granted = resp.expires if resp.expires is not None else expires
            _cancel(s.timer)
            # refresh well before the partner's end of it (RFC 6665 §4.1.2.1)
            s.timer = self.reactor.callLater(max(30.0, granted * 0.85), self._refresh, s)
            return
        self._drop_sub(s)
        if resp.status == 481:
            if self._wants(s):
                self._subscribe(s.user, s.contact)
            return
        if resp.status in (408, 480) or resp.status >= 500:
            log.msg(f"sip federation: SUBSCRIBE to {s.contact}: {resp.status} {resp.reason}")
            return  # unreachable for now: the next login probes again
        # RFC 8048 §5: the partner refused (403, 404, 489...): as an unsubscribed
        self._gone(s)
        self.router.remote_subscription(s.contact, self._bare(s.user), Kind.UNSUBSCRIBED)

    def _refresh(self, s: OutSub) -> None:
        s.timer = None
        if self.subs.get((s.call_id, s.local_tag)) is s:
            self._subscribe(s.user, s.contact)

    def _drop_sub(self, s: OutSub) -> None:
        _cancel(s.timer)
        s.timer = None
        if self.subs.get((s.call_id, s.local_tag)) is s:
            del self.subs[(s.call_id, s.local_tag)]
        if self.sub_index.get((s.user, s.contact)) is s:
            del self.sub_index[(s.user, s.contact)]

    def _headers(self, peer: Peer, from_: str, to: str, call_id: str, cseq: str) -> Headers:
        host, port = self.sent_by
        via = Via(peer.transport, host, port, (("branch", new_branch()), ("rport", None)))
        return Headers(
            [
                ("Via", str(via)),
                ("Max-Forwards", "70"),
                ("From", from_),
                ("To", to),
                ("Call-ID", call_id),
                ("CSeq", cseq),
            ]
        )

    # -- RemoteDelivery ------------------------------------------------------------------------

    def send_message(self, msg: Message) -> Deferred[None]:
        if msg.body is None or msg.type == "error":
            return succeed(None)  # chat states and receipts have no page-mode form
        sender, to = msg.sender.bare, msg.to.bare
        display = None
        if sender.local is not None:
            acct = self.router.accounts.get(sender.local)
            display = acct.name if acct and acct.name else None
        name = f"{quote_string(display)} " if display else ""
        from_ = f"{name}<sip:{sender}>;tag={secrets.token_hex(6)}"
        call_id = f"{secrets.token_hex(12)}@{self.domain}"
        body = msg.body.encode("utf-8")

        def build(peer: Peer) -> Request:
            h = self._headers(peer, from_, f"<sip:{to}>", call_id, "1 MESSAGE")
            h.add("Content-Type", "text/plain;charset=UTF-8")
            return Request("MESSAGE", f"sip:{to}", h, body)

        return self.request(to.domain, build).addCallback(_message_outcome, to.domain)

    def send_presence(self, sender: JID, to: JID, presence: Presence | None) -> None:
        """The core tells a partner's user one endpoint's presence: the watcher's dialog gets
        the user's whole document as that watcher may see it (deduplicated)."""
        owner = sender.local
        if owner is None:
            return
        for w in self._watches_of(owner, to):
            if w.sub.state == "active":
                self._notify(w)

    def send_subscription(self, sender: JID, to: JID, kind: Kind) -> None:
        user = sender.local
        if user is None:
            return
        contact = to.bare
        if kind is Kind.SUBSCRIBE:
            self._subscribe(user, contact)
        elif kind is Kind.UNSUBSCRIBE:
            s = self.sub_index.get((user, contact))
            if s is not None:
                self._gone(s)
                self._subscribe(user, contact, expires=0)
        elif kind is Kind.SUBSCRIBED:
            for w in self._watches_of(user, contact):
                if w.sub.state == "pending":
                    w.sub.activate()
                    self._notify(w, force=True)
        elif kind is Kind.UNSUBSCRIBED:
            for w in self._watches_of(user, contact):
                w.sub.terminate("rejected")
                self._notify(w, force=True)
                self._drop_watch(w)

    def send_probe(self, sender: JID, to: JID) -> None:
        """RFC 8048 §5: a probe is a SUBSCRIBE (a refresh when the dialog exists)."""
        if sender.local is not None:
            self._subscribe(sender.local, to.bare)

    # -- status and shutdown -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            **self.counters,
            "links": {d: link.state for d, link in sorted(self.links.items())},
            "watchers": len(self.watches),
            "subscriptions": len(self.subs),
        }

    def stop(self) -> None:
        for link in list(self.links.values()):
            self._fail(link, 503, "The server is shutting down")
        for w in list(self.watches.values()):
            _cancel(w.timer)
        for s in list(self.subs.values()):
            _cancel(s.timer)


def _message_outcome(resp: Response, domain: str) -> None:
    """The partner's answer to a MESSAGE, as the core's outcome (RFC 3261 §21, RFC 7572 §6)."""
    status = resp.status
    if 200 <= status < 300:
        return
    from standard_edition.sip.service import CANNOT_CONNECT

    if "Via" not in resp.headers:
        # made here, not by the partner: the domain could not be used at all
        if status == 404:
            raise Undeliverable("remote-server-not-found", resp.reason)
        if status == 403:
            raise Undeliverable("not-allowed", resp.reason)
    if status == 480:
        raise Undeliverable("service-unavailable", NOT_SIGNED_IN)
    if status in (404, 604):
        raise Undeliverable("service-unavailable")
    if status == 403:
        raise Undeliverable("not-allowed", resp.reason or f"refused by {domain}")
    if status == 408:
        raise Undeliverable("remote-server-timeout", resp.reason)
    if status == 503:
        raise Undeliverable("remote-server-not-found", f"{CANNOT_CONNECT}: {resp.reason}")
    if status == 413 or status == 513:
        raise Undeliverable("not-acceptable", resp.reason or "too large")
    raise Undeliverable("undefined-condition", f"{status} {resp.reason}")


def _subscription_state(value: str) -> tuple[str, dict[str, str]]:
    """RFC 6665 §8.2.3: the state and its parameters."""
    state, _, rest = value.partition(";")
    params = {}
    for part in rest.split(";"):
        k, _, v = part.partition("=")
        if k.strip():
            params[k.strip().lower()] = v.strip()
    return state.strip().lower(), params


# a partner's presence as XMPP <show/> would say it, when it names no exact code
_SHOW_CODE = {None: AVAILABLE, "chat": AVAILABLE, "away": IDLE, "xa": AWAY, "dnd": DND}


def code_of(p: Presence) -> int:
    """The availability code a presence stands for (DESIGN §4)."""
    if p.code is not None:
        return p.code
    if p.manual is not None:
        return p.manual.code
    return _SHOW_CODE.get(p.show, AVAILABLE)


def _presence_of(body: bytes, now: float) -> tuple[list[str], Presence | None]:
    """A partner's PIDF document: the open tuples' ids and the presence they show."""
    published = pidf.parse(body, now)
    root = ET.fromstring(body)  # pidf.parse refused DTDs and malformed documents already
    ns = "{" + pidf.PIDF + "}"
    open_ids = [
        t.get("id") or "sip"
        for t in root.iter(ns + "tuple")
        if (t.findtext(f"{ns}status/{ns}basic") or "").strip() == "open"
    ]
    if not open_ids or published.state.code == OFFLINE:
        return [], None
    if published.manual is not None:
        code = published.manual.code
    elif published.state.idle_since is not None:
        code = IDLE
    else:
        code = AVAILABLE
    shown = SHOW[band(code)]
    return open_ids, Presence(show=shown, status=published.note, code=code)


def _default_resolver() -> Any:
    from twisted.names import client

    return client


def _cancel(call: Any) -> None:
    if call is not None and call.active():
        call.cancel()
