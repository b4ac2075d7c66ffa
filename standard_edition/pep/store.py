"""PEP nodes and private XML storage in SQLite (migration 6), as functions for the store thread.

Every function here runs on the store's one thread (`Database.run` / `Database.read`); the
service keeps the nodes in memory and writes each change through.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import OrderedDict
from typing import Any

import sqlite_utils

from standard_edition.pep.model import Item, Node, from_dict, to_dict
from standard_edition.xmpp.xml import serialize


def load_nodes(db: sqlite_utils.Database) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every node with its stored items, oldest item first; the XML is parsed here, off the
    reactor."""
    items: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in db.execute(
        "SELECT owner, node, item, publisher, stamp, payload FROM pep_items "
        "ORDER BY owner, node, seq"
    ).fetchall():
        owner, node, item, publisher, stamp, payload = row
        try:
            el = ET.fromstring(payload)
        except ET.ParseError:
            continue  # never written by this code; a damaged row is skipped, not fatal
        items.setdefault((owner, node), []).append(
            {"id": item, "publisher": publisher, "stamp": stamp, "payload": el}
        )
    out = []
    for owner, node, config, affiliations in db.execute(
        "SELECT owner, node, config, affiliations FROM pep_nodes"
    ).fetchall():
        out.append(
            (
                {
                    "owner": owner,
                    "node": node,
                    "config": json.loads(config),
                    "affiliations": json.loads(affiliations),
                },
                items.get((owner, node), []),
            )
        )
    return out


def node_from_rows(row: dict[str, Any], items: list[dict[str, Any]]) -> Node:
    node = Node(row["owner"], row["node"], from_dict(row["config"]), OrderedDict(), {})
    node.affiliations.update(row["affiliations"])
    for i in items:
        node.items[i["id"]] = Item(i["id"], i["payload"], i["publisher"], i["stamp"])
    node.trim()
    return node


def save_node(db: sqlite_utils.Database, owner: str, name: str, config: str, affs: str) -> None:
    db.execute(
        "INSERT INTO pep_nodes (owner, node, config, affiliations) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (owner, node) DO UPDATE SET config = excluded.config, "
        "affiliations = excluded.affiliations",
        (owner, name, config, affs),
    )


def node_record(node: Node) -> tuple[str, str, str, str]:
    """The arguments of save_node, made on the reactor from the live node."""
    return (
        node.owner,
        node.name,
        json.dumps(to_dict(node.config)),
        json.dumps(node.affiliations, sort_keys=True),
    )


def save_item(
    db: sqlite_utils.Database,
    owner: str,
    name: str,
    item_id: str,
    publisher: str,
    stamp: float,
    payload: bytes,
    evicted: list[str],
    keep: int,
) -> None:
    """Store a published item and drop the evicted ones, in the caller's transaction."""
    (seq,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE owner = ? AND node = ?",
        (owner, name),
    ).fetchone()
    db.execute(
        "INSERT INTO pep_items (owner, node, item, seq, publisher, stamp, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, node, item) DO UPDATE SET "
        "seq = excluded.seq, publisher = excluded.publisher, stamp = excluded.stamp, "
        "payload = excluded.payload",
        (owner, name, item_id, seq, publisher, stamp, payload.decode()),
    )
    delete_items(db, owner, name, evicted)
    # belt and braces: never more rows than the node keeps
    db.execute(
        "DELETE FROM pep_items WHERE owner = ? AND node = ? AND seq NOT IN "
        "(SELECT seq FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?)",
        (owner, name, owner, name, keep),
    )


def delete_items(db: sqlite_utils.Database, owner: str, name: str, ids: list[str]) -> None:
    db.conn.executemany(
        "DELETE FROM pep_items WHERE owner = ? AND node = ? AND item = ?",
        [(owner, name, i) for i in ids],
    )


def purge_items(db: sqlite_utils.Database, owner: str, name: str) -> None:
    db.execute("DELETE FROM pep_items WHERE owner = ? AND node = ?", (owner, name))


def delete_node(db: sqlite_utils.Database, owner: str, name: str) -> None:
    purge_items(db, owner, name)
    db.execute("DELETE FROM pep_nodes WHERE owner = ? AND node = ?", (owner, name))


def forget_owner(db: sqlite_utils.Database, owner: str) -> None:
    """An account was removed: its nodes, items and private storage go with it."""
    for table in ("pep_items", "pep_nodes", "private_storage"):
        db.execute(f"DELETE FROM {table} WHERE owner = ?", (owner,))


def item_xml(payload: ET.Element) -> bytes:
    return serialize(payload, "")  # standalone: every namespace declared


# -- XEP-0049 private storage --------------------------------------------------------------------


def get_private(db: sqlite_utils.Database, owner: str, key: str) -> ET.Element | None:
    row = db.execute(
        "SELECT xml FROM private_storage WHERE owner = ? AND key = ?", (owner, key)
    ).fetchone()
    if row is None:
        return None
    try:
        return ET.fromstring(row[0])
    except ET.ParseError:
        return None


def set_private(db: sqlite_utils.Database, owner: str, key: str, xml: bytes) -> None:
    db.execute(
        "INSERT INTO private_storage (owner, key, xml) VALUES (?, ?, ?) "
        "ON CONFLICT (owner, key) DO UPDATE SET xml = excluded.xml",
        (owner, key, xml.decode()),
    )
