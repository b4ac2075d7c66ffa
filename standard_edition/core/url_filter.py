"""IM URL filtering (Skype for Business's IM URL filter), applied in the core for every protocol.

The router runs every one-to-one message through the filter before it is archived, delivered,
stored offline or sent to another domain, whichever way it came in (XMPP, SIP, federation);
conferences run each line said in a room through it before the fan-out. Modes:

- off: links pass unchanged;
- warn: the message is delivered with the warning prefix in front and each flagged link
  defanged (core/links.py: `hxxp://evil[.]example`), so no client makes it clickable; an XHTML-IM
  copy or an out-of-band URL (XEP-0066) carrying a flagged link is dropped (the plain body
  stays);
- block: the message is refused: the sender gets not-acceptable (SIP 403) naming the reason.

Invitations are messages too: the reason of a XEP-0249 direct invitation (an attribute) and of
a XEP-0045 mediated one (`<reason/>`) is defanged in warn mode and refuses the invitation in
block mode, like a body. A message the filter has let through is marked (Message.filtered), so
that routing it again (XEP-0198: a dropped session's unacknowledged messages) filters it once.

Each message warned or blocked counts in the router's counters (`url_filter_warned`,
`url_filter_blocked`: `se-ctl status`, the console's counters feed); each block is logged at
info with the sender, where it was going (a domain, or a room) and the matched domains, never
the text.

Scope: "domains" flags links to the listed domains and their subdomains (also host names
written alone and e-mail addresses); "all" flags every link, except links to this server's own
domain and its subdomains (the upload service's, for instance).

The settings are run-time settings (DESIGN §8): se-ctl stores them, they win over config.toml,
and `se-ctl config reset im.url_filter.KEY` returns each to the file's value.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.logger import Logger

from standard_edition.config import Config
from standard_edition.core.links import Link, defang, find_links, host_in, normalize_host
from standard_edition.core.model import Message, Undeliverable

MODES = ("off", "warn", "block")
SCOPES = ("domains", "all")
DEFAULT_PREFIX = "[Link warning: links in this message were made unclickable]"
MAX_PREFIX = 200
FILTERED_TYPES = frozenset({"chat", "normal", "groupchat"})
LINK_BLOCKED = "{urn:se-appliance:im:0}link-blocked"  # the XMPP application error condition

_C = "{jabber:client}"
_TEXTS = (_C + "body", _C + "subject")
_XHTML = "{http://jabber.org/protocol/xhtml-im}html"
_OOB = "{jabber:x:oob}x"
_LINKING = ("href", "src")  # XHTML-IM attributes that hold a link
_DIRECT_INVITE = "{jabber:x:conference}x"  # XEP-0249: the reason is an attribute
_MUC_USER = "{http://jabber.org/protocol/muc#user}"
_MEDIATED = _MUC_USER + "x"  # XEP-0045 §7.8.2: <invite/> or <decline/> with a <reason/>
_REASON = _MUC_USER + "reason"
_INVITATIONS = (_DIRECT_INVITE, _MEDIATED)

# the router's counters (se-ctl status, the console's counters feed)
WARNED = "url_filter_warned"
BLOCKED = "url_filter_blocked"

log = Logger(namespace="se.url_filter")

# the run-time keys with their config.toml value (se-ctl config reset KEY returns to it)
RUNTIME_KEYS: dict[str, Callable[[Config], Any]] = {
    "im.url_filter.mode": lambda cfg: cfg.url_filter_mode,
    "im.url_filter.scope": lambda cfg: cfg.url_filter_scope,
    "im.url_filter.domains": lambda cfg: sorted(cfg.url_filter_domains),
    "im.url_filter.prefix": lambda cfg: cfg.url_filter_prefix,
}


class LinkBlocked(Undeliverable):
    """A message refused by the filter in block mode: XMPP not-acceptable, SIP 403."""

    def __init__(self, text: str) -> None:
        super().__init__("not-acceptable", text, LINK_BLOCKED)


@dataclass(frozen=True, slots=True)
class UrlFilter:
    mode: str = "off"
    scope: str = "domains"
    domains: frozenset[str] = frozenset()  # normalised (links.normalize_host)
    prefix: str = DEFAULT_PREFIX
    own_domain: str = ""  # never flagged in scope "all"
    # where warned and blocked messages are counted: the router's counters, which outlive
    # each filter a settings change replaces
    counters: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _own: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        own = normalize_host(self.own_domain) if self.own_domain else ""
        object.__setattr__(self, "_own", frozenset({own}) if own else frozenset())

    @classmethod
    def build(
        cls,
        mode: str,
        scope: str,
        domains: Any,
        prefix: str,
        own_domain: str,
        counters: dict[str, int] | None = None,
    ) -> UrlFilter:
        wanted = frozenset(normalize_host(d) for d in domains if normalize_host(d))
        return cls(mode, scope, wanted, prefix, own_domain, {} if counters is None else counters)

    @property
    def active(self) -> bool:
        return self.mode != "off" and (self.scope == "all" or bool(self.domains))

    # -- what is flagged ------------------------------------------------------------------------

    def flagged(self, text: str) -> list[Link]:
        """The links in text this filter flags."""
        if not self.active or not text:
            return []
        if self.scope == "all":
            return [lk for lk in find_links(text) if not host_in(lk.host, self._own)]
        return [lk for lk in find_links(text, bare_hosts=True) if host_in(lk.host, self.domains)]

    def _reason(self, links: list[Link]) -> str:
        if self.scope == "all":
            return "message not delivered: links are not allowed in instant messages here"
        hosts = ", ".join(dict.fromkeys(lk.host for lk in links))
        return f"message not delivered: it links to a blocked site ({hosts})"[:300]

    # -- applying it ----------------------------------------------------------------------------

    def apply(
        self,
        body: str | None,
        payload: tuple[ET.Element, ...],
        subject: str | None = None,
        *,
        sender: object = None,
        to: object = None,
    ) -> tuple[str | None, tuple[ET.Element, ...], str | None]:
        """The body, payload and subject to deliver; raises LinkBlocked in block mode.

        Unchanged (the same objects) when nothing is flagged. sender and to (a domain or a
        room) only name the message in the log line of a block."""
        if not self.active:
            return body, payload, subject
        found: list[Link] = []
        found += self.flagged(body or "")
        found += self.flagged(subject or "")
        rich_flagged: set[int] = set()
        for i, el in enumerate(payload):
            hits = self._flagged_element(el)
            if hits:
                found += hits
                if el.tag not in _TEXTS and el.tag not in _INVITATIONS:
                    rich_flagged.add(i)
        if not found:
            return body, payload, subject
        self._count_or_refuse(found, sender, to)
        new_payload = tuple(
            self._warned_element(el) for i, el in enumerate(payload) if i not in rich_flagged
        )
        return (
            self._warn_text(body, prefix=True),
            new_payload,
            self._warn_text(subject, prefix=False),
        )

    def filter_message(self, msg: Message) -> Message:
        """A message as it may be delivered (raises LinkBlocked in block mode); one the filter
        already let through passes as it is."""
        if msg.filtered or not self.active or msg.type not in FILTERED_TYPES:
            return msg
        body, payload, _ = self.apply(msg.body, msg.payload, sender=msg.sender, to=msg.to.domain)
        if body is msg.body and payload is msg.payload:
            return msg
        return replace(msg, body=body, payload=payload, filtered=True)

    def filter_text(
        self, text: str | None, *, sender: object = None, to: object = None
    ) -> str | None:
        """A text that travels outside a message body (an invitation's reason): defanged in
        warn mode, without the prefix; raises LinkBlocked in block mode."""
        found = self.flagged(text or "")
        if not found:
            return text
        self._count_or_refuse(found, sender, to)
        return self._warn_text(text, prefix=False)

    def _count_or_refuse(self, found: list[Link], sender: object, to: object) -> None:
        """Count a flagged message; in block mode log it and refuse it."""
        if self.mode != "block":
            self.counters[WARNED] = self.counters.get(WARNED, 0) + 1
            return
        self.counters[BLOCKED] = self.counters.get(BLOCKED, 0) + 1
        hosts = ", ".join(dict.fromkeys(lk.host or "(no host)" for lk in found))
        log.info(
            "url filter: blocked a message from {sender} to {to}: links to {hosts}",
            sender=str(getattr(sender, "bare", sender) or "?"),
            to=str(to or "?"),
            hosts=hosts,
        )
        raise LinkBlocked(self._reason(found))

    def _flagged_element(self, el: ET.Element) -> list[Link]:
        if el.tag in _TEXTS:
            return self.flagged(el.text or "")
        if el.tag == _XHTML:
            texts = [t for node in el.iter() for t in (node.text, node.tail) if t]
            texts += [
                v for node in el.iter() for k, v in node.attrib.items() if k in ("href", "src")
            ]
            return [lk for t in texts for lk in self.flagged(t)]
        if el.tag == _OOB:
            return self.flagged(el.findtext("{jabber:x:oob}url") or "")
        if el.tag == _DIRECT_INVITE:
            return self.flagged(el.get("reason") or "")
        if el.tag == _MEDIATED:
            return [lk for r in el.iter(_REASON) for lk in self.flagged(r.text or "")]
        return []

    def _warn_text(self, text: str | None, *, prefix: bool) -> str | None:
        if text is None:
            return None
        flagged = self.flagged(text)
        out = defang(text, flagged) if flagged else text
        return f"{self.prefix} {out}" if prefix and self.prefix else out

    def _warned_element(self, el: ET.Element) -> ET.Element:
        if el.tag in _TEXTS:
            return self._warned(el)
        if el.tag in _INVITATIONS:
            return self._warned_invitation(el)
        return el

    def _warned_invitation(self, el: ET.Element) -> ET.Element:
        """A copy of an invitation with its reason defanged; the invitation still works."""
        new = copy.deepcopy(el)
        if new.tag == _DIRECT_INVITE and new.get("reason"):
            new.set("reason", self._warn_text(new.get("reason"), prefix=False) or "")
        for r in new.iter(_REASON):
            r.text = self._warn_text(r.text, prefix=False)
        return new

    def _warned(self, el: ET.Element) -> ET.Element:
        new = ET.Element(el.tag, dict(el.attrib))
        new.text = self._warn_text(el.text or "", prefix=el.tag == _C + "body")
        new.tail = el.tail
        new.extend(list(el))
        return new


def from_settings(cfg: Config, settings: Any, counters: dict[str, int] | None = None) -> UrlFilter:
    """The filter in force: each key from se-ctl's stored value, else from config.toml;
    counters: where it counts what it warns and blocks (the router's)."""

    def value(key: str) -> Any:
        return settings.get(key, RUNTIME_KEYS[key](cfg))

    return UrlFilter.build(
        value("im.url_filter.mode"),
        value("im.url_filter.scope"),
        value("im.url_filter.domains"),
        value("im.url_filter.prefix"),
        cfg.domain,
        counters,
    )
