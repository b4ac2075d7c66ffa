"""Numbered schema migrations; the file's PRAGMA user_version says which ran.

Append new steps at the end; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _001_accounts_rosters(db: sqlite_utils.Database) -> None:
    db["accounts"].create(
        {
            "username": str,  # PRECIS-prepared local part
            "name": str,  # display name
            "enabled": int,
            "created": str,  # ISO 8601 UTC
            "credentials": str,  # JSON: SCRAM keys and SIP HA1s, never the password
        },
        pk="username",
    )
    db["roster"].create(
        {
            "owner": str,
            "contact": str,  # bare JID
            "name": str,
            "groups": str,  # JSON list
            "subscription": str,  # none | to | from | both (RFC 6121 §2.1.2.5)
            "ask": int,  # our subscribe request awaits the contact's answer (pending-out)
            "pending_in": int,  # the contact's request awaits our answer (pending-in)
            "approved": int,  # pre-approved (RFC 6121 §3.4)
            "in_roster": int,  # a real roster item, not only a remembered pending-in request
        },
        pk=("owner", "contact"),
        foreign_keys=[("owner", "accounts", "username")],
    )
    db["offline"].create(
        {
            "id": int,
            "owner": str,
            "stamp": str,  # when the server received it (XEP-0203)
            "sender": str,
            "stanza": str,  # the message as received, for the protocol adapter to replay
        },
        pk="id",
    )
    db["offline"].create_index(["owner", "id"])
    db["settings"].create({"key": str, "value": str}, pk="key")


def _002_presence(db: sqlite_utils.Database) -> None:
    db["presence_settings"].create(
        {
            "username": str,
            "privacy": int,  # privacy mode: only contacts on the roster see presence
            "manual_code": int,  # a state set by hand, or NULL
            "manual_activity": str,
            "manual_until": float,  # epoch seconds, or NULL: until changed
            "note": str,  # personal note
            "oof_note": str,  # out-of-office note
        },
        pk="username",
        foreign_keys=[("username", "accounts", "username")],
    )
    db["access_levels"].create(
        {"owner": str, "contact": str, "level": str},
        pk=("owner", "contact"),
        foreign_keys=[("owner", "accounts", "username")],
    )
    db["blocklist"].create(
        {"owner": str, "jid": str},
        pk=("owner", "jid"),
        foreign_keys=[("owner", "accounts", "username")],
    )
    db["calendar"].create(
        {"id": int, "owner": str, "activity": str, "start": float, "end": float},
        pk="id",
        foreign_keys=[("owner", "accounts", "username")],
    )
    db["calendar"].create_index(["owner"])


def _003_sip_bindings(db: sqlite_utils.Database) -> None:
    # RFC 3261 §10.3: registrations survive a restart until they expire (DESIGN §5); no
    # foreign key, so removing an account and its bindings need no particular order
    db["sip_bindings"].create(
        {
            "username": str,
            "contact": str,  # the Contact URI as registered
            "expires_at": float,  # epoch seconds
            "call_id": str,
            "cseq": int,
            "source": str,  # transport:host:port the REGISTER came from
            "q": float,
        },
        pk=("username", "contact"),
    )


def _004_message_archive(db: sqlite_utils.Database) -> None:
    # XEP-0313: each user's own copy of their one-to-one messages, for every device
    db["mam"].create(
        {
            "id": int,
            "owner": str,
            "peer": str,  # bare JID of the other party
            "stamp": float,  # epoch seconds, when the server routed it
            "outgoing": int,
            "message": str,  # JSON: sender, to, type, body, id, payload XML
        },
        pk="id",
    )
    db["mam"].create_index(["owner", "stamp"])
    db["mam"].create_index(["owner", "peer", "stamp"])


def _005_rooms(db: sqlite_utils.Database) -> None:
    # XEP-0045 persistent rooms outlive their occupants and the server's restarts
    db["rooms"].create(
        {
            "name": str,  # local part of room@conference.<domain>
            "title": str,
            "members_only": int,
            "subject": str,
            "affiliations": str,  # JSON: bare JID -> owner | admin | member | outcast
            "created": float,  # names the room's archive (xmpp/muc.py archive_name)
        },
        pk="name",
    )


def _006_pep_private(db: sqlite_utils.Database) -> None:
    # XEP-0163 PEP: each account's pubsub nodes, their configuration and their items
    db["pep_nodes"].create(
        {
            "owner": str,  # account name
            "node": str,
            "config": str,  # JSON: pep/model.py NodeConfig
            "affiliations": str,  # JSON: bare JID -> affiliation
        },
        pk=("owner", "node"),
    )
    db["pep_items"].create(
        {
            "owner": str,
            "node": str,
            "item": str,  # item id
            "seq": int,  # publication order within the node
            "publisher": str,
            "stamp": float,  # epoch seconds
            "payload": str,  # the item's XML
        },
        pk=("owner", "node", "item"),
    )
    db["pep_items"].create_index(["owner", "node", "seq"])
    # XEP-0049 private XML storage: one element per account and namespace
    db["private_storage"].create(
        {"owner": str, "key": str, "xml": str},  # key: Clark name {ns}local
        pk=("owner", "key"),
    )


def _007_vcards(db: sqlite_utils.Database) -> None:
    # XEP-0054 vCard-temp: each account's card as the user set it, and what presence and the
    # directory need from it without reading the card (no foreign key: removal order is free)
    db["vcards"].create(
        {
            "username": str,
            "vcard": str,  # the <vCard xmlns='vcard-temp'/> element's XML
            "photo_sha1": str,  # XEP-0153: hex SHA-1 of the PHOTO's image data, or NULL
            "fn": str,  # formatted name, or NULL
            "email": str,  # first work e-mail address, or NULL
            "updated": str,  # ISO 8601 UTC
        },
        pk="username",
    )


def _008_uploads(db: sqlite_utils.Database) -> None:
    # XEP-0363: one row per uploaded file, kept as data_dir/uploads/<token> (upload/store.py);
    # no foreign key, so removing an account leaves its files to expire
    db["uploads"].create(
        {
            "token": str,  # the secret in the file's URL, and its name on disk
            "owner": str,  # account name, for the quota
            "filename": str,  # as the client named it
            "content_type": str,
            "size": int,
            "created": float,  # epoch seconds
            "expires": float,  # epoch seconds, or NULL: kept until removed
        },
        pk="token",
    )
    db["uploads"].create_index(["owner"])
    db["uploads"].create_index(["expires"])


def _009_sip_binding_origin(db: sqlite_utils.Database) -> None:
    # DESIGN §7: a registration made through the edge stays a remote user's after a restart,
    # so the outside-access policy still reaches it; the rows before this were all unmarked
    db["sip_bindings"].add_column("origin", str, not_null_default="internal")


MIGRATIONS: list[tuple[int, Callable[[sqlite_utils.Database], None]]] = [
    (1, _001_accounts_rosters),
    (2, _002_presence),
    (3, _003_sip_bindings),
    (4, _004_message_archive),
    (5, _005_rooms),
    (6, _006_pep_private),
    (7, _007_vcards),
    (8, _008_uploads),
    (9, _009_sip_binding_origin),
]
