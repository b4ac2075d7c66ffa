"""Publish-subscribe nodes and items, protocol-free (XEP-0060 as XEP-0163 PEP uses it).

A node is one owner's named collection of items with a configuration; this module decides what
a configuration form means, whether publish-options preconditions hold (XEP-0223 / XEP-0060
§7.1.5), which items a publish evicts and who may read a node. No XML parsing of stanzas, no
store, no reactor: the XMPP adapter (pep/service.py) turns requests into these calls.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field, replace

MAX_ITEMS = 1000  # what "max" means for pubsub#max_items on this server
MAX_NODES = 500  # nodes one account may own
ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
AFFILIATIONS = ("owner", "publisher", "member", "none", "outcast")
TRUE = ("1", "true")
FALSE = ("0", "false")


class PubsubError(Exception):
    """A request the service refuses: the stanza condition and the XEP-0060 pubsub#errors
    condition (with its `feature` attribute for <unsupported/>)."""

    def __init__(
        self, condition: str, app: str | None = None, text: str = "", feature: str | None = None
    ) -> None:
        super().__init__(condition)
        self.condition = condition
        self.app = app
        self.text = text
        self.feature = feature


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """XEP-0060 §16.4.3 pubsub#node_config, the fields PEP clients set."""

    access_model: str = "presence"  # XEP-0163 §4.4: the PEP default
    persist_items: bool = True
    max_items: int = 1
    send_last_published_item: str = "on_sub_and_presence"  # XEP-0163 §4.2
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    notify_retract: bool = True
    notify_delete: bool = True
    publish_model: str = "publishers"
    roster_groups_allowed: tuple[str, ...] = ()
    title: str = ""
    type: str = ""


def _boolean(var: str, values: list[str]) -> bool:
    v = (values[0] if values else "").strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise PubsubError("not-acceptable", text=f"{var} takes a boolean")


def _max_items(values: list[str]) -> int:
    v = (values[0] if values else "").strip().lower()
    if v == "max":
        return MAX_ITEMS
    try:
        n = int(v)
    except ValueError:
        raise PubsubError("not-acceptable", text="pubsub#max_items is a number or max") from None
    if n < 1 or n > MAX_ITEMS:
        raise PubsubError("not-acceptable", text=f"pubsub#max_items is from 1 to {MAX_ITEMS}")
    return n


def _choice(var: str, values: list[str], allowed: tuple[str, ...]) -> str:
    v = (values[0] if values else "").strip()
    if v not in allowed:
        raise PubsubError(
            "not-acceptable",
            "{http://jabber.org/protocol/pubsub#errors}unsupported-access-model"
            if var == "pubsub#access_model"
            else None,
            f"{var} is one of {', '.join(allowed)}",
        )
    return v


def _text(values: list[str]) -> str:
    return (values[0] if values else "")[:1024]


# the form fields this server understands, each to its NodeConfig attribute and reader
_FIELDS = {
    "pubsub#access_model": (
        "access_model",
        lambda v: _choice("pubsub#access_model", v, ACCESS_MODELS),
    ),
    "pubsub#persist_items": ("persist_items", lambda v: _boolean("pubsub#persist_items", v)),
    "pubsub#max_items": ("max_items", _max_items),
    "pubsub#send_last_published_item": (
        "send_last_published_item",
        lambda v: _choice("pubsub#send_last_published_item", v, SEND_LAST),
    ),
    "pubsub#deliver_notifications": (
        "deliver_notifications",
        lambda v: _boolean("pubsub#deliver_notifications", v),
    ),
    "pubsub#deliver_payloads": (
        "deliver_payloads",
        lambda v: _boolean("pubsub#deliver_payloads", v),
    ),
    "pubsub#notify_retract": ("notify_retract", lambda v: _boolean("pubsub#notify_retract", v)),
    "pubsub#notify_delete": ("notify_delete", lambda v: _boolean("pubsub#notify_delete", v)),
    "pubsub#publish_model": (
        "publish_model",
        lambda v: _choice("pubsub#publish_model", v, ("publishers",)),
    ),
    "pubsub#roster_groups_allowed": (
        "roster_groups_allowed",
        lambda v: tuple(sorted({g.strip() for g in v if g.strip()}))[:64],
    ),
    "pubsub#title": ("title", _text),
    "pubsub#type": ("type", _text),
}
# fields a client may send and that carry no setting here (notably the form type)
_IGNORED = {"FORM_TYPE"}


def parse_config(base: NodeConfig, fields: dict[str, list[str]]) -> NodeConfig:
    """A node configuration form applied to `base`; an unknown field or value is refused."""
    changes = {}
    for var, values in fields.items():
        if var in _IGNORED:
            continue
        known = _FIELDS.get(var)
        if known is None:
            raise PubsubError("not-acceptable", text=f"unsupported field {var[:100]}")
        attr, read = known
        changes[attr] = read(values)
    return replace(base, **changes)


def preconditions_met(config: NodeConfig, fields: dict[str, list[str]]) -> bool:
    """XEP-0060 §7.1.5: every field of the publish-options form equals the node's setting."""
    try:
        wanted = parse_config(config, fields)
    except PubsubError:
        return False
    return wanted == config


def config_fields(config: NodeConfig) -> list[tuple[str, str, list[str]]]:
    """(var, form field type, values) for the owner's configuration form."""
    out: list[tuple[str, str, list[str]]] = []
    for var, (attr, _) in _FIELDS.items():
        value = getattr(config, attr)
        if isinstance(value, bool):
            out.append((var, "boolean", ["1" if value else "0"]))
        elif attr == "max_items":
            out.append((var, "text-single", ["max" if value == MAX_ITEMS else str(value)]))
        elif attr == "roster_groups_allowed":
            out.append((var, "list-multi", list(value)))
        elif attr in ("access_model", "send_last_published_item", "publish_model"):
            out.append((var, "list-single", [value]))
        else:
            out.append((var, "text-single", [value]))
    return out


def config_options(var: str) -> tuple[str, ...]:
    """The values a list-single field offers."""
    return {
        "pubsub#access_model": ACCESS_MODELS,
        "pubsub#send_last_published_item": SEND_LAST,
        "pubsub#publish_model": ("publishers",),
    }.get(var, ())


def to_dict(config: NodeConfig) -> dict[str, object]:
    """A configuration as JSON-able values, for the store."""
    return {
        "access_model": config.access_model,
        "persist_items": config.persist_items,
        "max_items": config.max_items,
        "send_last_published_item": config.send_last_published_item,
        "deliver_notifications": config.deliver_notifications,
        "deliver_payloads": config.deliver_payloads,
        "notify_retract": config.notify_retract,
        "notify_delete": config.notify_delete,
        "publish_model": config.publish_model,
        "roster_groups_allowed": list(config.roster_groups_allowed),
        "title": config.title,
        "type": config.type,
    }


def from_dict(data: dict[str, object]) -> NodeConfig:
    known = {k: v for k, v in data.items() if k in NodeConfig.__slots__}  # type: ignore[attr-defined]
    if "roster_groups_allowed" in known:
        known["roster_groups_allowed"] = tuple(known["roster_groups_allowed"])  # type: ignore[arg-type]
    return NodeConfig(**known)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    payload: ET.Element  # the one child of <item/>, shared read-only by every notification
    publisher: str  # bare address of who published it
    stamp: float  # epoch seconds


@dataclass(slots=True)
class Node:
    owner: str  # account name
    name: str
    config: NodeConfig = field(default_factory=NodeConfig)
    # oldest first; a re-published id moves to the end (XEP-0060 §7.1.2: it replaces the old)
    items: OrderedDict[str, Item] = field(default_factory=OrderedDict)
    affiliations: dict[str, str] = field(default_factory=dict)  # bare JID -> affiliation

    def publish(self, item: Item) -> list[str]:
        """Add or replace an item; returns the ids evicted by pubsub#max_items, oldest first."""
        self.items.pop(item.id, None)
        self.items[item.id] = item
        return self.trim()

    def trim(self) -> list[str]:
        evicted = []
        while len(self.items) > self.config.max_items:
            old, _ = self.items.popitem(last=False)
            evicted.append(old)
        return evicted

    def retract(self, item_id: str) -> bool:
        return self.items.pop(item_id, None) is not None

    def purge(self) -> list[str]:
        ids = list(self.items)
        self.items.clear()
        return ids

    @property
    def last(self) -> Item | None:
        return next(reversed(self.items.values()), None)

    def newest(self, n: int | None = None) -> list[Item]:
        """The n most recent items, oldest of them first (XEP-0060 §6.5.7)."""
        items = list(self.items.values())
        return items if n is None else items[-n:] if n > 0 else []

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")


@dataclass(frozen=True, slots=True)
class Relation:
    """What a requester is to the node owner, as the roster says."""

    is_owner: bool = False
    subscribed: bool = False  # the requester receives the owner's presence (from/both)
    groups: tuple[str, ...] = ()  # the roster groups the owner put the requester in
    blocked: bool = False  # XEP-0191: the owner blocked the requester


OWNER = Relation(is_owner=True)
NS_ERRORS = "{http://jabber.org/protocol/pubsub#errors}"


def check_access(node: Node, who: str, rel: Relation) -> None:
    """XEP-0060 §6.5.9 / §12.1: raise the refusal for a requester who may not read the node."""
    if rel.is_owner:
        return
    aff = node.affiliation(who)
    if rel.blocked or aff == "outcast":
        raise PubsubError("forbidden")
    if aff in ("owner", "publisher", "member"):
        return
    model = node.config.access_model
    if model == "open":
        return
    if model == "presence":
        if not rel.subscribed:
            raise PubsubError("not-authorized", NS_ERRORS + "presence-subscription-required")
        return
    if model == "roster":
        if not set(rel.groups) & set(node.config.roster_groups_allowed):
            raise PubsubError("not-authorized", NS_ERRORS + "not-in-roster-group")
        return
    raise PubsubError("not-allowed", NS_ERRORS + "closed-node")


def may_access(node: Node, who: str, rel: Relation) -> bool:
    try:
        check_access(node, who, rel)
    except PubsubError:
        return False
    return True
