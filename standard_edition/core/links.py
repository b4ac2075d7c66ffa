"""Links in instant-message text: where they are, which host they lead to, and how to defang them.

Pure functions, no protocol and no I/O; the IM URL filter (core/url_filter.py) decides what to
do with what they find. What counts as a link (Skype's IM URL filtering looks at hyperlink
prefixes the same way):

- a URL with a web-like scheme (http, https, ftp, ftps, sftp, ws, wss, file, telnet, gopher,
  ldap, ldaps, nntp) or mailto:, found wherever it starts, even inside a word: some clients
  link `xhttp://...` from its `http` on;
- a link written without a scheme that starts with `www.` or `ftp.`, as clients link those;
- optionally any bare host name (`evil.example/path`, `bob@evil.example`), which only the
  domain-list scope asks for: only listed domains count then, so words like `file.txt` are
  harmless.

Address schemes (sip:, sips:, xmpp:, tel:) name people, not pages, and are not links here.

The host is read as a browser would (WHATWG URL): userinfo is skipped (`http://good@evil/`
goes to evil), backslashes end the host like slashes, percent escapes are decoded, the port
is dropped, and the name is folded to lower-case IDNA A-labels (fullwidth letters and dots,
soft hyphens and zero-width joiners included) so that it compares with a configured domain.

Every pattern is a single character class or a fixed alternation: no nested repetition, so
matching is linear in the length of the text whatever the text is.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

SCHEMES = (
    "https",
    "http",
    "ftps",
    "ftp",
    "sftp",
    "wss",
    "ws",
    "file",
    "telnet",
    "gopher",
    "ldaps",
    "ldap",
    "nntp",
)
# the hierarchical schemes are followed by at least one slash (or a backslash, which browsers
# read as one); mailto: by an address
_START = re.compile(
    r"(?P<scheme>" + "|".join(SCHEMES) + r"):[/\\]"
    r"|(?P<mailto>mailto):"
    r"|(?<![\w.@-])(?P<www>www|ftp)[.\u3002\uff0e\uff61]",
    re.IGNORECASE,
)
_SCHEME_START = re.compile(r"(?:" + "|".join(SCHEMES) + r"):[/\\]|mailto:", re.IGNORECASE)
# a link ends at white space, at characters no client puts in a link, or at a control character
_STOP = re.compile(r'[\s<>"`\x00-\x1f\x7f]')
# the authority of a URL ends at the path, the query, the fragment (or where the link ends)
_AUTHORITY_END = re.compile(r'[/\\?#\s<>"`\x00-\x1f\x7f]')
# runs of characters a host name may be written with (letters of any script, digits, - and
# dots, including the ideographic and fullwidth dots IDNA reads as dots)
_HOST_RUN = re.compile(r"[\w\u00ad\u200b-\u200d\u2060.\u3002\uff0e\uff61-]+")
_DOTS = re.compile(r"[.\u3002\uff0e\uff61]")
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))
_TRAILING = ".,;:!?'\"*)]}\u3002\uff0e\uff61"
_CLOSERS = {")": "(", "]": "[", "}": "{"}

# what a defanged link's scheme becomes: the usual convention, which no client links
_DEFANGED_SCHEMES = {"http": "hxxp", "https": "hxxps", "ftp": "fxp", "ftps": "fxps"}


@dataclass(frozen=True, slots=True)
class Link:
    """One link in a text. Spans are [start, end) indexes into that text."""

    start: int
    end: int
    kind: str  # "url" (with a scheme), "www" (www. or ftp.), "bare" (a host name alone)
    host: str  # the host it leads to, normalised (normalize_host); "" when it names none
    host_start: int
    host_end: int
    scheme_end: int = 0  # for kind "url": the index of the ':' after the scheme


def normalize_host(raw: str) -> str:
    """A host name as it is compared: percent escapes decoded, NFKC, invisible characters
    removed, lower case, ideographic dots as dots, no trailing dot, IDNA A-labels."""
    s = unicodedata.normalize("NFKC", unquote(raw, errors="replace"))
    s = _DOTS.sub(".", s.translate(_INVISIBLE)).lower().strip(".")
    labels = []
    for label in s.split("."):
        if not label.isascii():
            # not a valid IDNA label: compared as written (it matches nothing real)
            with contextlib.suppress(UnicodeError):
                label = label.encode("idna").decode("ascii")
        labels.append(label)
    return ".".join(labels)


def find_links(text: str, *, bare_hosts: bool = False) -> list[Link]:
    """Every link in text, in order; with bare_hosts also host names written alone."""
    links: list[Link] = []
    pos = 0
    run_end = -1
    # the next scheme start after the current link (a URL right after another, with no space
    # between, is a link of its own), remembered so that the text is searched once
    after: re.Match[str] | None = None
    after_from, after_run = -1, -1
    while True:
        m = _START.search(text, pos)
        if m is None:
            break
        start = m.start()
        if start >= run_end:
            stop = _STOP.search(text, start)
            run_end = stop.start() if stop else len(text)
        fresh = after.start() >= m.end() if after is not None else after_run == run_end
        if not (fresh and after_from <= m.end()):
            after = _SCHEME_START.search(text, m.end(), run_end)
            after_from, after_run = m.end(), run_end
        limit = after.start() if after is not None else run_end
        if m.group("scheme"):
            i = m.end()
            while i < run_end and text[i] in "/\\":
                i += 1  # browsers skip any number of slashes after a web scheme
            auth_end = _authority_end(text, i, limit)
            host_start, host_end = _host_span(text, i, auth_end)
            kind, scheme_end = "url", m.start() + len(m.group("scheme"))
        elif m.group("mailto"):
            i = m.end()
            auth_end = _authority_end(text, i, limit)
            at = text.rfind("@", i, auth_end)
            host_start, host_end = (at + 1 if at >= 0 else i), auth_end
            host_end = _trim_port(text, host_start, host_end)
            kind, scheme_end = "url", m.start() + len("mailto")
        else:
            auth_end = _authority_end(text, start, limit)
            host_start, host_end = _host_span(text, start, auth_end)
            kind, scheme_end = "www", 0
        host_end = _trim_trailing(text, host_start, host_end)
        end = _trim_trailing(text, start, run_end)
        links.append(
            Link(
                start,
                max(end, host_end),
                kind,
                normalize_host(text[host_start:host_end]),
                host_start,
                host_end,
                scheme_end,
            )
        )
        pos = max(m.end(), auth_end)
    # a link found inside another's path starts a new one: the earlier one ends there
    for n in range(len(links) - 1):
        if links[n].end > links[n + 1].start:
            cut = max(links[n].host_end, _trim_trailing(text, links[n].start, links[n + 1].start))
            links[n] = _replace_end(links[n], cut)
    if bare_hosts:
        links = _with_bare_hosts(text, links)
    return links


def _replace_end(link: Link, end: int) -> Link:
    return Link(
        link.start, end, link.kind, link.host, link.host_start, link.host_end, link.scheme_end
    )


def _authority_end(text: str, i: int, run_end: int) -> int:
    m = _AUTHORITY_END.search(text, i, run_end)
    return m.start() if m else run_end


def _host_span(text: str, i: int, auth_end: int) -> tuple[int, int]:
    """The host inside an authority [i, auth_end): after any userinfo, before any port."""
    at = text.rfind("@", i, auth_end)
    host_start = at + 1 if at >= 0 else i
    return host_start, _trim_port(text, host_start, auth_end)


def _trim_port(text: str, start: int, end: int) -> int:
    if start < end and text[start] == "[":
        close = text.find("]", start, end)
        return close + 1 if close >= 0 else end  # an IPv6 literal keeps its colons
    colon = text.find(":", start, end)
    return colon if colon >= 0 else end


def _trim_trailing(text: str, start: int, end: int) -> int:
    """Punctuation after a link belongs to the sentence, as clients decide: closing brackets
    only when the link does not open them itself."""
    counts: dict[str, int] | None = None
    while end > start and text[end - 1] in _TRAILING:
        ch = text[end - 1]
        opener = _CLOSERS.get(ch)
        if opener is not None:
            if counts is None:  # counted once: a long run of brackets stays linear
                counts = {c: text.count(c, start, end) for c in "()[]{}"}
            if counts[opener] >= counts[ch]:
                break
            counts[ch] -= 1
        end -= 1
    return end


def _with_bare_hosts(text: str, links: list[Link]) -> list[Link]:
    """Host names written alone, outside the links already found, merged in order."""
    out: list[Link] = []
    i = 0
    spans = [(lk.start, lk.end) for lk in links] + [(len(text), len(text))]
    pos = 0
    for span_start, span_end in spans:
        for m in _HOST_RUN.finditer(text, pos, span_start):
            s, e = m.start(), _trim_trailing(text, m.start(), m.end())
            while s < e and text[s] in "-.\u3002\uff0e\uff61":
                s += 1
            host = normalize_host(text[s:e])
            if "." in host and _plausible(host):
                out.append(Link(s, e, "bare", host, s, e))
        if i < len(links):
            out.append(links[i])
            i += 1
        pos = max(pos, span_end)
    return out


def _plausible(host: str) -> bool:
    """A dotted name whose last label could be a top-level domain (letters, or an IDN)."""
    labels = host.split(".")
    tld = labels[-1]
    return (
        all(labels)
        and len(tld) >= 2
        and (tld.isalpha() or tld.startswith("xn--"))
        and not any(lab.startswith("-") or lab.endswith("-") for lab in labels)
    )


def host_in(host: str, domains: frozenset[str]) -> bool:
    """Is host one of the domains or a subdomain of one (domains normalised)?"""
    if not host or not domains:
        return False
    labels = host.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def defang(text: str, links: Iterable[Link]) -> str:
    """The text with each given link made unclickable: a web scheme becomes hxxp/hxxps/fxp/fxps
    (any other gets `[:]` for its colon), and every dot of the host becomes `[.]`. Defanged
    links are not found again (defang is idempotent)."""
    out: list[str] = []
    pos = 0
    for link in sorted(links, key=lambda lk: lk.start):
        if link.start < pos:
            continue
        out.append(text[pos : link.start])
        if link.kind == "url":
            scheme = text[link.start : link.scheme_end]
            new = _DEFANGED_SCHEMES.get(scheme.lower())
            if new is not None:
                out.append(_same_case(new, scheme) + ":")
            else:
                out.append(scheme + "[:]")
            out.append(text[link.scheme_end + 1 : link.host_start])
        else:
            out.append(text[link.start : link.host_start])
        out.append(_DOTS.sub("[.]", text[link.host_start : link.host_end]))
        out.append(text[link.host_end : link.end])
        pos = link.end
    out.append(text[pos:])
    return "".join(out)


def _same_case(new: str, old: str) -> str:
    return new.upper() if old.isupper() else new
