"""The core: sessions, presence, subscriptions and message routing, protocol-free.

Protocol adapters call in with core values (JID, Presence, Message, Kind) and the core calls
back out through each endpoint's `deliver_*` methods. The rules are RFC 6121's: §3 for
subscriptions, §4 for presence broadcast and probes, §8.5 for routing by bare or full address.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.python import log

from standard_edition.archive.service import Archive
from standard_edition.core.accounts import Accounts
from standard_edition.core.fanout import PresenceFanout
from standard_edition.core.history import MessageHistory
from standard_edition.core.jid import JID
from standard_edition.core.model import Message, Presence, RosterItem, Undeliverable
from standard_edition.core.offline import OfflineStore
from standard_edition.core.remote import FederationRouting, RemoteDelivery
from standard_edition.core.roster import Rosters
from standard_edition.core.sessions import Endpoint, SessionRegistry
from standard_edition.core.subscription import Kind, State, inbound, outbound
from standard_edition.core.url_filter import BLOCKED, WARNED, UrlFilter
from standard_edition.presence.access import Level, view
from standard_edition.presence.model import Aggregate, Band
from standard_edition.presence.service import KEEP, PresenceService

RECENT_LINES = 20  # one-to-one lines kept per pair for escalation to a conference (DESIGN §5)
RECENT_PAIRS = 20_000  # pairs remembered, most recently active first

# DESIGN §4 mapping of a band to XMPP <show/> (None: no show, i.e. available)
SHOW: dict[Band, str | None] = {
    Band.AVAILABLE: None,
    Band.IDLE: "away",
    Band.BUSY: "dnd",
    Band.BUSY_IDLE: "dnd",
    Band.DND: "dnd",
    Band.BRB: "away",
    Band.AWAY: "xa",
    Band.OFFLINE: None,
}


class Router(FederationRouting):
    def __init__(
        self,
        domain: str,
        accounts: Accounts,
        rosters: Rosters,
        sessions: SessionRegistry,
        offline: OfflineStore,
        presence: PresenceService,
        *,
        offline_enabled: bool = True,
    ) -> None:
        self.domain = domain
        self.accounts = accounts
        self.rosters = rosters
        self.sessions = sessions
        self.offline = offline
        self.offline_enabled = offline_enabled
        self.counters = {"messages": 0, "offline_stored": 0, "presence": 0}
        self.counters.update(dict.fromkeys((WARNED, BLOCKED), 0))  # IM URL filter
        # the IM URL filter in force (core/url_filter.py); the server and se-ctl replace it,
        # keeping these counters
        self.url_filter = UrlFilter(own_domain=domain, counters=self.counters)
        self.presence = presence
        presence.listeners.append(self._aggregate_changed)
        presence.level_listeners.append(self._levels_changed)
        # every presence delivered to local endpoints, a bounded number per reactor turn
        self.fanout = PresenceFanout(presence.reactor, sessions)
        # full JIDs that received directed presence from an endpoint (RFC 6121 §4.6.3)
        self._directed: dict[JID, set[JID]] = {}
        self._replaying: set[str] = set()
        self._recent: dict[frozenset[JID], deque[tuple[float, Message]]] = {}
        self.history: MessageHistory | None = None
        self.last_seen: dict[str, tuple[float, str | None]] = {}
        # the compliance archive (archive/service.py), set by the server; None: not archiving
        self.archive: Archive | None = None
        # other domains (core/remote.py): the federation adapter and the policy, set by the
        # server when federation is on; None: only this domain exists
        self.remote: RemoteDelivery | None = None
        self.federation: Any = None
        # called with (owner, item) after a roster item changed (SIP watcher info listens)
        self.roster_listeners: list[Callable[[str, RosterItem], None]] = []
        # adapters' additions to what an endpoint's presence carries, called as
        # (owner, payload) -> payload for each rendering (XEP-0153 avatar hashes)
        self.presence_payload: list[Callable[[str, tuple[Any, ...]], tuple[Any, ...]]] = []
        accounts.on_removed.append(self._account_removed)
        accounts.on_disabled.append(self._account_disabled)

    def is_local(self, jid: JID) -> bool:
        return jid.domain == self.domain and jid.local is not None

    def local_user(self, jid: JID) -> str | None:
        """The account name for a local address that has an account."""
        if jid.domain == self.domain and jid.local is not None and self.accounts.exists(jid.local):
            return jid.local
        return None

    # -- sessions --------------------------------------------------------------------------

    def bind(self, ep: Endpoint) -> None:
        """A new endpoint; an older one with the same full address is closed (RFC 6120 §7.7.2.2)."""
        old = self.sessions.add(ep)
        if old is not None and old is not ep:
            self._went_away(old, status=None)
            old.close("conflict", "replaced by a newer session with the same resource")

    def unbind(self, ep: Endpoint) -> None:
        """An endpoint is gone (stream closed, connection lost)."""
        if self.sessions.remove(ep):
            self._went_away(ep, status=None)

    def _went_away(self, ep: Endpoint, status: str | None) -> None:
        if ep.presence is not None:
            self.presence_unavailable(ep, status)
        self._directed.pop(ep.jid, None)

    def _account_removed(self, username: str) -> None:
        for ep in self.sessions.of_user(username):
            self.unbind(ep)
            ep.close("not-authorized", "account removed")
        bare = JID(username, self.domain, None)
        for owner in self.rosters.owners_with(bare):
            item = self.rosters.get(owner, bare)
            if item is None:
                continue
            if not item.in_roster:
                self.rosters.delete(owner, bare)
                continue
            self._store_item(owner, replace(item, state=State()))
        self.rosters.forget_owner(username)
        self.presence.forget(username)

    def _account_disabled(self, username: str) -> None:
        for ep in self.sessions.of_user(username):
            self.unbind(ep)
            ep.close("not-authorized", "account disabled")

    # -- roster ----------------------------------------------------------------------------

    def roster_requested(self, ep: Endpoint) -> list[RosterItem]:
        ep.interested = True
        assert ep.jid.local is not None
        return self.rosters.items(ep.jid.local)

    def roster_set(
        self, user: str, contact: JID, name: str | None, groups: tuple[str, ...]
    ) -> None:
        """RFC 6121 §2.3: add or update an item; subscription state is the server's to keep."""
        item = self.rosters.get(user, contact) or RosterItem(contact)
        self._store_item(user, replace(item, name=name, groups=groups, in_roster=True))

    def roster_remove(self, user: str, contact: JID) -> None:
        """RFC 6121 §2.5.3: removing an item also cancels subscriptions both ways."""
        item = self.rosters.get(user, contact)
        if item is None or not item.in_roster:
            raise Undeliverable("item-not-found")
        if item.state.has_to or item.state.pending_out:
            self.subscription(user, contact, Kind.UNSUBSCRIBE)
        if item.state.has_from or item.state.pending_in:
            self.subscription(user, contact, Kind.UNSUBSCRIBED)
        self.rosters.delete(user, contact)
        for ep in self.sessions.interested(user):
            ep.deliver_roster_push(item, removed=True)

    def _store_item(self, owner: str, item: RosterItem) -> None:
        before = self.rosters.get(owner, item.contact)
        if before == item:
            return
        self.rosters.put(owner, item)
        for listener in self.roster_listeners:
            listener(owner, item)
        if item.in_roster:
            for ep in self.sessions.interested(owner):
                ep.deliver_roster_push(item)

    # -- subscriptions (RFC 6121 §3) -------------------------------------------------------

    def subscription(self, user: str, contact: JID, kind: Kind) -> None:
        """The user sends subscribe / subscribed / unsubscribe / unsubscribed to a contact."""
        contact = contact.bare
        item = self.rosters.get(user, contact)
        result = outbound(item.state if item else State(), kind)
        if item is None:
            # §3.1.2: a request creates the roster item; so does approving (§3.1.5)
            item = RosterItem(contact, in_roster=kind in (Kind.SUBSCRIBE, Kind.SUBSCRIBED))
        new_item = replace(item, state=result.state)
        if kind is Kind.SUBSCRIBE or (kind is Kind.SUBSCRIBED and result.route):
            # §3.1.2 / §3.1.5: asking, or approving a request, puts the contact in the roster
            new_item = replace(new_item, in_roster=True)
        self._store_item(user, new_item)
        if not result.route:
            return
        sender = JID(user, self.domain, None)
        if self.is_remote(contact):
            self._subscription_out(user, contact, kind)
            return
        contact_user = self.local_user(contact)
        if contact_user is None:
            return  # no such local account: nothing to route to
        self._inbound_subscription(contact_user, sender, kind)
        if kind is Kind.SUBSCRIBED:
            # §3.1.5: the contact now receives the user's presence
            self._send_user_presence(user, contact_user)
        elif kind is Kind.UNSUBSCRIBED:
            # §3.2.2: the contact no longer receives it: tell it the user is gone
            self._send_user_presence(user, contact_user, gone=True)

    def _inbound_subscription(self, user: str, sender: JID, kind: Kind) -> None:
        """A subscription stanza from `sender` arrives for local `user` (RFC 6121 A.3)."""
        if self.presence.is_blocked(user, sender):
            return  # XEP-0191 §3.5: nothing from a blocked address reaches the user
        item = self.rosters.get(user, sender)
        result = inbound(item.state if item else State(), kind)
        if item is None:
            item = RosterItem(sender, in_roster=False)
        self._store_item(user, replace(item, state=result.state))
        if result.deliver:
            if kind is Kind.SUBSCRIBE:
                # §3.1.3: requests go to available resources; the rest get it at next login
                for ep in self.sessions.available(user):
                    ep.deliver_subscription(sender, kind)
            else:
                for ep in self.sessions.interested(user):
                    ep.deliver_subscription(sender, kind)
            if kind is Kind.UNSUBSCRIBE:
                # §3.3.3: the user's presence no longer goes to the sender
                sender_user = self.local_user(sender)
                if sender_user:
                    self._send_user_presence(user, sender_user, gone=True)
                elif self.is_remote(sender):
                    self._send_presence_remote(user, sender, gone=True)
        if result.auto_reply is not None:
            self._answer_for(user, sender, result.auto_reply)
        elif kind is Kind.SUBSCRIBE and result.deliver and self._colleague_approval(user, sender):
            # DESIGN §4: with privacy mode off, a colleague's request is approved on the
            # user's behalf (the request was still delivered above)
            self.subscription(user, sender, Kind.SUBSCRIBED)

    def _answer_for(self, user: str, sender: JID, kind: Kind) -> None:
        """§3.1.3: the server answers a request the user already granted."""
        me = JID(user, self.domain, None)
        if self.is_remote(sender):
            self._subscription_out(user, sender, kind)
            return
        sender_user = self.local_user(sender)
        if sender_user is not None:
            self._inbound_subscription(sender_user, me, kind)
            if kind is Kind.SUBSCRIBED:
                self._send_user_presence(user, sender_user)

    def _colleague_approval(self, user: str, sender: JID) -> bool:
        return (
            sender.domain == self.domain
            and not self.presence.privacy(user)
            and not self.presence.is_blocked(user, sender)
        )

    # -- presence (RFC 6121 §4, DESIGN §4) -------------------------------------------------

    def presence_update(self, ep: Endpoint, presence: Presence) -> None:
        """The endpoint says it is available (initial presence the first time)."""
        initial = ep.presence is None
        ep.presence = presence
        self.counters["presence"] += 1
        user = ep.jid.local
        assert user is not None and ep.jid.resource is not None
        manual: Any = KEEP
        if presence.manual is not None:
            manual = presence.manual
        elif presence.clear_manual and not initial:
            # signing in is not "I am back": a state set by hand survives the login's
            # automatic available presence, and ends when the user says available again
            manual = None
        # likewise the note: a login without <status/> keeps it, a later one clears it
        note: Any = KEEP if initial and presence.status is None else presence.status
        changed = self.presence.endpoint_update(
            user, ep.jid.resource, presence.state, manual=manual, note=note
        )
        if not changed:
            # the aggregate stands; only this endpoint's own presence is news
            self._broadcast(ep)
        if initial:
            self._probe(ep)
            for contact in self.rosters.pending_in(user):
                ep.deliver_subscription(contact, Kind.SUBSCRIBE)
            if presence.priority >= 0:
                self._replay_offline(user)

    def presence_unavailable(self, ep: Endpoint, status: str | None) -> None:
        if ep.presence is None:
            return
        ep.presence = None
        user = ep.jid.local
        assert user is not None and ep.jid.resource is not None
        self._broadcast(ep, gone=True)
        # the user's other endpoints now carry the aggregate alone; the listener re-sends them
        self.presence.endpoint_remove(user, ep.jid.resource)
        if not self.sessions.available(user):
            self.last_seen[user] = (time.time(), status)  # XEP-0012: when they left
        for target in self._directed.pop(ep.jid, set()):
            self._deliver_presence_to_jid(target, ep.jid, None)

    def _aggregate_changed(self, user: str, agg: Aggregate, before: Aggregate | None) -> None:
        """The user's aggregate moved (an endpoint, a manual state, idle time, the calendar):
        every endpoint's presence is sent again, rewritten to the new aggregate."""
        for ep in self.sessions.available(user):
            self._broadcast(ep)

    def _levels_changed(self, owner: str) -> None:
        """Blocks or access levels changed: each watcher gets what it may now see."""
        for ep in self.sessions.available(owner):
            self._broadcast(ep)
        for blocked in self.presence.blocklist(owner):
            blocked_user = self.local_user(blocked)
            if blocked_user is not None:
                self._send_user_presence(owner, blocked_user, gone=True)
            elif self.is_remote(blocked):
                self._send_presence_remote(owner, blocked, gone=True)

    def render(self, owner: str, ep: Endpoint, watcher: JID) -> Presence | None:
        """The presence of one of `owner`'s endpoints as `watcher` may see it; None: Offline."""
        if ep.presence is None:
            return None
        level = self._sees_at(owner, watcher)
        return None if level is None else self._render_at(owner, ep, level)

    def _sees_at(self, owner: str, watcher: JID) -> Level | None:
        """The access level at which `watcher` sees `owner`'s presence; None: not at all.
        What `render` shows depends on the watcher through this alone."""
        if watcher.bare == JID(owner, self.domain, None):
            return Level.FRIENDS
        if self.is_remote(watcher) and not self.may_federate(owner, watcher.domain):
            return None  # DESIGN §7: no federation access, or the domain is refused
        level = self.presence.level(owner, watcher)
        if level is Level.BLOCKED:
            return None
        if self.presence.privacy(owner):
            item = self.rosters.get(owner, watcher.bare)
            if item is None or not item.in_roster:
                return None  # DESIGN §4: privacy mode: only the contact list sees presence
        return level

    def _render_at(self, owner: str, ep: Endpoint, level: Level) -> Presence | None:
        """The presence of one of `owner`'s endpoints as a watcher at `level` sees it."""
        if ep.presence is None:
            return None
        seen = view(self.presence.aggregate(owner), level)
        if seen.band is Band.OFFLINE:
            return None  # appear offline
        payload = ep.presence.payload
        for extend in self.presence_payload:
            payload = extend(owner, payload)
        return Presence(
            show=SHOW[seen.band],
            status=seen.note,
            priority=ep.presence.priority,
            payload=payload,
            code=seen.code,
            activity=seen.activity.value if seen.activity else None,
            oof_note=seen.oof_note,
        )

    def rebroadcast(self, user: str, only: Callable[[Endpoint], bool] | None = None) -> None:
        """Send each available endpoint's presence again (something it carries changed, e.g.
        the avatar hash); `only` picks the endpoints."""
        for ep in self.sessions.available(user):
            if only is None or only(ep):
                self._broadcast(ep)

    def directed_presence(self, ep: Endpoint, to: JID, presence: Presence | None) -> None:
        """RFC 6121 §4.6: presence sent to one address, outside the roster broadcast."""
        user = ep.jid.local or ""
        if presence is None:
            self._directed.get(ep.jid, set()).discard(to)
            self._deliver_presence_to_jid(to, ep.jid, None)
            return
        if to.bare not in self.rosters.subscribers(user):
            self._directed.setdefault(ep.jid, set()).add(to)
        if self.presence.is_blocked(user, to):
            return
        # the endpoint chose to tell this address; it still sees the aggregate (DESIGN §4),
        # with what the client put in this presence (a partner's room needs its MUC element)
        payload = presence.payload
        for extend in self.presence_payload:
            payload = extend(user, payload)  # XEP-0398 §4: the avatar hash goes here too
        shown = self.render(user, ep, to) if ep.presence is not None else None
        self._deliver_presence_to_jid(to, ep.jid, replace(shown or presence, payload=payload))

    def probe(self, ep: Endpoint, contact: JID) -> None:
        """RFC 6121 §4.3: an explicit probe from a client for one contact."""
        user = ep.jid.local or ""
        if self.is_remote(contact):
            self._probe_out(ep, contact)
            return
        contact_user = self.local_user(contact)
        if contact_user is None:
            return
        if contact_user == user or self.rosters.state(contact_user, ep.jid.bare).has_from:
            for other in self.sessions.available(contact_user):
                self.fanout.deliver(ep, other.jid, self.render(contact_user, other, ep.jid))

    def _broadcast(self, ep: Endpoint, gone: bool = False) -> None:
        """§4.2.2 / §4.4.2: an endpoint's presence to every subscriber and the user's own
        endpoints, each rendered for the watcher: once per access level, so that every
        watcher at one level gets the very same Presence (and adapters can reuse its wire
        form)."""
        user = ep.jid.local
        assert user is not None
        rendered: dict[Level, Presence | None] = {}

        def shown_to(watcher: JID) -> Presence | None:
            if gone:
                return None
            level = self._sees_at(user, watcher)
            if level is None:
                return None
            if level not in rendered:
                rendered[level] = self._render_at(user, ep, level)
            return rendered[level]

        for contact in self.rosters.subscribers(user):
            contact_user = self.local_user(contact)
            if contact_user is None:
                if self.is_remote(contact):
                    self._presence_out(ep.jid, contact, shown_to(contact))
                continue
            self._deliver_presence_to_user(contact_user, ep.jid, shown_to(contact))
        own_view = shown_to(JID(user, self.domain, None))
        for own in self.sessions.available(user):
            self.fanout.deliver(own, ep.jid, own_view)
        if gone:
            self.fanout.deliver(ep, ep.jid, None)

    def _send_user_presence(self, user: str, to_user: str, gone: bool = False) -> None:
        """All of `user`'s available endpoints, as `to_user` may see them."""
        watcher = JID(to_user, self.domain, None)
        for ep in self.sessions.available(user):
            shown = None if gone else self.render(user, ep, watcher)
            self._deliver_presence_to_user(to_user, ep.jid, shown)

    def _probe(self, ep: Endpoint) -> None:
        """§4.2.2: on initial presence, the server gathers the presence of every contact the
        user is subscribed to, and of the user's other resources."""
        user = ep.jid.local
        assert user is not None
        for contact in self.rosters.subscriptions(user):
            contact_user = self.local_user(contact)
            if contact_user is None:
                if self.is_remote(contact):
                    self._probe_out(ep, contact)
                continue
            for other in self.sessions.available(contact_user):
                shown = self.render(contact_user, other, ep.jid)
                if shown is not None:
                    self.fanout.deliver(ep, other.jid, shown)
        for other in self.sessions.available(user):
            if other is not ep:
                self.fanout.deliver(ep, other.jid, self.render(user, other, ep.jid))

    def _deliver_presence_to_user(self, user: str, sender: JID, p: Presence | None) -> None:
        for ep in self.sessions.available(user):
            self.fanout.deliver(ep, sender, p)

    def _deliver_presence_to_jid(self, to: JID, sender: JID, p: Presence | None) -> None:
        if self.is_remote(to):
            self._presence_out(sender, to, p)
            return
        user = self.local_user(to)
        if user is None:
            return
        if to.resource is None:
            self._deliver_presence_to_user(user, sender, p)
        else:
            target = self.sessions.get(to)
            if target is not None:
                self.fanout.deliver(target, sender, p)

    # -- messages (RFC 6121 §8.5) ----------------------------------------------------------

    def route_message(self, msg: Message) -> Deferred[None]:
        """Deliver a message to a local user; raises Undeliverable with the error to return.

        The Deferred fires once the message is handed over or safely stored."""
        self.counters["messages"] += 1
        if self.is_remote(msg.to):
            return self._route_remote(msg)
        user = self.local_user(msg.to)
        if user is None:
            # §8.5.1: no such account
            raise Undeliverable("service-unavailable")
        sender_user = self.local_user(msg.sender)
        if sender_user is not None and self.presence.is_blocked(sender_user, msg.to):
            # XEP-0191 §3.5: the sender blocked this contact
            raise Undeliverable(
                "not-acceptable",
                "you have blocked this contact",
                "{urn:xmpp:blocking:errors}blocked",
            )
        if self.presence.is_blocked(user, msg.sender):
            # a blocked contact learns nothing, not even that the account exists
            raise Undeliverable("service-unavailable")
        # IM URL filter: refused (LinkBlocked), or defanged before it is archived or stored
        msg = self.url_filter.filter_message(msg)
        archived = self.archive.record(msg) if self.archive is not None else None
        if archived is not None:
            # DESIGN §6 critical mode: delivered only once its archive batch has committed;
            # a failed write refuses it (resource-constraint) instead
            return archived.addCallback(lambda _: self._deliver(msg, user, sender_user))
        return self._deliver(msg, user, sender_user)

    def _deliver(self, msg: Message, user: str, sender_user: str | None) -> Deferred[None]:
        """route_message's second half: the recipient exists and may receive from the sender."""
        sender_eps = self.sessions.available(sender_user) if sender_user is not None else []
        copy = _carbon_copy(msg)
        if sender_eps and copy:
            # XEP-0280 §7: the sender's other clients see what it sent
            for ep in sender_eps:
                if ep.jid != msg.sender and getattr(ep, "carbons", False):
                    ep.deliver_carbon(msg, "sent")
        if msg.type == "chat" and msg.body is not None:
            self._remember_chat(msg)
        if self.history is not None and copy:
            # XEP-0313: both parties keep the line in their own history
            now = time.time()
            if sender_user is not None:
                self.history.record(sender_user, msg.to, True, msg, now)
            self.history.record(user, msg.sender, False, msg, now)
        if msg.to.resource is not None:
            target = self.sessions.get(msg.to)
            if target is not None:
                # §8.5.3.1: a connected resource gets the message whatever its presence
                result = self._write_message(target, msg)
                if copy:
                    self._carbons_received(user, msg, [target])
                return self._accepted(user, msg, [result])
            if msg.type in ("groupchat", "headline", "error"):
                # §8.5.3.2.1: these are not rerouted to the bare address
                if msg.type == "groupchat":
                    raise Undeliverable("service-unavailable")
                return succeed(None)
        if msg.type == "groupchat":
            raise Undeliverable("service-unavailable")
        candidates = [
            e for e in self.sessions.available(user) if e.presence and e.presence.priority >= 0
        ]
        if candidates:
            if msg.type == "headline":
                targets = candidates
            else:
                # §8.5.2.1.1: the most available resources (highest priority) get it
                top = max(e.presence.priority for e in candidates if e.presence)
                targets = [e for e in candidates if e.presence and e.presence.priority == top]
            results = [self._write_message(ep, msg) for ep in targets]
            if copy:
                self._carbons_received(user, msg, targets)
            return self._accepted(user, msg, results)
        if msg.type in ("headline", "error"):
            return succeed(None)  # §8.5.2.2: silently dropped when nobody is there
        return self._store_offline(user, msg)

    def _write_message(self, ep: Endpoint, msg: Message) -> Deferred[None] | None:
        # presence still waiting in the fan-out for this endpoint goes first: a sender's
        # presence change followed by a message arrives in that order (RFC 6120 §10.1)
        self.fanout.flush(ep)
        return ep.deliver_message(msg)

    def _accepted(
        self, user: str, msg: Message, results: list[Deferred[None] | None]
    ) -> Deferred[None]:
        """Whether the endpoints took a message. An endpoint that learns it only later (a SIP
        registration) returns a Deferred; one that took it returns None. When every endpoint
        fails, DESIGN §5: the message goes to offline storage if the failure was only the
        recipient being unreachable (recipient-unavailable), else the sender is told."""
        pending = [d for d in results if d is not None]
        if len(pending) < len(results) or not pending:
            for d in pending:
                d.addErrback(lambda f: log.msg(f"message to {user}: an endpoint failed: {f.value}"))
            return succeed(None)

        def decide(outcomes: list[tuple[bool, Any]]) -> Deferred[None] | None:
            if any(ok for ok, _ in outcomes):
                return None
            for _, f in outcomes:
                if not f.check(Undeliverable) or f.value.condition != "recipient-unavailable":
                    return f  # type: ignore[no-any-return]
            return maybeDeferred(self._store_offline, user, msg)

        return DeferredList(pending, consumeErrors=True).addCallback(decide)

    def _carbons_received(self, user: str, msg: Message, delivered: list[Endpoint]) -> None:
        """XEP-0280 §6: the recipient's other clients that asked for it get a copy (of a
        message _carbon_copy lets through)."""
        for ep in self.sessions.available(user):
            if ep not in delivered and getattr(ep, "carbons", False):
                ep.deliver_carbon(msg, "received")

    def _remember_chat(self, msg: Message) -> None:
        """Keep the last lines of each one-to-one chat, for a conference it turns into."""
        key = frozenset((msg.sender.bare, msg.to.bare))
        lines = self._recent.pop(key, None)
        if lines is None:
            lines = deque(maxlen=RECENT_LINES)
            if len(self._recent) >= RECENT_PAIRS:
                # the least recently active pair goes (the dict keeps activity order)
                del self._recent[next(iter(self._recent))]
        self._recent[key] = lines
        lines.append((time.time(), msg))

    def recent_chat(self, a: JID, b: JID, n: int, max_age: float) -> list[tuple[float, Message]]:
        """The last `n` lines between a and b from the last `max_age` seconds, oldest first."""
        cutoff = time.time() - max_age
        lines = [x for x in self._recent.get(frozenset((a.bare, b.bare)), ()) if x[0] >= cutoff]
        return lines[-n:]

    def _store_offline(self, user: str, msg: Message) -> Deferred[None]:
        if not self.offline_enabled:
            raise Undeliverable("service-unavailable", "the recipient is not signed in")
        if self.offline.full(user):
            raise Undeliverable("service-unavailable", "the recipient's offline storage is full")
        self.counters["offline_stored"] += 1
        return self.offline.store(user, msg)

    def _replay_offline(self, user: str) -> None:
        if user in self._replaying:
            return
        self._replaying.add(user)

        def deliver(stored: list[tuple[int, Message]]) -> Deferred[None] | None:
            targets = [
                e for e in self.sessions.available(user) if e.presence and e.presence.priority >= 0
            ]
            if not targets or not stored:
                return None
            # a message stays stored until an endpoint took it (a SIP one may fail later)
            taken: list[Deferred[Any]] = []

            def hand_over() -> Iterator[None]:
                for i, msg in stored:
                    accepted = self._accepted(
                        user, msg, [ep.deliver_message(msg) for ep in targets]
                    )
                    taken.append(accepted.addCallback(lambda _, i=i: i))
                    yield None  # many users signing in at once share the reactor fairly

            def forget(outcomes: list[tuple[bool, Any]]) -> Deferred[None]:
                return self.offline.remove(user, [i for ok, i in outcomes if ok and i is not None])

            d = task.coiterate(hand_over())
            d.addCallback(lambda _: DeferredList(taken, consumeErrors=True))
            return d.addCallback(forget)

        def done(result: Any) -> Any:
            self._replaying.discard(user)
            return result

        d = self.offline.fetch(user)
        d.addCallback(deliver)
        d.addErrback(lambda f: log.err(f, f"offline messages for {user}"))
        d.addBoth(done)


_NO_COPY = {"{urn:xmpp:carbons:2}private", "{urn:xmpp:hints}no-copy"}


def _carbon_copy(msg: Message) -> bool:
    """XEP-0280 §6.1: chat messages, and normal ones with a body, unless marked private."""
    if msg.type not in ("chat", "normal") or (msg.type == "normal" and msg.body is None):
        return False
    return not any(el.tag in _NO_COPY for el in msg.payload)
