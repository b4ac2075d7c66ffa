"""SIP messages (RFC 3261 §7, §20, §25): parse, inspect, build and serialize.

Parsing is one pass over the header lines: names are matched case-insensitively, compact
forms are expanded (§7.3.3), folded lines are unfolded (§7.3.1) and values of headers whose
grammar is a comma list are split into one entry each. Structured values (Via, From, To,
Contact, CSeq, ...) are parsed only when asked for and cached until the header they come
from changes; a server's `Request.validate` asks for every header RFC 3261 requires, so a
broken one is reported before the request is handled. Recently parsed URIs and addresses
are remembered, since the same ones come in request after request.

Header values are kept as text decoded from UTF-8 with "surrogateescape", so any byte
received survives a parse/serialize round trip unchanged.

Every problem with the input raises `ParseError`; its `status` is the response a server
should send (400, 416, 501, 505 ...) or None when the message cannot be answered (a broken
response, or a request whose framing is lost).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias

__all__ = [
    "KNOWN_METHODS",
    "URI",
    "AbsoluteURI",
    "AuthHeader",
    "CSeq",
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipURI",
    "Via",
    "canonical_name",
    "make_response",
    "parse_auth",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "quote_string",
    "reason_phrase",
    "serialize",
]

SIP_VERSION = "SIP/2.0"
MAX_UINT32 = 2**32 - 1

# RFC 3261 §27.4 plus the SIMPLE extensions this server speaks.
KNOWN_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)


class ParseError(Exception):
    """Malformed SIP input.

    `status`/`reason` are the response a server should answer with, or status None when no
    answer is possible. `headers` carries what was parsed of the message, if anything, so
    a transport can still build that answer (e.g. 505 for SIP/7.0 needs the Via).
    """

    def __init__(
        self,
        reason: str,
        status: int | None = 400,
        *,
        phrase: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # the reason phrase for the status line: a short, standard one by default
        self.phrase = phrase if phrase is not None else reason_phrase(status or 400)
        self.headers = headers


# --------------------------------------------------------------------------- header names

# RFC 3261 §7.3.3 and the IANA SIP parameters registry: compact forms.
_COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "Flow-Timer",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]

_CANON: dict[str, str] = {n.lower(): n for n in _CANONICAL_NAMES}
_CANON.update(_COMPACT)

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1, §20). Values of these
# are split into one entry each; all others (Authorization, WWW-Authenticate, Date,
# Subject, unknown headers ...) may hold unquoted commas and are kept whole.
_LIST_HEADERS = frozenset(
    n.lower()
    for n in [
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Request-Disposition",
        "Require",
        "Route",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    ]
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expanded (RFC 3261 §7.3.3)."""
    return _CANON.get(name.lower(), name)


def _fold_key(name: str) -> str:
    low = name.lower()
    canon = _CANON.get(low)
    return canon.lower() if canon is not None else low


# the lookup key of a header name, remembered for the names the code asks for
_KEYS: dict[str, str] = {}
for _name in [*_CANONICAL_NAMES, *_COMPACT, *(c.upper() for c in _COMPACT)]:
    for _spelling in (_name, _name.lower()):
        _KEYS[_spelling] = _fold_key(_spelling)
_KEYS_MAX = 4096


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = _fold_key(name)
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[name] = key
    return key


# --------------------------------------------------------------------------- lexical helpers

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = re.compile(f"[{_TOKEN_CHARS}]+")
_DISPLAY_TOKENS = re.compile(f"[{_TOKEN_CHARS} \t]*")
_WS = " \t"
_FOLD = re.compile(r"\r\n[ \t]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# a parameter value that is not a quoted-string: token / host (RFC 3261 §25.1 gen-value)
_PARAM_VALUE = re.compile(r"[^\s;,\"<>?]+")
_URI_CHARS_BAD = re.compile(r"[\x00-\x20\x7f<>\"]")


def _is_token(s: str) -> bool:
    return _TOKEN.fullmatch(s) is not None


def _read_quoted(s: str, i: int) -> tuple[str, int]:
    """Read the quoted-string starting at s[i] == '"'; return (unescaped text, end index)."""
    out: list[str] = []
    j = i + 1
    while True:
        q = s.find('"', j)
        if q < 0:
            raise ParseError("unterminated quoted string")
        b = s.find("\\", j, q)
        if b < 0:
            out.append(s[j:q])
            return "".join(out), q + 1
        out.append(s[j:b])
        if b + 1 >= len(s):
            raise ParseError("unterminated quoted string")
        # RFC 3261 §25.1 quoted-pair: the escaped character stands for itself
        out.append(s[b + 1])
        j = b + 2


def quote_string(s: str) -> str:
    """A quoted-string for `s` (RFC 3261 §25.1), escaping '"' and '\\'."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_WS_RUN = re.compile(r"[ \t]*")


def _skip_ws(s: str, i: int) -> int:
    if i < len(s) and (s[i] == " " or s[i] == "\t"):
        return _WS_RUN.match(s, i).end()  # type: ignore[union-attr]
    return i


def _split_list(value: str) -> list[str]:
    """Split a comma list, respecting quoted strings and <...> (RFC 3261 §7.3.1)."""
    if "," not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return [p.strip(_WS) for p in value.split(",")]
    parts: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_angle = False
    while i < n:
        c = value[i]
        if c == '"' and not in_angle:
            q = i + 1
            while q < n and value[q] != '"':
                q += 2 if value[q] == "\\" else 1
            i = q + 1
            continue
        if c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
    return parts


Params: TypeAlias = tuple[tuple[str, str | None], ...]


def _parse_params(s: str, i: int, what: str) -> Params:
    """Parse *(SEMI generic-param) from s[i:] to the end (RFC 3261 §25.1).

    Names are folded to lower case; quoted values are unescaped.
    """
    params: list[tuple[str, str | None]] = []
    n = len(s)
    fast = _PARAM_FAST.match
    while True:
        i = _skip_ws(s, i)
        if i >= n:
            return tuple(params)
        m = fast(s, i)
        if m is not None:
            end = m.end()
            if end >= n or s[end] != "=":
                # the common form: a name, maybe "=" and a token/host value
                params.append((m.group(1).lower(), m.group(2)))
                i = end
                continue
        # a quoted value, or something to report: step by step
        if s[i] != ";":
            raise ParseError(f"unexpected {s[i]!r} in {what}")
        i = _skip_ws(s, i + 1)
        m = _TOKEN.match(s, i)
        if m is None:
            raise ParseError(f"empty or bad parameter in {what}")
        name = m.group().lower()
        i = _skip_ws(s, m.end())
        value: str | None = None
        if i < n and s[i] == "=":
            i = _skip_ws(s, i + 1)
            if i < n and s[i] == '"':
                value, i = _read_quoted(s, i)
            else:
                m = _PARAM_VALUE.match(s, i)
                if m is None:
                    raise ParseError(f"parameter {name!r} without value in {what}")
                value = m.group()
                i = m.end()
        params.append((name, value))


# one parameter without a quoted value: what the loop in _parse_params reads, in one match
_PARAM_FAST = re.compile(rf";[ \t]*([{_TOKEN_CHARS}]+)[ \t]*(?:=[ \t]*([^\s;,\"<>?]+))?")


def _param(params: Params, name: str) -> str | None:
    for k, v in params:
        if k == name:
            return v
    return None


def _has_param(params: Params, name: str) -> bool:
    return any(k == name for k, _ in params)


def _format_params(params: Params) -> str:
    out = []
    for k, v in params:
        if v is None:
            out.append(";" + k)
        elif _PARAM_VALUE.fullmatch(v):
            out.append(f";{k}={v}")
        else:
            out.append(f";{k}={quote_string(v)}")
    return "".join(out)


def _replace_param(params: Params, name: str, value: str | None) -> Params:
    out = [(k, v) for k, v in params if k != name]
    out.append((name, value))
    return tuple(out)


def _uint(text: str, what: str, limit: int = MAX_UINT32) -> int:
    if not (text.isascii() and text.isdigit()):  # [0-9]+
        raise ParseError(f"bad {what}")
    # bound the digit count first so a huge string is never converted
    if len(text) > 9 and len(text.lstrip("0")) > len(str(limit)):
        raise ParseError(f"{what} out of range")
    value = int(text)
    if value > limit:
        raise ParseError(f"{what} out of range")
    return value


# --------------------------------------------------------------------------- URIs

# RFC 3261 §25.1: the characters allowed unescaped in each part of a SIP URI
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|%[0-9A-Fa-f]{{2}})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|%[0-9A-Fa-f]{{2}})*")
_PARAMCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|%[0-9A-Fa-f]{{2}})+")
_HEADERCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|%[0-9A-Fa-f]{{2}})*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")

_USER_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)
_PARAM_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()[]/:&+$"
)
_HEADER_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()[]/?:+$"
)
_PASSWORD_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,"
)


def _unescape(s: str) -> str:
    """%HH-decode once (RFC 3261 §19.1.2); bytes that are not UTF-8 survive as surrogates."""
    if "%" not in s:
        return s
    out = bytearray()
    for i, part in enumerate(_ESCAPE_RE.split(s)):
        if i % 2:
            out.append(int(part, 16))
        else:
            out += part.encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


def _escape(s: str, safe: frozenset[str]) -> str:
    if all(c in safe for c in s):
        return s
    out = []
    for c in s:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SipURI:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966).

    `user`, `password`, parameter names/values and header values are stored unescaped;
    scheme and host are lower-cased (case-insensitive), the user part keeps its case
    (RFC 3261 §19.1.4). For tel: URIs the number is in `user` and `host` is empty.
    """

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return _param(self.params, name.lower())

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name.lower())

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t is not None else None

    @property
    def aor(self) -> str:
        """scheme:user@host, the address-of-record form used to key registrations."""
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host}"

    def with_params(self, **values: str | None) -> SipURI:
        params = self.params
        for k, v in values.items():
            params = _replace_param(params, k.lower(), v)
        return SipURI(
            self.scheme, self.host, self.user, self.password, self.port, params, self.headers
        )

    def __str__(self) -> str:
        if self.scheme == "tel":
            out = [f"tel:{_escape(self.user or '', _PARAM_SAFE)}"]
        else:
            out = [self.scheme, ":"]
            if self.user is not None:
                out.append(_escape(self.user, _USER_SAFE))
                if self.password is not None:
                    out.append(":" + _escape(self.password, _PASSWORD_SAFE))
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out.append(f":{self.port}")
        for k, v in self.params:
            out.append(";" + _escape(k, _PARAM_SAFE))
            if v is not None:
                out.append("=" + _escape(v, _PARAM_SAFE))
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}"
                    for k, v in self.headers
                )
            )
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """A URI of any other scheme (RFC 3261 §25.1 absoluteURI), kept opaque."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI: TypeAlias = SipURI | AbsoluteURI


def _parse_host(hostport: str, text: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or _IPV6_RE.fullmatch(hostport[: end + 1]) is None:
            raise ParseError(f"bad IPv6 reference in {text!r}")
        host = hostport[: end + 1].lower()
        rest = hostport[end + 1 :]
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
        if _HOSTNAME_RE.fullmatch(host) is None:
            raise ParseError(f"bad host in {text!r}")
        host = host.lower()
    if not rest:
        return host, None
    if rest[0] != ":":
        raise ParseError(f"bad host in {text!r}")
    return host, _uint(rest[1:], "port", 65535)


# The same addresses come again and again (a user's AOR, contacts, the domain): parsed URIs
# and addresses are immutable, so recent ones are remembered. Errors are not remembered:
# a bad input raises afresh each time.
_MEMO_SIZE = 2048
_MEMO_MAX_TEXT = 512


def parse_uri(text: str) -> URI:
    """Parse a Request-URI or the URI of an address (RFC 3261 §19.1, §25.1)."""
    if len(text) <= _MEMO_MAX_TEXT:
        return _parse_uri_memo(text)
    return _parse_uri(text)


def _parse_uri(text: str) -> URI:
    m = _SCHEME.match(text)
    if m is None or m.end() >= len(text) or text[m.end()] != ":":
        raise ParseError(f"bad URI {text!r}")
    scheme = m.group().lower()
    rest = text[m.end() + 1 :]
    if _URI_CHARS_BAD.search(text):
        raise ParseError(f"bad character in URI {text!r}")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise ParseError(f"bad tel URI {text!r}")
        return SipURI("tel", "", _unescape(number), params=_uri_params(params, text))
    if scheme not in ("sip", "sips"):
        if not rest:
            raise ParseError(f"bad URI {text!r}")
        return AbsoluteURI(scheme, rest)

    # RFC 3261 §25.1: no '@' may appear unescaped except as the userinfo delimiter
    at = rest.find("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        u, colon, pw = userinfo.partition(":")
        if _USER_RE.fullmatch(u) is None or (colon and _PASSWORD_RE.fullmatch(pw) is None):
            raise ParseError(f"bad user part in {text!r}")
        user = _unescape(u)
        password = _unescape(pw) if colon else None
    rest, q, headers_text = rest.partition("?")
    hostport, _, params_text = rest.partition(";")
    host, port = _parse_host(hostport, text)
    params = _uri_params(params_text, text)
    headers: list[tuple[str, str]] = []
    if q:
        for item in headers_text.split("&"):
            k, eq, v = item.partition("=")
            if not k or not eq or _HEADERCHARS_RE.fullmatch(k + v) is None:
                raise ParseError(f"bad URI header in {text!r}")
            headers.append((_unescape(k), _unescape(v)))
    return SipURI(scheme, host, user, password, port, params, tuple(headers))


_parse_uri_memo = functools.lru_cache(maxsize=_MEMO_SIZE)(_parse_uri)


def _uri_params(text: str, whole: str) -> Params:
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        k, eq, v = item.partition("=")
        if _PARAMCHARS_RE.fullmatch(k) is None or (eq and _PARAMCHARS_RE.fullmatch(v) is None):
            raise ParseError(f"bad URI parameter in {whole!r}")
        out.append((_unescape(k).lower(), _unescape(v) if eq else None))
    return tuple(out)


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters: From, To, Contact, Route (RFC 3261 §20)."""

    uri: URI
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _param(self.params, name.lower())

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name.lower())

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return NameAddr(self.uri, self.display_name, _replace_param(self.params, name, value))

    @property
    def expires(self) -> int | None:
        """The Contact expires parameter (RFC 3261 §10.2.1.1); None if absent."""
        v = self.param("expires")
        return None if v is None else _uint(v, "expires parameter")

    @property
    def q(self) -> float | None:
        """The Contact q parameter (RFC 3261 §20.10): 0 to 1, three decimals at most."""
        v = self.param("q")
        if v is None:
            return None
        if re.fullmatch(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", v) is None:
            raise ParseError("bad q parameter")
        return float(v)

    def __str__(self) -> str:
        name = f"{quote_string(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """Parse (name-addr / addr-spec) *(SEMI param) (RFC 3261 §20.10, §20.20, §20.39)."""
    if len(text) <= _MEMO_MAX_TEXT:
        return _parse_name_addr_memo(text)
    return _parse_name_addr(text)


def _parse_name_addr(text: str) -> NameAddr:
    s = text.strip(_WS)
    display: str | None = None
    i = 0
    n = len(s)
    if s.startswith('"'):
        display, i = _read_quoted(s, 0)
        i = _skip_ws(s, i)
        if i >= n or s[i] != "<":
            raise ParseError("display name without <URI>")
    else:
        m = _DISPLAY_TOKENS.match(s)
        end = m.end() if m else 0
        if end < n and s[end] == "<":
            # RFC 4475 §3.1.1.6: no LWS is needed between a token display name and '<'
            display = s[:end].strip(_WS) or None
            i = end
    if i < n and s[i] == "<":
        gt = s.find(">", i)
        if gt < 0:
            raise ParseError("unterminated <URI>")
        uri_text = s[i + 1 : gt]
        if uri_text != uri_text.strip(_WS):
            raise ParseError("spaces inside <URI>")
        uri = parse_uri(uri_text)
        params = _parse_params(s, gt + 1, "address")
    else:
        # RFC 3261 §20: an addr-spec ends at the first ';'; a URI with ',', '?' or ';'
        # of its own must be written in <>
        semi = s.find(";")
        uri_text = s if semi < 0 else s[:semi]
        uri_text = uri_text.rstrip(_WS)
        if "?" in uri_text or "," in uri_text:
            raise ParseError("URI with headers must be enclosed in <>")
        uri = parse_uri(uri_text)
        params = _parse_params(s, len(uri_text), "address")
    return NameAddr(uri, display, params)


_parse_name_addr_memo = functools.lru_cache(maxsize=_MEMO_SIZE)(_parse_name_addr)


# --------------------------------------------------------------------------- Via


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, ...
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def maddr(self) -> str | None:
        return _param(self.params, "maddr")

    @property
    def has_rport(self) -> bool:
        """RFC 3581 §3: the client asked for the source port in `rport`."""
        return _has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        v = _param(self.params, "rport")
        return None if v is None else _uint(v, "rport", 65535)

    @property
    def ttl(self) -> int | None:
        v = _param(self.params, "ttl")
        return None if v is None else _uint(v, "ttl", 255)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_received(self, host: str, port: int | None = None) -> Via:
        """RFC 3261 §18.2.1 and RFC 3581 §4: record where the request really came from.

        `received` is added when the source address differs from sent-by (always when
        rport was requested); `rport` is filled in when the client asked for it.
        """
        params = self.params
        if self.has_rport or host != self.host:
            params = _replace_param(params, "received", host)
        if self.has_rport and port is not None:
            params = tuple((k, str(port) if k == "rport" else v) for k, v in params)
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{_format_params(self.params)}"


# the usual via-parm, "SIP/2.0/UDP host:port;...", with nothing to unfold or normalise
_VIA_FAST = re.compile(r"SIP/2\.0/([A-Za-z0-9]+) ([A-Za-z0-9.\-]+(?::[0-9]+)?)(?=;|\Z)")


def parse_via(text: str) -> Via:
    """Parse one via-parm: sent-protocol LWS sent-by *(SEMI via-params) (RFC 3261 §20.42)."""
    m = _VIA_FAST.match(text)
    if m is not None:
        hostport = m.group(2)
        host, port = _parse_host(hostport, hostport)
        return _checked_via(
            m.group(1).upper(), host, port, _parse_params(text, m.end(), "Via"), SIP_VERSION
        )
    parts = text.split("/", 2)
    if len(parts) != 3:
        raise ParseError("bad Via")
    name = parts[0].strip(_WS)
    version = parts[1].strip(_WS)
    rest = parts[2].lstrip(_WS)
    m = _TOKEN.match(rest)
    if not _is_token(name) or not _is_token(version) or m is None:
        raise ParseError("bad Via protocol")
    transport = m.group().upper()
    i = m.end()
    if i >= len(rest) or rest[i] not in _WS:
        raise ParseError("bad Via sent-by")
    i = _skip_ws(rest, i)
    semi = rest.find(";", i)
    end = len(rest) if semi < 0 else semi
    sent_by = rest[i:end].rstrip(_WS)
    # LWS is allowed around the ':' of sent-by (RFC 3261 §25.1 COLON)
    if sent_by.startswith("["):
        close = sent_by.find("]") + 1
        hostport = sent_by[:close] + "".join(sent_by[close:].split())
    else:
        h, colon, p = sent_by.partition(":")
        hostport = h.rstrip(_WS) + colon + p.lstrip(_WS)
    host, port = _parse_host(hostport, sent_by)
    params = _parse_params(rest, end, "Via")
    return _checked_via(transport, host, port, params, f"{name.upper()}/{version}")


def _checked_via(transport: str, host: str, port: int | None, params: Params, protocol: str) -> Via:
    if _param(params, "branch") == "" or any(
        v is None and k in ("branch", "received", "maddr", "ttl") for k, v in params
    ):
        raise ParseError("Via parameter without value")
    via = Via(transport, host, port, params, protocol)
    # range checks of the numeric parameters (RFC 3261 §20.42, RFC 3581)
    via.ttl  # noqa: B018
    via.rport  # noqa: B018
    return via


# --------------------------------------------------------------------------- CSeq, auth


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def _parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not _is_token(parts[1]):
        raise ParseError("bad CSeq")
    # RFC 3261 §8.1.1.5: the sequence number is a 32-bit unsigned integer
    return CSeq(_uint(parts[0], "CSeq number"), parts[1])


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """Authorization / WWW-Authenticate and their Proxy- forms (RFC 3261 §20.7, §20.44).

    `params` has lower-case names and unescaped values; `quoted` lists the names whose
    value was (or is to be) sent as a quoted-string.
    """

    scheme: str
    params: dict[str, str] = field(hash=False)
    quoted: frozenset[str] = frozenset()

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())

    def __str__(self) -> str:
        items = []
        for k, v in self.params.items():
            items.append(f"{k}={quote_string(v)}" if k in self.quoted else f"{k}={v}")
        return f"{self.scheme} " + ", ".join(items)


# one auth-param and the separator after it; the alternatives never overlap, so no backtracking
_AUTH_PARAM = re.compile(
    rf"[ \t]*([{_TOKEN_CHARS}]+)[ \t]*=[ \t]*"
    rf'(?:"((?:[^"\\]|\\.)*)"|([{_TOKEN_CHARS}]+))[ \t]*(,|$)',
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def parse_auth(text: str) -> AuthHeader:
    """Parse `scheme auth-param *(COMMA auth-param)` (RFC 3261 §25.1, RFC 7616 §3.3/§3.4)."""
    s = text.strip(_WS)
    m = _TOKEN.match(s)
    if m is None:
        raise ParseError("bad authentication header")
    scheme = m.group()
    i = m.end()
    n = len(s)
    params: dict[str, str] = {}
    quoted: set[str] = set()
    if i < n and s[i] not in _WS:
        raise ParseError("bad authentication scheme")
    while i < n:
        pm = _AUTH_PARAM.match(s, i)
        if pm is None:
            raise ParseError("bad authentication parameter")
        name, qvalue, tvalue, sep = pm.groups()
        name = name.lower()
        if qvalue is not None:
            value = _QUOTED_PAIR.sub(r"\1", qvalue) if "\\" in qvalue else qvalue
            quoted.add(name)
        else:
            value = tvalue
        if name in params:
            raise ParseError(f"duplicate authentication parameter {name!r}")
        params[name] = value
        i = pm.end()
        if sep == "," and i >= n:
            raise ParseError("trailing comma in authentication header")
    return AuthHeader(scheme, params, frozenset(quoted))


# --------------------------------------------------------------------------- headers


class Headers:
    """Ordered multi-map of header fields with case-insensitive names.

    Names are stored in canonical spelling (compact forms expanded); each value of a
    comma-list header is its own entry. Parsed structured values are cached here; a change
    to a header drops the cached values built from that header (see `cached`).
    """

    __slots__ = ("_cache", "_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] | None = None
        self._cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._index = None
        h._cache = {}
        return h

    def _changed(self, key: str) -> None:
        """Header `key` (folded name) changed: the index and what was parsed from it go."""
        self._index = None
        cache = self._cache
        if cache:
            for k in [k for k in cache if _cache_dependency(k) == key]:
                del cache[k]

    def _idx(self) -> dict[str, list[str]]:
        idx = self._index
        if idx is None:
            idx = {}
            for name, value in self._items:
                idx.setdefault(name.lower(), []).append(value)
            self._index = idx
        return idx

    def get(self, name: str, default: str | None = None) -> str | None:
        idx = self._index
        if idx is None:
            idx = self._idx()
        values = idx.get(_KEYS.get(name) or _key(name))
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._idx().get(_key(name), ()))

    def _values(self, name: str) -> list[str] | tuple[()]:
        """The values of `name`, not copied: for reading only."""
        idx = self._index
        if idx is None:
            idx = self._idx()
        return idx.get(_KEYS.get(name) or _key(name), ())

    def count(self, name: str) -> int:
        return len(self._idx().get(_key(name), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._idx()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [(n.lower(), v) for n, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def add(self, name: str, value: str) -> None:
        """Append a field; a value with CR or LF is refused (header injection)."""
        value = str(value)
        if "\r" in value or "\n" in value or not _is_token(name):
            raise ValueError(f"bad header field {name!r}")
        self._items.append((canonical_name(name), value))
        self._changed(_key(name))

    def insert(self, index: int, name: str, value: str) -> None:
        value = str(value)
        if "\r" in value or "\n" in value or not _is_token(name):
            raise ValueError(f"bad header field {name!r}")
        self._items.insert(index, (canonical_name(name), value))
        self._changed(_key(name))

    def set(self, name: str, value: str) -> None:
        """Replace every field called `name` by one, where the first one was (or at the end)."""
        key = _key(name)
        positions = [i for i, (n, _) in enumerate(self._items) if n.lower() == key]
        self.remove(name)
        at = positions[0] if positions else len(self._items)
        self.insert(at, name, value)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first field called `name` in place (e.g. the top Via, RFC 3261 §18.2.1)."""
        value = str(value)
        if "\r" in value or "\n" in value:
            raise ValueError(f"bad header field {name!r}")
        key = _key(name)
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (n, value)
                idx = self._index
                self._changed(key)
                if idx is not None:
                    # the first value of `key` is the one replaced; the rest stay as they are
                    idx[key][0] = value
                    self._index = idx
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [(n, v) for n, v in self._items if n.lower() != key]
        self._changed(key)

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def cached(self, key: str, build: Any) -> Any:
        """`build()`, remembered under `key` until the header it was built from changes.

        `key` names that header: its folded name ("cseq", "contact"), optionally after a
        prefix and ':' ("auth:authorization"); "top-via" is built from Via.
        """
        cache = self._cache
        if key in cache:
            return cache[key]
        value = build()
        cache[key] = value
        return value

    def single(self, name: str) -> str | None:
        """The one value of a header that must not repeat (RFC 3261 §7.3.1)."""
        idx = self._index
        if idx is None:
            idx = self._idx()
        values = idx.get(_KEYS.get(name) or _key(name))
        if not values:
            return None
        if len(values) > 1:
            raise ParseError(f"multiple {canonical_name(name)} header fields")
        return values[0]


_UNSET: Any = object()  # not in the cache (None is a value there)


def _cache_dependency(cache_key: str) -> str:
    """The folded header name a `Headers.cached` value was built from."""
    if cache_key == "top-via":
        return "via"
    return cache_key.rpartition(":")[2]


# --------------------------------------------------------------------------- messages


class Message:
    """Accessors shared by Request and Response; structured values parsed on first use."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        v = self.headers.single(name)
        if v is None:
            raise ParseError(f"missing {name} header")
        return v

    # Each accessor looks in the cache first, so a value already parsed costs one lookup.

    @property
    def call_id(self) -> str:
        v = self.headers._cache.get("call-id", _UNSET)
        if v is _UNSET:
            v = self.headers.cached("call-id", lambda: self._required("Call-ID"))
        return v  # type: ignore[no-any-return]

    @property
    def cseq(self) -> CSeq:
        v = self.headers._cache.get("cseq", _UNSET)
        if v is _UNSET:
            v = self.headers.cached("cseq", lambda: _parse_cseq(self._required("CSeq")))
        return v  # type: ignore[no-any-return]

    @property
    def vias(self) -> tuple[Via, ...]:
        return self.headers.cached(
            "via", lambda: tuple(parse_via(v) for v in self.headers._values("Via"))
        )

    @property
    def top_via(self) -> Via:
        v = self.headers._cache.get("top-via", _UNSET)
        if v is not _UNSET:
            return v  # type: ignore[no-any-return]

        def build() -> Via:
            first = self.headers.get("Via")
            if first is None:
                raise ParseError("missing Via header")
            return parse_via(first)

        return self.headers.cached("top-via", build)

    def replace_top_via(self, via: Via) -> None:
        """Put `via` in place of the top Via (RFC 3261 §18.2.1: received/rport marked).

        `via` is kept as the parsed top Via: a Via's text parses back to an equal Via.
        """
        self.headers.replace_first("Via", str(via))
        self.headers._cache["top-via"] = via

    @property
    def from_(self) -> NameAddr:
        v = self.headers._cache.get("from", _UNSET)
        if v is _UNSET:
            v = self.headers.cached("from", lambda: parse_name_addr(self._required("From")))
        return v  # type: ignore[no-any-return]

    @property
    def to(self) -> NameAddr:
        v = self.headers._cache.get("to", _UNSET)
        if v is _UNSET:
            v = self.headers.cached("to", lambda: parse_name_addr(self._required("To")))
        return v  # type: ignore[no-any-return]

    @property
    def contact_is_star(self) -> bool:
        """`Contact: *` (RFC 3261 §10.2.2), allowed only alone."""
        values = self.headers._values("Contact")
        if "*" not in values:
            return False
        if len(values) != 1:
            raise ParseError("Contact '*' mixed with addresses")
        return True

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        v = self.headers._cache.get("contact", _UNSET)
        if v is not _UNSET:
            return v  # type: ignore[no-any-return]

        def build() -> tuple[NameAddr, ...]:
            if self.contact_is_star:
                return ()
            return tuple(parse_name_addr(v) for v in self.headers._values("Contact"))

        return self.headers.cached("contact", build)

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        return self.headers.cached(
            "route", lambda: tuple(parse_name_addr(v) for v in self.headers._values("Route"))
        )

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return self.headers.cached(
            "record-route",
            lambda: tuple(parse_name_addr(v) for v in self.headers._values("Record-Route")),
        )

    def _uint_header(self, name: str, limit: int = MAX_UINT32) -> int | None:
        key = name.lower()
        v = self.headers._cache.get(key, _UNSET)
        if v is not _UNSET:
            return v  # type: ignore[no-any-return]

        def build() -> int | None:
            v = self.headers.single(name)
            return None if v is None else _uint(v, name, limit)

        return self.headers.cached(key, build)  # type: ignore[no-any-return]

    @property
    def max_forwards(self) -> int | None:
        return self._uint_header("Max-Forwards", 255)  # RFC 3261 §20.22: 0-255

    @property
    def expires(self) -> int | None:
        return self._uint_header("Expires")

    @property
    def min_expires(self) -> int | None:
        return self._uint_header("Min-Expires")

    @property
    def content_length(self) -> int | None:
        return self._uint_header("Content-Length")

    @property
    def content_type(self) -> str | None:
        """The media type, lower case, without parameters."""
        v = self.headers.get("Content-Type")
        return None if v is None else v.split(";", 1)[0].strip(_WS).lower()

    @property
    def date(self) -> datetime:
        """The Date header (RFC 3261 §20.17: rfc1123-date, and the zone must be GMT)."""
        v = self._required("Date")
        if not v.rstrip(_WS).endswith(" GMT"):
            raise ParseError("Date must be in GMT")
        try:
            return parsedate_to_datetime(v)
        except (TypeError, ValueError) as exc:
            raise ParseError("bad Date") from exc

    def auth_headers(self, name: str) -> tuple[AuthHeader, ...]:
        """Parsed Authorization / Proxy-Authorization / WWW-Authenticate fields."""
        return self.headers.cached(
            "auth:" + _key(name),
            lambda: tuple(parse_auth(v) for v in self.headers._values(name)),
        )

    def tokens(self, name: str) -> list[str]:
        """Values of a token-list header (Supported, Require, Allow ...), empty ones dropped."""
        return [v for v in self.headers._values(name) if v]


@dataclass(eq=False, slots=True)
class Request(Message):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _ruri: URI | None = field(default=None, init=False, repr=False)

    @property
    def ruri(self) -> URI:
        """The parsed Request-URI."""
        if self._ruri is None:
            self._ruri = parse_uri(self.uri)
        return self._ruri

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    def validate(self) -> None:
        """The checks a server makes before handling a request (RFC 3261 §8.2, §16.3).

        Raises ParseError with the response status to send: 400 for missing or broken
        mandatory headers, 501 for an unknown method whose CSeq does not match (RFC 4475
        §3.1.2.18), 416 for an unsupported Request-URI scheme (§8.2.2.1).
        """
        try:
            cseq = self.cseq
            if cseq.method != self.method:
                if self.method not in KNOWN_METHODS:
                    raise ParseError("Not Implemented", 501)
                raise ParseError("CSeq method does not match the request")
            for name in ("Call-ID", "From", "To"):
                self._required(name)
            if not self.headers._values("Via"):
                raise ParseError("missing Via header")
            self.top_via  # noqa: B018
            self.from_  # noqa: B018
            self.to  # noqa: B018
            self.max_forwards  # noqa: B018
            ruri = self.ruri
            if isinstance(ruri, AbsoluteURI):
                raise ParseError("Unsupported URI Scheme", 416)
            if isinstance(ruri, SipURI) and ruri.headers:
                # RFC 3261 §19.1.1: headers are not allowed in a Request-URI
                raise ParseError("headers in Request-URI")
            if self.method == "REGISTER" or self.headers.get("Contact") is not None:
                self.contacts  # noqa: B018
        except ParseError as exc:
            if exc.headers is None:
                exc.headers = self.headers
            raise


@dataclass(eq=False, slots=True)
class Response(Message):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    def validate(self) -> None:
        """RFC 3261 §18.1.2 / §8.1.3.3: responses failing these are dropped (status None)."""
        try:
            self.cseq  # noqa: B018
            self.top_via  # noqa: B018
            for name in ("Call-ID", "From", "To"):
                self._required(name)
            self.from_  # noqa: B018
            self.to  # noqa: B018
        except ParseError as exc:
            raise ParseError(exc.reason, None, headers=self.headers) from exc


# --------------------------------------------------------------------------- parsing

_HEADER_FIELD_LIMIT = 1000  # fields in one message; far beyond any real one


def parse_head(head: bytes) -> tuple[str, Headers]:
    """Parse a header section (start line through the last header line, no blank line).

    Returns the start line and the headers. Raises ParseError (status 400) when the
    structure itself is broken: then even the framing of the message cannot be trusted.
    """
    text = head.decode("utf-8", "surrogateescape")
    if "\r\n " in text or "\r\n\t" in text:
        # RFC 3261 §7.3.1: a folded line continues the header value; LWS counts as one SP
        text = _FOLD.sub(" ", text)
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        raise ParseError("bare CR or LF in header section")
    lines = text.split("\r\n")
    start = lines[0]
    if len(lines) > _HEADER_FIELD_LIMIT:
        raise ParseError("too many header fields", 513, phrase="Message Too Large")
    items: list[tuple[str, str]] = []
    append = items.append
    names = _HEAD_NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError("header line without ':'")
        known = names.get(name)
        if known is None:
            known = _head_name(name)
        cname, is_list = known
        value = value.strip(_WS)
        if is_list and "," in value:
            for part in _split_list(value):
                append((cname, part))
        else:
            append((cname, value))
    return start, Headers._trusted(items)


# header names as written on the wire -> (canonical name, is a comma-list header)
_HEAD_NAMES: dict[str, tuple[str, bool]] = {}
_HEAD_NAMES_MAX = 4096


def _head_name(raw: str) -> tuple[str, bool]:
    """Canonical spelling of a header name from a header line; ParseError if it is bad."""
    name = raw.rstrip(_WS)
    cname = _CANON.get(name.lower())
    if cname is None:
        if not _is_token(name):
            raise ParseError("bad header name")
        cname = name
    known = (cname, cname.lower() in _LIST_HEADERS)
    if len(_HEAD_NAMES) < _HEAD_NAMES_MAX:
        _HEAD_NAMES[raw] = known
    return known


_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?", re.IGNORECASE)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)


def build_message(start: str, headers: Headers, body: bytes) -> Request | Response:
    """Make a Request or Response from a parsed start line (RFC 3261 §7.1, §7.2)."""
    if start[:4].upper() == "SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        m = _STATUS_RE.fullmatch(start)
        if m is None:
            raise ParseError("bad status line", None, headers=headers)
        # RFC 4475 §3.1.1.13: the SP before an empty reason phrase may be missing
        return Response(int(m.group(1)), m.group(2) or "", headers, body)
    # Request-Line = Method SP Request-URI SP SIP-Version; exactly one SP between them
    # (RFC 4475 §3.1.2.8-10 show the LWS variants that are rejected here)
    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError("bad request line", headers=headers)
    method, uri, version = parts
    if not _is_token(method):
        raise ParseError("bad method", headers=headers)
    if version.upper() != SIP_VERSION:
        if _VERSION_RE.fullmatch(version):
            raise ParseError("Version Not Supported", 505, headers=headers)
        raise ParseError("bad request line", headers=headers)
    m = _SCHEME.match(uri)
    if m is None or m.end() >= len(uri) or uri[m.end()] != ":" or _URI_CHARS_BAD.search(uri):
        raise ParseError("bad Request-URI", headers=headers)
    return Request(method, uri, headers, body)


def parse_message(data: bytes) -> Request | Response:
    """Parse one complete message whose body is exactly what follows the blank line.

    The Content-Length header, if present, must match. For datagrams use
    `framing.parse_datagram` (which applies RFC 3261 §18.3), for streams `StreamFramer`.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no end of header section")
    start, headers = parse_head(data[:end])
    body = data[end + 4 :]
    msg = build_message(start, headers, body)
    length = msg.content_length
    if length is not None and length != len(body):
        raise ParseError("Content-Length does not match the body")
    return msg


# --------------------------------------------------------------------------- building


def serialize(msg: Request | Response) -> bytes:
    """The wire form: canonical header names, one field per line, Content-Length right."""
    if isinstance(msg, Request):
        lines = [f"{msg.method} {msg.uri} {msg.version}"]
    else:
        lines = [f"{msg.version} {msg.status} {msg.reason}"]
    length = str(len(msg.body))
    wrote_length = False
    for name, value in msg.headers:
        if name == "Content-Length":
            if wrote_length:
                continue
            value = length
            wrote_length = True
        lines.append(f"{name}: {value}")
    if not wrote_length:
        lines.append(f"Content-Length: {length}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + msg.body


_REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 reason phrase for a status code."""
    return _REASONS.get(status, "Unknown")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` per RFC 3261 §8.2.6.2.

    Via, From, Call-ID and CSeq are copied; To is copied and gets `to_tag` when it has no
    tag yet (never on 100 Trying, §8.2.6.1). Works on a request that failed validation
    as far as the headers it has allow.
    """
    items: list[tuple[str, str]] = []
    append = items.append
    idx = request.headers._idx()
    for name, key in _COPIED_TO_RESPONSE:
        values = idx.get(key)
        if not values:
            continue
        if key == "to" and to_tag is not None and status > 100:
            try:
                tagged = request.to.tag is None
            except ParseError:
                tagged = False
            if tagged:
                values = [f"{value};tag={to_tag}" for value in values]
        for value in values:
            append((name, value))
    if status == 100:
        # RFC 3261 §8.2.6.1: a 100 Trying copies the Timestamp
        for value in idx.get("timestamp", ()):
            append(("Timestamp", value))
    for name, value in headers:
        value = str(value)
        if "\r" in value or "\n" in value or not _is_token(name):
            raise ValueError(f"bad header field {name!r}")
        append((canonical_name(name), value))
    h = Headers._trusted(items)
    return Response(status, reason if reason is not None else reason_phrase(status), h, body)


_COPIED_TO_RESPONSE = (
    ("Via", "via"),
    ("From", "from"),
    ("To", "to"),
    ("Call-ID", "call-id"),
    ("CSeq", "cseq"),
)
