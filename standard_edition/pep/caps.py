"""XEP-0115 entity capabilities: what a client's `ver` says it supports, learned once per ver.

A client's presence carries <c node ver hash/>; the server asks that client for its disco#info
once, checks the answer against `ver` (§5.1 verification string) and remembers the features
under `ver` for every client that announces the same one. A client whose answer does not hash
to its `ver` is believed for itself only.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DATA = "jabber:x:data"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# §5.1: the hash names of the IANA registry, as hashlib knows them
HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
          "sha-512": "sha512", "md5": "md5"}  # fmt: skip
MAX_CACHED = 5000  # distinct ver strings remembered


@dataclass(frozen=True, slots=True)
class Caps:
    node: str
    ver: str
    hash: str  # "" for the legacy form without a hash (§6)


def caps_of(payload: tuple[ET.Element, ...] | list[ET.Element]) -> Caps | None:
    """The <c/> of a presence's extension elements, if it has a usable one."""
    for el in payload:
        if el.tag == "{" + NS_CAPS + "}c":
            ver = el.get("ver", "")
            if not ver or len(ver) > 256:
                return None
            return Caps(el.get("node", "")[:1024], ver, el.get("hash", "").lower())
    return None


def verification_string(query: ET.Element) -> str:
    """XEP-0115 §5.1: identities, features and extended forms of a disco#info result."""
    idents = []
    for ident in query.findall("{" + NS_DISCO_INFO + "}identity"):
        idents.append(
            "/".join(
                (
                    ident.get("category", ""),
                    ident.get("type", ""),
                    ident.get(XML_LANG, ""),
                    ident.get("name", ""),
                )
            )
        )
    out = "".join(i + "<" for i in sorted(idents))
    features = sorted(f.get("var", "") for f in query.findall("{" + NS_DISCO_INFO + "}feature"))
    out += "".join(f + "<" for f in features)
    forms = []
    for form in query.findall("{" + NS_DATA + "}x"):
        fields = {}
        form_type = None
        for fld in form.findall("{" + NS_DATA + "}field"):
            var = fld.get("var", "")
            values = sorted(v.text or "" for v in fld.findall("{" + NS_DATA + "}value"))
            if var == "FORM_TYPE":
                form_type = values[0] if values else ""
                continue
            fields[var] = values
        if form_type is None:
            continue  # §5.4: a form without FORM_TYPE is ignored
        text = form_type + "<"
        for var in sorted(fields):
            text += var + "<" + "".join(v + "<" for v in fields[var])
        forms.append((form_type, text))
    out += "".join(text for _, text in sorted(forms))
    return out


def ver_matches(caps: Caps, query: ET.Element) -> bool:
    algo = HASHES.get(caps.hash)
    if algo is None:
        return False
    digest = hashlib.new(algo, verification_string(query).encode()).digest()
    return base64.b64encode(digest).decode() == caps.ver


def features_of(query: ET.Element) -> frozenset[str]:
    return frozenset(
        f.get("var", "") for f in query.findall("{" + NS_DISCO_INFO + "}feature") if f.get("var")
    )


def notify_nodes(features: frozenset[str]) -> frozenset[str]:
    """XEP-0163 §4.3: the nodes a client asks notifications of with `<node>+notify`."""
    return frozenset(f[: -len("+notify")] for f in features if f.endswith("+notify"))


class CapsCache:
    """Features by verified ver, shared by all clients; insertion order is age."""

    def __init__(self, limit: int = MAX_CACHED) -> None:
        self.limit = limit
        self._by_ver: dict[str, frozenset[str]] = {}

    def get(self, caps: Caps) -> frozenset[str] | None:
        if not caps.hash:
            return None  # §6 legacy caps name no features we could check
        return self._by_ver.get(caps.hash + ":" + caps.ver)

    def put(self, caps: Caps, nodes: frozenset[str]) -> None:
        key = caps.hash + ":" + caps.ver
        self._by_ver.pop(key, None)
        if len(self._by_ver) >= self.limit:
            del self._by_ver[next(iter(self._by_ver))]
        self._by_ver[key] = nodes

    def __len__(self) -> int:
        return len(self._by_ver)
