"""Sans-I/O pieces of server-to-server XMPP: dialback keys, certificate identity, namespaces.

XEP-0220 dialback with XEP-0185 keys; RFC 6120 §13.7.1.2 / RFC 6125 certificate identity for
SASL EXTERNAL; the jabber:client <-> jabber:server renaming a stanza needs when it crosses from
a client stream to a server stream (RFC 6120 §4.8.3).
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from standard_edition.xmpp.xml import NS_CLIENT, NS_SERVER

NS_DB = "jabber:server:dialback"
NS_DB_FEATURE = "urn:xmpp:features:dialback"
DB = "{" + NS_DB + "}"
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id), hex."""
    key = hashlib.sha256(secret).hexdigest().encode()
    text = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def key_matches(secret: bytes, receiving: str, originating: str, stream_id: str, key: str) -> bool:
    expected = dialback_key(secret, receiving, originating, stream_id)
    return hmac.compare_digest(expected.encode(), key.strip().encode())


def der_of_pem(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def certificate_identity(chain_der: list[bytes], domain: str, pinned_pem: str | None) -> str | None:
    """How the peer's certificate proves `domain`: "pinned" (the admin's pinned certificate),
    "ca" (a public CA, valid for the domain), or None (it does not)."""
    if not chain_der:
        return None
    if pinned_pem is not None:
        try:
            if der_of_pem(pinned_pem) == chain_der[0]:
                return "pinned"
        except ValueError:
            return None
        return None  # pinned to another certificate: only that one proves the domain
    store = _system_store()
    if store is None:
        return None
    from cryptography.x509 import verification

    try:
        leaf = x509.load_der_x509_certificate(chain_der[0])
        rest = [x509.load_der_x509_certificate(d) for d in chain_der[1:]]
        verifier = (
            verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(domain))
        )
        verifier.verify(leaf, rest)
    except Exception:  # any verification or parsing failure means "not proven"
        return None
    return "ca"


@cache
def _system_store() -> object | None:
    from cryptography.x509 import verification

    for name in SYSTEM_CA_FILES:
        path = Path(name)
        if path.exists():
            try:
                with warnings.catch_warnings():
                    # some distributions' bundles hold old roots cryptography warns about
                    warnings.simplefilter("ignore")
                    roots = x509.load_pem_x509_certificates(path.read_bytes())
                return verification.Store(roots)
            except ValueError:
                continue
    return None


def renamed(el: ET.Element, old: str, new: str) -> ET.Element:
    """A copy of `el` with every element in namespace `old` moved to `new`."""
    prefix_old, prefix_new = "{" + old + "}", "{" + new + "}"

    def walk(src: ET.Element) -> ET.Element:
        tag = src.tag
        if isinstance(tag, str) and tag.startswith(prefix_old):
            tag = prefix_new + tag[len(prefix_old) :]
        out = ET.Element(tag, dict(src.attrib))
        out.text, out.tail = src.text, src.tail
        out.extend(walk(ch) for ch in src)
        return out

    return walk(el)


def to_client(el: ET.Element) -> ET.Element:
    return renamed(el, NS_SERVER, NS_CLIENT)
