"""XEP-0163 personal eventing: every account is a pubsub service at its bare address.

The service holds every node in memory (read from the store at start) and writes each change
through the store's writer thread. It decides who is told of a change: the owner's own
resources and the contacts the node's access model lets in, each only if its client asked for
the node with `<node>+notify` in its XEP-0115 capabilities. Those are learned by asking one
client per `ver` for its disco#info, and cached by `ver`.
"""

from __future__ import annotations

import itertools
import time
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python import log
from twisted.python.failure import Failure

from standard_edition.core.jid import JID, InvalidJID, parse_jid
from standard_edition.core.model import Message, Presence, RosterItem, Undeliverable
from standard_edition.core.router import Router
from standard_edition.pep import store
from standard_edition.pep.caps import (
    NS_DISCO_INFO,
    Caps,
    CapsCache,
    caps_of,
    features_of,
    notify_nodes,
    ver_matches,
)
from standard_edition.pep.model import (
    MAX_NODES,
    OWNER,
    Item,
    Node,
    NodeConfig,
    PubsubError,
    Relation,
    check_access,
    may_access,
)
from standard_edition.store.database import Database
from standard_edition.xmpp.stanzas import C, sub

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = NS_PUBSUB + "#event"
EVENT = "{" + NS_EVENT + "}"
CAPS_QUERY_TIMEOUT = 30.0  # seconds a client has to answer the server's disco#info
MAX_REMOTE_QUERIES = 1000  # caps queries to other domains' clients awaiting an answer at once


@dataclass
class _CapsQuery:
    """One disco#info the server sent to learn what a `ver` means."""

    ep: weakref.ReferenceType[Any] | None  # None: asked over federation
    jid: JID
    caps: Caps
    shared: bool  # the answer may be cached for every client with this ver
    waiters: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    remote: set[JID] = field(default_factory=set)  # other domains' clients with this ver
    timer: Any = None


class PepService:
    def __init__(self, reactor: Any, db: Database, router: Router) -> None:
        self.reactor = reactor
        self.db = db
        self.router = router
        self.domain = router.domain
        self.nodes: dict[str, dict[str, Node]] = {}  # owner -> node name -> node
        self.caps = CapsCache()
        self._queries: dict[str, _CapsQuery] = {}
        self._asking: dict[tuple[str, str], _CapsQuery] = {}
        self._ids = itertools.count(1)
        # per endpoint: (the presence the nodes were read from, the nodes it wants)
        self._interest: weakref.WeakKeyDictionary[Any, tuple[Presence, frozenset[str]]] = (
            weakref.WeakKeyDictionary()
        )
        # answers that did not hash to the client's ver: believed for that client only
        self._unverified: weakref.WeakKeyDictionary[Any, tuple[Caps, frozenset[str]]] = (
            weakref.WeakKeyDictionary()
        )
        # the nodes whose last item an available endpoint has already been sent
        self._sent_last: weakref.WeakKeyDictionary[Any, frozenset[str]] = (
            weakref.WeakKeyDictionary()
        )
        self._subscribed: set[tuple[str, JID]] = set()  # (owner, contact with from/both)
        # remote contacts' resources: bare -> full -> the nodes it wants notifications of
        self.remote_interest: dict[JID, dict[JID, frozenset[str]]] = {}
        # remote resources whose caps are being asked: full -> (caps, local users it told)
        self._remote_pending: dict[JID, tuple[Caps, set[str]]] = {}
        self._remote_unverified: dict[JID, tuple[Caps, frozenset[str]]] = {}
        self._remote_told: dict[JID, set[str]] = {}  # local users whose last items it has
        # sends an iq to a client of another domain: (domain, iq) -> Deferred (s2s, federate())
        self.send_remote_iq: Callable[[str, ET.Element], Deferred[None]] | None = None
        # called after a node changed: (owner, node name); private storage keeps bookmarks in step
        self.node_listeners: list[Callable[[str, str], None]] = []
        self.counters = {"published": 0, "notifications": 0, "caps_queries": 0}
        # writes wait here while a batch is on the store thread, then commit together
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...], Deferred[None]]] = []
        self._writing = False
        router.roster_listeners.append(self._roster_changed)
        router.accounts.on_removed.append(self._account_removed)

    def load(self) -> Deferred[int]:
        def keep(rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
            for row, items in rows:
                node = store.node_from_rows(row, items)
                self.nodes.setdefault(node.owner, {})[node.name] = node
            for acct in self.router.accounts.all():
                for contact in self.router.rosters.subscribers(acct.username):
                    self._subscribed.add((acct.username, contact))
            return len(rows)

        return self.db.read(store.load_nodes).addCallback(keep)

    # -- reading -------------------------------------------------------------------------------

    def node(self, owner: str, name: str) -> Node | None:
        return self.nodes.get(owner, {}).get(name)

    def owned(self, owner: str) -> list[Node]:
        return list(self.nodes.get(owner, {}).values())

    def status(self) -> dict[str, int]:
        """For `se-ctl status`: nodes held, and what was done since start."""
        return {"nodes": sum(len(mine) for mine in self.nodes.values()), **self.counters}

    def bare(self, owner: str) -> JID:
        return JID(owner, self.domain, None)

    def relation(self, owner: str, who: JID) -> Relation:
        """What `who` is to the owner; the owner's roster decides (presence/access.py's rule
        for presence: from or both)."""
        bare = who.bare
        if bare == self.bare(owner):
            return OWNER
        item = self.router.rosters.get(owner, bare)
        return Relation(
            is_owner=False,
            subscribed=bool(item and item.state.has_from),
            groups=item.groups if item is not None and item.in_roster else (),
            blocked=self.router.presence.is_blocked(owner, bare),
        )

    def readable(self, owner: str, name: str, who: JID) -> Node:
        """The node if `who` may read it; else the XEP-0060 refusal."""
        node = self.node(owner, name)
        if node is None:
            raise PubsubError("item-not-found")
        check_access(node, str(who.bare), self.relation(owner, who))
        return node

    # -- changing ------------------------------------------------------------------------------

    def create(self, owner: str, name: str, config: NodeConfig) -> Deferred[Node]:
        if self.node(owner, name) is not None:
            raise PubsubError("conflict", text="the node exists")
        if len(self.nodes.get(owner, {})) >= MAX_NODES:
            raise PubsubError("not-allowed", text=f"at most {MAX_NODES} nodes per account")
        node = Node(owner, name, config)
        self.nodes.setdefault(owner, {})[name] = node
        return self._write(store.save_node, *store.node_record(node)).addCallback(lambda _: node)

    def publish(
        self,
        owner: str,
        name: str,
        item_id: str,
        payload: ET.Element,
        publisher: JID,
        config: NodeConfig | None = None,
    ) -> Deferred[Item]:
        """Store an item (creating the node with `config` when missing) and tell everyone
        interested once it is stored."""
        node = self.node(owner, name)
        created: Deferred[Any] = succeed(None)
        if node is None:
            created = self.create(owner, name, config or NodeConfig())
            node = self.nodes[owner][name]
        item = Item(item_id, payload, str(publisher.bare), time.time())
        evicted = node.publish(item)
        self.counters["published"] += 1
        keep = node.config.max_items
        # readers already see the item in memory: those interested hear of it now, while the
        # publisher's answer waits for the commit
        self.notify(node, self.event_items(node, [item]))

        def write(_: object) -> Deferred[None]:
            if not node.config.persist_items:
                return self._write(store.delete_items, owner, name, [item_id, *evicted])
            return self._write(
                store.save_item,
                owner,
                name,
                item_id,
                item.publisher,
                item.stamp,
                store.item_xml(payload),
                evicted,
                keep,
            )

        def tell(_: object) -> Item:
            if self.node(owner, name) is node:
                self._changed(owner, name)
            return item

        return created.addCallback(write).addCallback(tell)

    def retract(self, owner: str, name: str, ids: list[str], notify: bool) -> Deferred[None]:
        node = self.node(owner, name)
        if node is None:
            raise PubsubError("item-not-found")
        gone = [i for i in ids if node.retract(i)]
        if not gone:
            raise PubsubError("item-not-found", text="no such item")

        if notify and node.config.notify_retract:
            self.notify(node, self.event_items(node, [], gone))
        d = self._write(store.delete_items, owner, name, gone)
        return d.addCallback(lambda _: self._changed(owner, name))

    def purge(self, owner: str, name: str) -> Deferred[None]:
        node = self.node(owner, name)
        if node is None:
            raise PubsubError("item-not-found")
        node.purge()
        if node.config.notify_retract:
            ev = ET.Element(EVENT + "event")
            sub(ev, EVENT + "purge", {"node": name})
            self.notify(node, ev)
        d = self._write(store.purge_items, owner, name)
        return d.addCallback(lambda _: self._changed(owner, name))

    def delete(self, owner: str, name: str) -> Deferred[None]:
        node = self.nodes.get(owner, {}).pop(name, None)
        if node is None:
            raise PubsubError("item-not-found")
        # who may hear of it is decided while the node still has its configuration
        ev = ET.Element(EVENT + "event")
        sub(ev, EVENT + "delete", {"node": name})
        if node.config.notify_delete:
            self.notify(node, ev)

        def done(_: object) -> None:
            self._changed(owner, name)

        return self._write(store.delete_node, owner, name).addCallback(done)

    def configure(self, owner: str, name: str, config: NodeConfig) -> Deferred[None]:
        node = self.node(owner, name)
        if node is None:
            raise PubsubError("item-not-found")
        node.config = config
        evicted = node.trim()
        d = self._write(_save_config, store.node_record(node), evicted)
        if not config.persist_items:
            d = self._write(store.purge_items, owner, name)
        return d

    def set_affiliations(self, owner: str, name: str, changes: dict[str, str]) -> Deferred[None]:
        node = self.node(owner, name)
        if node is None:
            raise PubsubError("item-not-found")
        for jid, aff in changes.items():
            if aff == "none":
                node.affiliations.pop(jid, None)
            else:
                node.affiliations[jid] = aff
        return self._write(store.save_node, *store.node_record(node))

    def _write(self, fn: Callable[..., None], *args: Any) -> Deferred[None]:
        """Queue fn(db, *args) for the store thread; writes queued while a batch commits go
        together in the next transaction (in order), so a burst of publishes costs few commits."""
        d: Deferred[None] = Deferred()
        self._pending.append((fn, args, d))
        if not self._writing:
            self._writing = True
            self.reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._writing = False
            return

        def run_all(db: Any) -> None:
            for fn, args, _ in batch:
                fn(db, *args)

        def settled(result: Any) -> None:
            if isinstance(result, Failure):
                log.err(result, f"pep: a batch of {len(batch)} writes failed; each is refused")
            for _, _, d in batch:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)
            self._flush()

        self.db.run(run_all).addBoth(settled)

    def _changed(self, owner: str, name: str) -> None:
        for listener in self.node_listeners:
            try:
                listener(owner, name)
            except Exception:
                log.err(None, f"pep: after a change of {owner}'s node {name}")

    def _account_removed(self, username: str) -> None:
        self.nodes.pop(username, None)
        self._subscribed = {p for p in self._subscribed if p[0] != username}
        d = self.db.run(store.forget_owner, username)
        d.addErrback(lambda f: log.err(f, f"pep: removing {username}'s nodes"))

    # -- notifications -------------------------------------------------------------------------

    def event_items(
        self, node: Node, items: Iterable[Item], retracted: Iterable[str] = ()
    ) -> ET.Element:
        ev = ET.Element(EVENT + "event")
        its = sub(ev, EVENT + "items", {"node": node.name})
        for item in items:
            el = sub(its, EVENT + "item", {"id": item.id, "publisher": item.publisher})
            if node.config.deliver_payloads:
                el.append(item.payload)
        for rid in retracted:
            sub(its, EVENT + "retract", {"id": rid})
        return ev

    def notify(self, node: Node, event: ET.Element) -> int:
        """Send one event to every endpoint that wants this node and may read it."""
        if not node.config.deliver_notifications:
            return 0
        owner = node.owner
        sender = self.bare(owner)
        sent = 0
        for ep in self.router.sessions.available(owner):
            if node.name in self.interest(ep):
                sent += self._send_event(ep, sender, event)
        contacts = set(self.router.rosters.subscribers(owner))
        for jid, aff in node.affiliations.items():
            if aff in ("owner", "publisher", "member"):
                try:
                    contacts.add(_jid(jid).bare)
                except ValueError:
                    continue
        for contact in contacts:
            if contact == sender or not may_access(
                node, str(contact), self.relation(owner, contact)
            ):
                continue
            user = self.router.local_user(contact)
            if user is not None:
                if self.router.presence.is_blocked(user, sender):
                    continue
                for ep in self.router.sessions.available(user):
                    if node.name in self.interest(ep):
                        sent += self._send_event(ep, sender, event)
            elif self.router.is_remote(contact):
                for full, nodes in list(self.remote_interest.get(contact, {}).items()):
                    if node.name in nodes:
                        sent += self._send_remote(sender, full, event)
        self.counters["notifications"] += sent
        return sent

    def _send_event(
        self, ep: Any, sender: JID, event: ET.Element, delay: float | None = None
    ) -> int:
        send = getattr(ep, "send_stanza", None)
        if send is None:
            return 0  # SIP endpoints have no notion of pubsub events
        msg = ET.Element(
            C + "message", {"from": str(sender), "to": str(ep.jid), "type": "headline"}
        )
        msg.append(event)
        if delay is not None:
            sub(msg, "{urn:xmpp:delay}delay", {"from": str(sender), "stamp": _stamp(delay)})
        send(msg)
        return 1

    def _send_remote(self, sender: JID, to: JID, event: ET.Element) -> int:
        """A contact in another domain: through the router, as any message would go."""
        msg = Message(sender, to, "headline", None, None, (event,))
        try:
            d = self.router.route_message(msg)
        except Undeliverable as e:
            log.msg(f"pep: notification to {to} not sent: {e.condition}")
            return 0
        d.addErrback(lambda f: log.msg(f"pep: notification to {to} failed: {f.getErrorMessage()}"))
        return 1

    def send_last(self, ep: Any, owner: str, names: Iterable[str]) -> int:
        """XEP-0060 §12.6 / XEP-0163 §4.3.2: the last item of each node, as a notification."""
        sent = 0
        me = ep.jid.local
        sender = self.bare(owner)
        if me != owner and self.router.presence.is_blocked(me, sender):
            return 0
        rel = self.relation(owner, ep.jid)
        for name in names:
            node = self.node(owner, name)
            if node is None or node.config.send_last_published_item == "never":
                continue
            if not node.config.deliver_notifications:
                continue
            last = node.last
            if last is None or not may_access(node, str(ep.jid.bare), rel):
                continue
            sent += self._send_event(ep, sender, self.event_items(node, [last]), last.stamp)
        self.counters["notifications"] += sent
        return sent

    def _send_last_items(self, ep: Any, nodes: frozenset[str]) -> None:
        """An endpoint became available or learned new interests: the last items of its own
        account's nodes and of every contact whose presence it receives."""
        done = self._sent_last.get(ep, frozenset())
        new = nodes - done
        if not new:
            return
        self._sent_last[ep] = done | new
        user = ep.jid.local
        owners = [user] + [
            u
            for c in self.router.rosters.subscriptions(user)
            if (u := self.router.local_user(c)) is not None and u != user
        ]
        for owner in owners:
            mine = self.nodes.get(owner)
            if mine:
                self.send_last(ep, owner, [n for n in new if n in mine])

    def _roster_changed(self, owner: str, item: RosterItem) -> None:
        """A contact newly allowed to see the owner's presence gets the last items (the
        'on_sub' half of on_sub_and_presence)."""
        key = (owner, item.contact)
        if not item.state.has_from:
            self._subscribed.discard(key)
            return
        if key in self._subscribed:
            return
        self._subscribed.add(key)
        user = self.router.local_user(item.contact)
        mine = self.nodes.get(owner)
        if not mine:
            return
        if user is None:
            # a contact of another domain: its resources whose caps are known
            for full, nodes in list(self.remote_interest.get(item.contact, {}).items()):
                self._remote_send_last(owner, full, nodes)
            return
        for ep in self.router.sessions.available(user):
            wanted = [n for n in self.interest(ep) if n in mine]
            if wanted:
                self.send_last(ep, owner, wanted)

    # -- what each client wants (XEP-0115) -------------------------------------------------------

    def interest(self, ep: Any) -> frozenset[str]:
        """The nodes this endpoint asked notifications of, from its current presence."""
        presence = ep.presence
        if presence is None:
            return frozenset()
        known = self._interest.get(ep)
        if known is not None and known[0] is presence:
            return known[1]
        caps = caps_of(presence.payload)
        nodes = self._nodes_for(ep, caps) if caps is not None else frozenset()
        if nodes is None:
            return frozenset()  # still asking
        self._interest[ep] = (presence, nodes)
        return nodes

    def _nodes_for(self, ep: Any, caps: Caps) -> frozenset[str] | None:
        nodes = self.caps.get(caps)
        if nodes is not None:
            return nodes
        own = self._unverified.get(ep)
        if own is not None and own[0] == caps:
            return own[1]
        return None

    def endpoint_available(self, ep: Any, presence: Presence, initial: bool) -> None:
        """A local client sent available presence: learn its caps, send what it missed."""
        if initial:
            self._sent_last.pop(ep, None)
        caps = caps_of(presence.payload)
        if caps is None:
            return
        nodes = self._nodes_for(ep, caps)
        if nodes is None:
            self._ask(ep, caps)
            return
        self._send_last_items(ep, nodes)

    def _ask(self, ep: Any, caps: Caps, shared: bool = True) -> None:
        shared = shared and bool(caps.hash)
        key = (caps.hash, caps.ver)
        if shared and key in self._asking:
            self._asking[key].waiters.add(ep)
            return
        qid = f"caps{next(self._ids)}"
        query = _CapsQuery(weakref.ref(ep), ep.jid, caps, shared)
        self._send_query(qid, query)
        ep.send_stanza(self._query_iq(qid, ep.jid, caps))

    def _send_query(self, qid: str, query: _CapsQuery) -> None:
        query.timer = self.reactor.callLater(CAPS_QUERY_TIMEOUT, self._give_up, qid)
        self._queries[qid] = query
        if query.shared:
            self._asking[(query.caps.hash, query.caps.ver)] = query
        self.counters["caps_queries"] += 1

    def _query_iq(self, qid: str, to: JID, caps: Caps) -> ET.Element:
        iq = ET.Element(C + "iq", {"type": "get", "id": qid, "from": self.domain, "to": str(to)})
        q = sub(iq, "{" + NS_DISCO_INFO + "}query")
        if caps.node:
            q.set("node", f"{caps.node}#{caps.ver}")
        return iq

    def _give_up(self, qid: str) -> None:
        query = self._queries.pop(qid, None)
        if query is None:
            return
        if self._asking.get((query.caps.hash, query.caps.ver)) is query:
            del self._asking[(query.caps.hash, query.caps.ver)]
        for jid in query.remote:
            pending = self._remote_pending.get(jid)
            if pending is not None and pending[0] == query.caps:
                del self._remote_pending[jid]  # its next presence asks again

    def iq_answer(self, ep: Any, el: ET.Element) -> bool:
        """A result or error a local client addressed to the server: True if it answered a
        caps query."""
        query = self._queries.get(el.get("id", ""))
        if query is None or query.ep is None or ep.jid != query.jid:
            return False
        self._answered(el, query, ep)
        return True

    def remote_answer(self, el: ET.Element, sender: JID) -> bool:
        """The same for a client of another domain, over federation (xmpp/s2s.py)."""
        query = self._queries.get(el.get("id", ""))
        if query is None or query.ep is not None or sender != query.jid:
            return False
        self._answered(el, query, None)
        return True

    def _answered(self, el: ET.Element, query: _CapsQuery, ep: Any) -> None:
        """`ep` answered (None: the remote client asked); the features go to every client
        waiting on the same ver when the answer hashes to it, else to the answerer only."""
        del self._queries[el.get("id", "")]
        if query.timer is not None and query.timer.active():
            query.timer.cancel()
        key = (query.caps.hash, query.caps.ver)
        if self._asking.get(key) is query:
            del self._asking[key]
        result = el.find("{" + NS_DISCO_INFO + "}query") if el.get("type") == "result" else None
        nodes = notify_nodes(features_of(result)) if result is not None else frozenset()
        if result is not None and query.shared and ver_matches(query.caps, result):
            self.caps.put(query.caps, nodes)
            for waiter in [ep, *query.waiters] if ep is not None else list(query.waiters):
                self._learned(waiter)
            for jid in query.remote:
                self._remote_resolved(jid, query.caps, nodes)
            return
        if ep is not None:
            self._unverified[ep] = (query.caps, nodes)
            self._learned(ep)
        for waiter in list(query.waiters):
            if waiter is not ep and waiter.presence is not None:
                self._ask(waiter, query.caps, shared=False)  # each speaks for itself now
        for jid in query.remote:
            if ep is None and jid == query.jid:
                self._remote_unverified[jid] = (query.caps, nodes)
                self._remote_resolved(jid, query.caps, nodes)
            elif jid in self._remote_pending:
                self._ask_remote(jid, query.caps, shared=False)

    def _learned(self, ep: Any) -> None:
        if ep.presence is not None:
            nodes = self.interest(ep)
            if nodes:
                self._send_last_items(ep, nodes)

    # -- contacts in other domains -------------------------------------------------------------

    def remote_presence(self, sender: JID, to: JID, payload: tuple[ET.Element, ...] | None) -> None:
        """A remote contact's resource became available (payload) or left (None). Its caps
        come from the cache when a client with the same ver was asked before; otherwise the
        server asks that client, over federation, for its disco#info."""
        user = self.router.local_user(to)
        if user is None or sender.resource is None:
            return
        if not self.router.may_federate(user, sender.domain):
            return
        if payload is None:
            self._remote_gone(sender)
            return
        caps = caps_of(payload)
        if caps is None:
            self._remote_learned(sender, set(), frozenset())
            return
        nodes = self.caps.get(caps)
        if nodes is None:
            own = self._remote_unverified.get(sender)
            nodes = own[1] if own is not None and own[0] == caps else None
        if nodes is not None:
            self._remote_pending.pop(sender, None)
            self._remote_learned(sender, {user}, nodes)
            return
        pending = self._remote_pending.get(sender)
        if pending is not None and pending[0] == caps:
            pending[1].add(user)  # already asked; this user hears too once it answers
            return
        self._remote_pending[sender] = (caps, {user})
        self._ask_remote(sender, caps)

    def _ask_remote(self, jid: JID, caps: Caps, shared: bool = True) -> None:
        if self.send_remote_iq is None:
            return
        shared = shared and bool(caps.hash)
        key = (caps.hash, caps.ver)
        if shared and key in self._asking:
            self._asking[key].remote.add(jid)
            return
        if sum(1 for q in self._queries.values() if q.ep is None) >= MAX_REMOTE_QUERIES:
            log.msg(f"pep: too many caps queries to other domains; {jid} not asked")
            return
        qid = f"caps{next(self._ids)}"
        query = _CapsQuery(None, jid, caps, shared, remote={jid})
        self._send_query(qid, query)
        d = self.send_remote_iq(jid.domain, self._query_iq(qid, jid, caps))
        d.addErrback(lambda f: log.msg(f"pep: caps query to {jid} not sent: {f.getErrorMessage()}"))

    def _remote_resolved(self, jid: JID, caps: Caps, nodes: frozenset[str]) -> None:
        pending = self._remote_pending.get(jid)
        if pending is None or pending[0] != caps:
            return  # gone, or it announced other caps since it was asked
        del self._remote_pending[jid]
        self._remote_learned(jid, pending[1], nodes)

    def _remote_learned(self, jid: JID, users: set[str], nodes: frozenset[str]) -> None:
        """A remote resource's wanted nodes are known: keep them for notify(), and send the
        last items to it of each local user it told its presence who shares with it."""
        if not nodes:
            resources = self.remote_interest.get(jid.bare)
            if resources is not None:
                resources.pop(jid, None)
                if not resources:
                    del self.remote_interest[jid.bare]
            return
        self.remote_interest.setdefault(jid.bare, {})[jid] = nodes
        for user in users:
            self._remote_send_last(user, jid, nodes)

    def _remote_send_last(self, user: str, jid: JID, nodes: frozenset[str]) -> None:
        """XEP-0163 §4.3.2 for a remote resource: once per user while it is available, and
        only when the user shares presence with it (else the roster change sends them)."""
        told = self._remote_told.setdefault(jid, set())
        rel = self.relation(user, jid)
        if user in told or not rel.subscribed:
            return
        told.add(user)
        mine = self.nodes.get(user, {})
        sent = 0
        for name in nodes & mine.keys():
            node = mine[name]
            last = node.last
            if (
                last is not None
                and node.config.send_last_published_item != "never"
                and node.config.deliver_notifications
                and may_access(node, str(jid.bare), rel)
            ):
                sent += self._send_remote(self.bare(user), jid, self.event_items(node, [last]))
        self.counters["notifications"] += sent

    def _remote_gone(self, jid: JID) -> None:
        self._remote_learned(jid, set(), frozenset())
        self._remote_pending.pop(jid, None)
        self._remote_unverified.pop(jid, None)
        self._remote_told.pop(jid, None)


def _save_config(db: Any, record: tuple[str, str, str, str], evicted: list[str]) -> None:
    store.save_node(db, *record)
    store.delete_items(db, record[0], record[1], evicted)


def _jid(value: str) -> JID:
    try:
        return parse_jid(value)
    except InvalidJID as e:
        raise ValueError(str(e)) from None


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
