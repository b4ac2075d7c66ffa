"""SIP presence: SUBSCRIBE/NOTIFY (RFC 3856, RFC 6665) and PUBLISH (RFC 3903).

Both ends meet the XMPP side only in the core. A watcher's SUBSCRIBE is authorized from the
same roster the XMPP side keeps: a watcher the owner already shares presence with is active
at once; otherwise the RFC 6121 handshake runs through `router.subscription` (with its
same-domain auto-approval, DESIGN §4) and the dialog stays pending until it is approved.
What a watcher sees is rendered by the core (`router.render`, `access.view`), so NOTIFY
bodies and XMPP presence always agree. A PUBLISH sets the state of the publisher's
registration endpoint, or of an endpoint of its own when it has none.

Watcher info (RFC 3857, RFC 3858): a user who subscribes to `presence.winfo` on their own
URI sees who waits for their approval (RFC 6121 pending-in) and who is allowed. They approve
by subscribing back to the watcher's presence (or from any client through the core). Both
the watcher lists and pending dialogs follow the core's roster listener, not a timer.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.python import log

from standard_edition.core.jid import JID
from standard_edition.core.model import Presence, RosterItem
from standard_edition.core.subscription import Kind
from standard_edition.presence.access import Level, view
from standard_edition.presence.model import AVAILABLE, Aggregate, EndpointState
from standard_edition.sip import pidf
from standard_edition.sip.dialog import DialogId, IntervalTooBrief, Subscription, grant_expires
from standard_edition.sip.message import Request, Response
from standard_edition.sip.transaction import ServerTransaction
from standard_edition.sip.transport import Peer

if TYPE_CHECKING:
    from standard_edition.sip.endpoint import SipEndpoint
    from standard_edition.sip.service import SipService

__all__ = ["PresenceAgent"]

SUB_MIN, SUB_DEFAULT, SUB_MAX = 60, 3600, 3600
PUB_MIN, PUB_DEFAULT, PUB_MAX = 60, 3600, 7200
PIDF_TYPE = "application/pidf+xml"
WINFO_TYPE = "application/watcherinfo+xml"  # RFC 3858 §4
NS_WINFO = "urn:ietf:params:xml:ns:watcherinfo"
EVENTS = "presence, presence.winfo"
K = TypeVar("K")  # the key a watch index files subscriptions under


@dataclass(eq=False, slots=True)
class Watch:
    """One SIP watcher's subscription to one user's presence."""

    sub: Subscription
    owner: str
    watcher: JID  # bare
    flow: Peer | None
    timer: Any = None
    last_body: bytes | None = None
    winfo: bool = False  # a presence.winfo subscription to the owner's own watcher list
    version: int = -1  # RFC 3858 §4.2: the document version, one more in each NOTIFY
    # a contact in another domain (federation): `owner` is then "" and the document is made
    # from the presence the contact's server sent (remote_presence)
    remote: JID | None = None


@dataclass(eq=False, slots=True)
class Publication:
    """One PUBLISH event state (RFC 3903 §6): its entity tag and the endpoint it drives."""

    etag: str
    user: str
    endpoint: Any
    own_endpoint: bool  # made for this publication (the publisher has no registration)
    expires_at: float
    timer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class PublicationEndpoint:
    """An endpoint for a publisher without a registration: presence only, no messages
    (priority -1, RFC 6121 §8.5.2.1.1, so the core never picks it for a message)."""

    protocol = "sip"
    interested = False

    def __init__(
        self,
        agent: PresenceAgent,
        jid: JID,
        address: str,
        since: float,
        origin: str = "internal",
        secure: bool = False,
    ) -> None:
        self.agent = agent
        self.jid = jid
        self.address = address
        self.since = since
        self.secure = secure
        self.origin = origin  # "edge": published through the edge listener (DESIGN §7)
        self.presence: Presence | None = None

    def deliver_message(self, msg: Any) -> None:
        pass

    def deliver_presence(self, sender: JID, presence: Presence | None) -> None:
        pass

    def deliver_subscription(self, sender: JID, kind: Kind) -> None:
        pass

    def deliver_roster_push(self, item: Any, removed: bool = False) -> None:
        pass

    def close(self, condition: str, text: str = "") -> None:
        self.agent.endpoint_gone(self)


class PresenceAgent:
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.router = service.router
        self.domain = service.domain
        self.watches: dict[DialogId, Watch] = {}
        self.by_owner: dict[str, set[DialogId]] = {}
        self.winfo_by_owner: dict[str, set[DialogId]] = {}
        self.pending: set[Watch] = set()  # presence subscriptions waiting for the owner
        self.publications: dict[str, Publication] = {}  # etag -> publication
        # federation: what each user's contacts in other domains last showed, per resource,
        # and the SIP watchers of those contacts: (user, contact's bare address) -> ...
        self.remote_seen: dict[tuple[str, JID], dict[str, Presence]] = {}
        self.by_remote: dict[tuple[str, JID], set[DialogId]] = {}
        self.router.presence.listeners.append(self._aggregate_changed)
        self.router.presence.level_listeners.append(self._levels_changed)
        self.router.roster_listeners.append(self._roster_changed)

    def now(self) -> float:
        return self.service.clock()

    def stop(self) -> None:
        for w in self.watches.values():
            _cancel(w.timer)
        for p in self.publications.values():
            _cancel(p.timer)

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, req: Request, tx: ServerTransaction, peer: Peer, user: str) -> None:
        event = (req.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event == "presence.winfo" and req.method == "SUBSCRIBE":
            self._subscribe(req, tx, peer, user, winfo=True)
            return
        if event != "presence":
            # RFC 6665 §8.2.2: a package we do not serve
            self.service.reply(tx, 489, headers=[("Allow-Events", EVENTS)])
            return
        if req.method == "SUBSCRIBE":
            self._subscribe(req, tx, peer, user)
        else:
            self._publish(req, tx, peer, user)

    # -- SUBSCRIBE ---------------------------------------------------------------------------

    def _subscribe(
        self, req: Request, tx: ServerTransaction, peer: Peer, user: str, winfo: bool = False
    ) -> None:
        now = self.now()
        try:
            expires = grant_expires(
                req.expires, default=SUB_DEFAULT, minimum=SUB_MIN, maximum=SUB_MAX
            )
        except IntervalTooBrief as e:
            self.service.reply(tx, 423, headers=[("Min-Expires", str(e.min_expires))])
            return
        if req.to.tag is not None:
            self._resubscribe(req, tx, user, expires, now)
            return
        owner = self.service._user_of(req.ruri)
        if owner is None:
            remote = None if winfo else self.service.remote_of(req.ruri)
            if remote is not None:
                self._subscribe_remote(req, tx, peer, user, remote, expires, now)
            else:
                self.service.reply(tx, 404)
            return
        watcher = JID(user, self.domain, None)
        if winfo and owner != user:
            # RFC 3857 §5.1: a watcher list is its owner's alone
            self.service.reply(tx, 403, "Only your own watcher list")
            return
        if not winfo and self.router.rosters.state(user, self._bare(owner)).pending_in:
            # subscribing back to someone who waits for you approves them (as SIP clients'
            # "add contact" does): RFC 6121 §3.1.5 subscribed, then the request of our own
            self.router.subscription(user, self._bare(owner), Kind.SUBSCRIBED)
        allowed = winfo or self._allowed(owner, watcher, ask=True)
        state = "active" if allowed else "pending"
        contact = self._contact(owner, peer)
        sub = Subscription.from_subscribe(req, contact, now, expires, state=state)
        w = Watch(sub, owner, watcher, peer if peer.reliable else None, winfo=winfo)
        index = self.winfo_by_owner if winfo else self.by_owner
        self._start(tx, w, contact, expires, index, owner)

    def _contact(self, user: str | JID, peer: Peer) -> str:
        """Our Contact for a dialog about `user` on the transport the request came over."""
        host, port = self.service.transports.sent_by(peer.transport)
        return f"<sip:{user}@{host}:{port};transport={peer.transport.lower()}>"

    def _start(
        self,
        tx: ServerTransaction,
        w: Watch,
        contact: str,
        expires: int,
        index: dict[K, set[DialogId]],
        key: K,
    ) -> bool:
        """Answer a new subscription and send its first NOTIFY; False when it is already over
        (a fetch), True when it is kept under `key` in `index` until it ends."""
        sub = w.sub
        status = 200 if sub.state == "active" else 202  # RFC 3265 §3.1.6.1 pending: 202
        self.service.reply(
            tx,
            status,
            headers=[("Expires", str(expires)), ("Contact", contact)],
            to_tag=sub.dialog.local_tag,
        )
        if expires == 0:
            # a fetch (RFC 6665 §4.4.3): one NOTIFY, then the subscription is over
            sub.terminate("timeout")
            self._notify(w)
            return False
        self.watches[sub.dialog.id] = w
        index.setdefault(key, set()).add(sub.dialog.id)
        if sub.state == "pending":
            self.pending.add(w)
        self._arm(w)
        self._notify(w)
        return True

    def _subscribe_remote(
        self,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        user: str,
        remote: JID,
        expires: int,
        now: float,
    ) -> None:
        """A SIP user watches a contact in another domain: the RFC 6121 handshake goes there
        through the core (which applies the federation policy); the dialog is active once the
        contact approved, and its NOTIFYs carry what the contact's server sends."""
        if not self.router.may_federate(user, remote.domain):
            self.service.reply(tx, 403, "Federation with this domain is not allowed")
            return
        rosters = self.router.rosters
        if rosters.state(user, remote).pending_in:
            self.router.subscription(user, remote, Kind.SUBSCRIBED)  # as for a colleague
        if expires and not rosters.state(user, remote).has_to:
            self.router.subscription(user, remote, Kind.SUBSCRIBE)
        active = rosters.state(user, remote).has_to
        contact = self._contact(remote, peer)
        state = "active" if active else "pending"
        sub = Subscription.from_subscribe(req, contact, now, expires, state=state)
        watcher = JID(user, self.domain, None)
        w = Watch(sub, "", watcher, peer if peer.reliable else None, remote=remote)
        if not self._start(tx, w, contact, expires, self.by_remote, (user, remote)):
            return
        ep = self.service.endpoint_for(user, req, peer)
        if active and ep is not None and (user, remote) not in self.remote_seen:
            self.router.probe(ep, remote)  # RFC 6121 §4.3: ask the contact's server

    def remote_presence(self, user: str, sender: JID, presence: Presence | None) -> None:
        """A contact in another domain sent `user` presence (through the core)."""
        key = (user, sender.bare)
        seen = self.remote_seen.setdefault(key, {})
        resource = sender.resource or ""
        if presence is None:
            if resource:
                seen.pop(resource, None)
            else:
                seen.clear()
        else:
            seen[resource] = presence
        for did in list(self.by_remote.get(key, ())):
            w = self.watches.get(did)
            if w is not None and w.sub.state == "active":
                self._notify(w)

    def remote_document(self, user: str, contact: JID) -> bytes:
        """The PIDF document of a contact in another domain, from what its server sent."""
        from standard_edition.sip.federation import code_of

        seen = self.remote_seen.get((user, contact), {})
        tuples = [pidf.Tuple(res or "t", True) for res in sorted(seen)]
        agg: Aggregate | None = None
        if seen:
            best = min(seen.values(), key=code_of)
            agg = Aggregate(code_of(best), note=best.status)
        return pidf.build(f"sip:{contact}", tuples, agg)

    def _resubscribe(
        self, req: Request, tx: ServerTransaction, user: str, expires: int, now: float
    ) -> None:
        did = DialogId.of_incoming(req)
        w = self.watches.get(did) if did is not None else None
        if w is None or w.watcher.local != user:
            self.service.reply(tx, 481)
            return
        if not w.sub.dialog.accept_remote_cseq(req):
            self.service.reply(tx, 500, "CSeq out of order")
            return
        status = 202 if w.sub.state == "pending" else 200
        w.sub.dialog.refresh_target(req)
        w.sub.refresh(expires, now)
        self.service.reply(tx, status, headers=[("Expires", str(expires))])
        if expires == 0:
            self._drop(w)
        else:
            self._arm(w)
        self._notify(w, force=True)

    def _allowed(self, owner: str, watcher: JID, ask: bool = False) -> bool:
        """May `watcher` see `owner`'s presence? With `ask`, start the RFC 6121 handshake."""
        if watcher.local == owner:
            return True
        rosters = self.router.rosters
        if rosters.state(owner, watcher).has_from:
            return True
        if ask:
            assert watcher.local is not None
            self.router.subscription(watcher.local, JID(owner, self.domain, None), Kind.SUBSCRIBE)
            return rosters.state(owner, watcher).has_from
        return False

    def _arm(self, w: Watch) -> None:
        _cancel(w.timer)
        delay = max(0.0, w.sub.expires_at - self.now())
        w.timer = self.service.reactor.callLater(delay, self._expired, w)

    def _expired(self, w: Watch) -> None:
        w.timer = None
        if w.sub.state != "terminated":
            w.sub.terminate("timeout")
            self._notify(w, force=True)
        self._drop(w)

    def _drop(self, w: Watch) -> None:
        _cancel(w.timer)
        w.timer = None
        did = w.sub.dialog.id
        self.pending.discard(w)
        if self.watches.get(did) is w:
            del self.watches[did]
            if w.remote is not None:
                key = (w.watcher.local or "", w.remote)
                remote_ids = self.by_remote.get(key)
                if remote_ids is not None:
                    remote_ids.discard(did)
                    if not remote_ids:
                        del self.by_remote[key]
                return
            index = self.winfo_by_owner if w.winfo else self.by_owner
            ids = index.get(w.owner)
            if ids is not None:
                ids.discard(did)
                if not ids:
                    del index[w.owner]

    def _roster_changed(self, owner: str, item: RosterItem) -> None:
        """The core changed a roster item: the owner's watcher list may differ, and a pending
        subscription between the two may be decided (RFC 6121 §3.1.5, §3.2)."""
        for did in list(self.winfo_by_owner.get(owner, ())):
            w = self.watches.get(did)
            if w is not None and w.sub.state == "active":
                self._notify(w)
        contact = item.contact
        for did in list(self.by_remote.get((owner, contact), ())):
            w = self.watches.get(did)
            if w is not None and w.sub.state == "active" and not item.state.has_to:
                # the contact in the other domain revoked or refused it (RFC 6121 §3.2)
                self._end(w, "rejected")
        for w in list(self.pending):
            if w.remote is not None:
                if w.watcher.local == owner and w.remote == contact:
                    self._decide(w)
                continue
            if (w.owner == owner and w.watcher == contact) or (
                w.watcher.local == owner and self._bare(w.owner) == contact
            ):
                self._decide(w)

    def _end(self, w: Watch, reason: str) -> None:
        w.sub.terminate(reason)
        self._notify(w, force=True)
        self._drop(w)

    def _decide(self, w: Watch) -> None:
        """A pending subscription whose owner may have approved (or refused) it."""
        if w.remote is not None:
            state = self.router.rosters.state(w.watcher.local or "", w.remote)
            if state.has_to:
                self.pending.discard(w)
                w.sub.activate()
                self._notify(w, force=True)
            elif not state.pending_out:
                self._end(w, "rejected")
            return
        if self._allowed(w.owner, w.watcher):
            self.pending.discard(w)
            w.sub.activate()
            self._notify(w, force=True)
        elif not self._asking(w):
            # the request was refused (RFC 6121 §3.2): RFC 6665 §4.2.2 reason=rejected
            w.sub.terminate("rejected")
            self._notify(w, force=True)
            self._drop(w)

    def end_edge_watches(self, user: str) -> list[Peer]:
        """The user lost outside access (edge/enforce.py): the subscriptions they made over
        the edge end (RFC 6665 §4.2.2 reason=rejected: an authorization policy change).
        Returns the connections those were made on."""
        me = self._bare(user)
        flows: list[Peer] = []
        for w in list(self.watches.values()):
            flow = w.flow
            if w.watcher.bare == me and flow is not None and self.service.edge_stream(flow):
                flows.append(flow)
                self._end(w, "rejected")
        return flows

    def _asking(self, w: Watch) -> bool:
        """The watcher's request still waits for the owner's answer (RFC 6121 pending-out)."""
        return self.router.rosters.state(w.watcher.local or "", self._bare(w.owner)).pending_out

    def _bare(self, user: str) -> JID:
        return JID(user, self.domain, None)

    # -- NOTIFY ------------------------------------------------------------------------------

    def document(self, owner: str, watcher: JID) -> bytes:
        """The PIDF document `watcher` may see of `owner` (DESIGN §4 access levels)."""
        entity = f"sip:{owner}@{self.domain}"
        tuples: list[pidf.Tuple] = []
        for ep in self.router.sessions.available(owner):
            shown = self.router.render(owner, ep, watcher)
            if shown is not None:
                tuples.append(pidf.Tuple(ep.jid.resource or "t", True))
        agg: Aggregate | None = None
        if tuples:
            level = (
                Level.FRIENDS
                if watcher.local == owner
                else self.router.presence.level(owner, watcher)
            )
            agg = view(self.router.presence.aggregate(owner), level)
        return pidf.build(entity, tuples, agg)

    def watchers(self, owner: str) -> list[tuple[str, str, str]]:
        """(watcher URI, status, event) per RFC 3858 §4: who waits, who is allowed."""
        rosters = self.router.rosters
        out = [(f"sip:{c}", "pending", "subscribe") for c in rosters.pending_in(owner)]
        out += [(f"sip:{c}", "active", "approved") for c in rosters.subscribers(owner)]
        return sorted(out)

    def winfo_document(self, w: Watch) -> bytes:
        """RFC 3858 §4: the full watcher list of the owner's presence."""
        resource = f"sip:{w.owner}@{self.domain}"
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<watcherinfo xmlns="{NS_WINFO}" version="{w.version}" state="full">',
            f'<watcher-list resource="{resource}" package="presence">',
        ]
        for uri, status, event in self.watchers(w.owner):
            wid = hashlib.sha256(uri.encode()).hexdigest()[:12]
            lines.append(
                f'<watcher id="{wid}" event="{event}" status="{status}">{_xml(uri)}</watcher>'
            )
        lines += ["</watcher-list>", "</watcherinfo>"]
        return "\n".join(lines).encode()

    def _notify(self, w: Watch, force: bool = False) -> None:
        sub = w.sub
        body = b""
        ctype = None
        if w.winfo:
            listing = repr(self.watchers(w.owner)).encode()
            if sub.state == "active" and not force and listing == w.last_body:
                return  # the list is what the subscriber last saw
            w.last_body = listing
            w.version += 1
            body, ctype = self.winfo_document(w), WINFO_TYPE
        elif sub.state == "active" or (sub.state == "terminated" and w.last_body is not None):
            if w.remote is not None:
                body = self.remote_document(w.watcher.local or "", w.remote)
            else:
                body = self.document(w.owner, w.watcher)
            ctype = PIDF_TYPE
            if not force and body == w.last_body:
                return  # nothing this watcher may see has changed
            w.last_body = body
        elif sub.state == "terminated":
            body = b""
        service = self.service
        d = service.peer_for(str(sub.dialog.remote_target), len(body), w.flow)

        def send(peer: Peer) -> Any:
            host, port = service.transports.sent_by(peer.transport)
            req = sub.make_notify(
                self.now(),
                transport=peer.transport,
                sent_by=(host, port),
                body=body,
                content_type=ctype,
            )
            return service.send_request(req, peer)

        def answered(resp: Response) -> None:
            # RFC 6665 §4.2.2: 481 or a timeout ends the subscription
            if resp.status in (481, 408) or resp.status >= 500:
                self._drop(w)

        d.addCallback(send)
        d.addCallbacks(answered, lambda f: (log.err(f, "sip: NOTIFY not sent"), self._drop(w)))

    def _aggregate_changed(self, user: str, agg: Aggregate, before: Aggregate | None) -> None:
        self._notify_owner(user)

    def _levels_changed(self, owner: str) -> None:
        self._notify_owner(owner)

    def _notify_owner(self, owner: str) -> None:
        for did in list(self.by_owner.get(owner, ())):
            w = self.watches.get(did)
            if w is not None and w.sub.state == "active":
                self._notify(w)

    # -- PUBLISH -----------------------------------------------------------------------------

    def _publish(self, req: Request, tx: ServerTransaction, peer: Peer, user: str) -> None:
        now = self.now()
        try:
            expires = grant_expires(
                req.expires, default=PUB_DEFAULT, minimum=PUB_MIN, maximum=PUB_MAX
            )
        except IntervalTooBrief as e:
            self.service.reply(tx, 423, headers=[("Min-Expires", str(e.min_expires))])
            return
        if self.service._user_of(req.ruri) != user:
            self.service.reply(tx, 403, "Only your own presence can be published")
            return
        etag = req.headers.get("SIP-If-Match")
        published = None
        if req.body:
            if req.content_type != PIDF_TYPE:
                self.service.reply(tx, 415, headers=[("Accept", PIDF_TYPE)])
                return
            try:
                published = pidf.parse(req.body, now)
            except pidf.PidfError as e:
                self.service.reply(tx, 400, f"Bad PIDF: {e}"[:80])
                return
        if etag is None:
            # RFC 3903 §6 step 4: an initial publication needs a body
            if published is None:
                self.service.reply(tx, 400, "Initial PUBLISH without a body")
                return
            if expires == 0:
                self.service.reply(tx, 200, headers=[("Expires", "0")])
                return
            pub = self._new_publication(req, peer, user, now)
        else:
            found = self.publications.get(etag)
            if found is None or found.user != user:
                self.service.reply(tx, 412)  # RFC 3903 §6 step 3
                return
            pub = found
            del self.publications[etag]
            if expires == 0:
                self._remove_publication(pub)
                self.service.reply(tx, 200, headers=[("Expires", "0")])
                return
        pub.etag = secrets.token_hex(10)
        pub.expires_at = now + expires
        self.publications[pub.etag] = pub
        self._arm_publication(pub)
        self.service.reply(tx, 200, headers=[("SIP-ETag", pub.etag), ("Expires", str(expires))])
        if published is not None:
            self._apply(pub, published)

    def _new_publication(self, req: Request, peer: Peer, user: str, now: float) -> Publication:
        # DESIGN §7: a publication drives an endpoint of its own origin, so that one made
        # through the edge (registered there or not) ends with the user's outside access
        origin = "edge" if self.service.edge_stream(peer) is not None else "internal"
        ep = self.service.endpoint_for(user, req, peer)
        if ep is None:
            regs = self.service.registrar.bindings(user)
            if len(regs) == 1 and regs[0].endpoint is not None:
                ep = regs[0].endpoint
        if ep is not None and ep.origin == origin:
            return Publication("", user, ep, False, now)
        jid = JID(user, self.domain, "sip-pub-" + secrets.token_hex(5))
        address = f"{peer.host}:{peer.port}"
        own = PublicationEndpoint(self, jid, address, now, origin, peer.transport == "TLS")
        self.router.bind(own)
        return Publication("", user, own, True, now)

    def _apply(self, pub: Publication, p: pidf.Published) -> None:
        ep = pub.endpoint
        ep.publication = pub
        priority = -1 if pub.own_endpoint else 0
        self.router.presence_update(
            ep,
            Presence(
                status=p.note,
                priority=priority,
                state=p.state,
                manual=p.manual,
                clear_manual=p.clear_manual,
            ),
        )

    def _arm_publication(self, pub: Publication) -> None:
        _cancel(pub.timer)
        delay = max(0.0, pub.expires_at - self.now())
        pub.timer = self.service.reactor.callLater(delay, self._publication_expired, pub)

    def _publication_expired(self, pub: Publication) -> None:
        pub.timer = None
        if self.publications.get(pub.etag) is pub:
            del self.publications[pub.etag]
            self._remove_publication(pub)

    def _remove_publication(self, pub: Publication) -> None:
        """RFC 3903 §4.4: the event state is gone; the endpoint is what REGISTER made it."""
        _cancel(pub.timer)
        pub.timer = None
        ep = pub.endpoint
        if getattr(ep, "publication", None) is pub:
            ep.publication = None
        if pub.own_endpoint:
            self.router.unbind(ep)
        elif ep.presence is not None:
            self.router.presence_update(ep, Presence(state=EndpointState(AVAILABLE)))

    def endpoint_gone(self, ep: SipEndpoint | PublicationEndpoint) -> None:
        """A registration ended: so do the publications that drove it."""
        for etag, pub in list(self.publications.items()):
            if pub.endpoint is ep:
                del self.publications[etag]
                _cancel(pub.timer)
                pub.timer = None
        if isinstance(ep, PublicationEndpoint):
            self.router.unbind(ep)

    # -- watcher info ------------------------------------------------------------------------

    def subscription_request(self, ep_jid: JID, sender: JID, kind: Kind) -> None:
        """A subscription request reached a SIP user: watcher-info subscribers already learnt
        of it from the roster listener, which also decides pending dialogs."""


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cancel(call: Any) -> None:
    if call is not None and call.active():
        call.cancel()
