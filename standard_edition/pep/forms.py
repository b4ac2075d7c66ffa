"""XEP-0004 data forms, only as far as pubsub configuration needs them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from standard_edition.pep.model import NodeConfig, config_fields, config_options
from standard_edition.xmpp.stanzas import sub

NS_DATA = "jabber:x:data"
X = "{" + NS_DATA + "}"
FORM_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
FORM_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
MAX_FIELDS = 64
MAX_VALUES = 64


def fields_of(x: ET.Element | None) -> dict[str, list[str]]:
    """var -> values of a submitted form; an absent form is an empty one."""
    out: dict[str, list[str]] = {}
    if x is None:
        return out
    for fld in x.findall(X + "field")[:MAX_FIELDS]:
        var = fld.get("var")
        if var:
            out[var] = [(v.text or "") for v in fld.findall(X + "value")[:MAX_VALUES]]
    return out


def form_in(parent: ET.Element | None) -> ET.Element | None:
    return None if parent is None else parent.find(X + "x")


def config_form(config: NodeConfig, form_type: str = "form") -> ET.Element:
    """The node configuration form (XEP-0060 §8.2.1), filled with the node's settings."""
    x = ET.Element(X + "x", {"type": form_type})
    hidden = sub(x, X + "field", {"var": "FORM_TYPE", "type": "hidden"})
    sub(hidden, X + "value", text=FORM_NODE_CONFIG)
    for var, ftype, values in config_fields(config):
        fld = sub(x, X + "field", {"var": var, "type": ftype})
        for option in config_options(var):
            opt = sub(fld, X + "option")
            sub(opt, X + "value", text=option)
        for v in values:
            sub(fld, X + "value", text=v)
    return x
