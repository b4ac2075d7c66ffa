"""Personal eventing (XEP-0163) on a small XEP-0060 core, private storage and bookmarks."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from standard_edition.core.jid import JID
from standard_edition.pep import handlers, private
from standard_edition.pep.service import NS_PUBSUB, PepService
from standard_edition.xmpp.iq import IqHandlers
from standard_edition.xmpp.stanzas import error_reply


def attach(iq: IqHandlers, service: PepService) -> private.PrivateStorage:
    """Answer pubsub, pubsub#owner and jabber:iq:private requests to accounts, and show the
    account as a PEP service in its disco#info."""
    pubsub = handlers.PepHandlers(service)
    storage = private.PrivateStorage(service)
    iq.register_account(NS_PUBSUB, "pubsub", pubsub.pubsub, others=True)
    iq.register_account(handlers.NS_OWNER, "pubsub", pubsub.owner, others=True)
    iq.register_account(private.NS_PRIVATE, "query", storage.query, others=True)
    iq.account_identities.append(("pubsub", "pep"))
    iq.account_features.extend((*handlers.FEATURES, *private.FEATURES))
    iq.account_nodes = pubsub
    return storage


class _Remote:
    """The requester of an iq that came over federation, shaped as the handlers expect."""

    def __init__(self, jid: JID) -> None:
        self.jid = jid


def federate(s2s: Any, service: PepService) -> None:
    """A partner's users read PEP nodes their access model opens to them (an OMEMO bundle, a
    contact's avatar), and their clients' caps decide their notifications."""
    pubsub = handlers.PepHandlers(service)
    before = s2s.account_iq

    def account_iq(iq: ET.Element, sender: JID, owner: str) -> Any:
        q = iq.find("{" + NS_PUBSUB + "}pubsub")
        if q is None:
            return before(iq, sender, owner) if before is not None else None
        if iq.get("type") != "get":
            return error_reply(iq, "forbidden", "only the account's owner changes its nodes")
        return pubsub.pubsub(_Remote(sender), iq, q, JID(owner, service.domain, None))  # type: ignore[arg-type]

    s2s.account_iq = account_iq
    s2s.presence_seen.append(service.remote_presence)
    # the server asks a partner's client for its caps and hears the answer (XEP-0115)
    service.send_remote_iq = s2s.send
    s2s.iq_results.append(service.remote_answer)
