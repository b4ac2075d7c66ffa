"""Sans-I/O XMPP XML stream layer: bytes in, stream events out; stanza trees out, bytes back.

`StreamParser` turns the raw bytes of one XMPP stream (RFC 6120 §4) into `StreamOpened`,
`StanzaReceived` and `StreamClosed` events and enforces the restricted XML profile
(RFC 6120 §11.1) and our size limits before any stanza-level code sees the data. Violations
raise `StreamError` carrying the RFC 6120 §4.9.3 condition to send back.

`serialize`, `stream_header` and `stream_error` produce the outgoing bytes. No sockets, no
Twisted: the protocol shell feeds `StreamParser` and writes what these functions return.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TypeAlias
from xml.parsers import expat

__all__ = [
    "MAX_DEPTH",
    "MAX_STANZA_BYTES",
    "NS_CLIENT",
    "NS_SERVER",
    "NS_STANZAS",
    "NS_STREAMS",
    "NS_STREAM_ERRORS",
    "NS_XML",
    "STREAM_CLOSE",
    "STREAM_ERROR_CONDITIONS",
    "StanzaReceived",
    "StreamClosed",
    "StreamError",
    "StreamEvent",
    "StreamOpened",
    "StreamParser",
    "make",
    "serialize",
    "stream_error",
    "stream_header",
]

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_XML = "http://www.w3.org/XML/1998/namespace"
_NS_XMLNS = "http://www.w3.org/2000/xmlns/"

MAX_STANZA_BYTES = 262_144
MAX_DEPTH = 64

STREAM_CLOSE = b"</stream:stream>"

# RFC 6120 §4.9.3: the complete list of defined stream error conditions.
STREAM_ERROR_CONDITIONS = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)

_STREAM_TAG = "{" + NS_STREAMS + "}stream"
# Attribute name as expat reports it with "}" as namespace separator.
_EXPAT_XML_LANG = NS_XML + "}lang"
# XML 1.0 §2.3 S production; str.strip() would also eat non-XML (Unicode) spaces.
_XML_WHITESPACE = " \t\r\n"
# Feed expat at most this much at a time so the size limit fires before a huge chunk is buffered.
_PIECE_BYTES = 16_384


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's stream header (RFC 6120 §4.7).

    `attrs` uses plain names ('to', 'from', 'id', 'version', 'xml:lang'); any other
    namespaced attribute keeps its Clark name. `default_ns` is the content namespace the
    header declared (normally 'jabber:client'), or None if it declared none.
    """

    attrs: dict[str, str]
    default_ns: str | None = None


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """A complete top-level child of <stream:stream> (stanza, <starttls/>, <auth/>, ...)."""

    element: ET.Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent </stream:stream> (RFC 6120 §4.4)."""


StreamEvent: TypeAlias = StreamOpened | StanzaReceived | StreamClosed


class StreamError(Exception):
    """A stream-level violation; `condition` is the RFC 6120 §4.9.3 condition to send."""

    condition: str
    text: str

    def __init__(self, condition: str, text: str = "") -> None:
        _check_condition(condition)
        super().__init__(condition, text)
        self.condition = condition
        self.text = text

    def __str__(self) -> str:
        return f"{self.condition}: {self.text}" if self.text else self.condition


def _check_condition(condition: str) -> None:
    if condition not in STREAM_ERROR_CONDITIONS:
        raise ValueError(f"not an RFC 6120 stream error condition: {condition!r}")


# --------------------------------------------------------------------------- parsing


def _expat_code(name: str) -> int | None:
    message = getattr(expat.errors, name, None)
    return None if message is None else expat.errors.codes[message]


def _expat_codes(*names: str) -> frozenset[int]:
    return frozenset(code for name in names if (code := _expat_code(name)) is not None)


# RFC 6120 §11.1: only the five predefined entities and character references are allowed.
_RESTRICTED_CODES = _expat_codes(
    "XML_ERROR_UNDEFINED_ENTITY",
    "XML_ERROR_RECURSIVE_ENTITY_REF",
    "XML_ERROR_ASYNC_ENTITY",
    "XML_ERROR_BINARY_ENTITY_REF",
    "XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF",
    "XML_ERROR_EXTERNAL_ENTITY_HANDLING",
    "XML_ERROR_ENTITY_DECLARED_IN_PE",
    "XML_ERROR_NOT_STANDALONE",
    "XML_ERROR_AMPLIFICATION_LIMIT_BREACH",
)
# RFC 6120 §11.6: UTF-8 only.
_ENCODING_CODES = _expat_codes("XML_ERROR_UNKNOWN_ENCODING", "XML_ERROR_INCORRECT_ENCODING")

# Handlers that can only fire for DTD content, which RFC 6120 §11.1 forbids outright.
_DTD_HANDLERS = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "NotationDeclHandler",
    "ElementDeclHandler",
    "AttlistDeclHandler",
    "ExternalEntityRefHandler",
    "SkippedEntityHandler",
)
_ALL_HANDLERS = (
    *_DTD_HANDLERS,
    "XmlDeclHandler",
    "StartElementHandler",
    "EndElementHandler",
    "CharacterDataHandler",
    "StartNamespaceDeclHandler",
    "CommentHandler",
    "ProcessingInstructionHandler",
)


def _clark(name: str) -> str:
    # expat reports "uri}local" (namespace_separator="}"); ElementTree wants "{uri}local".
    return "{" + name if "}" in name else name


def _clark_attrs(attrs: dict[str, str]) -> dict[str, str]:
    for key in attrs:
        if "}" in key:
            return {("{" + k if "}" in k else k): v for k, v in attrs.items()}
    return attrs


class StreamParser:
    """Incremental parser for one direction of one XMPP stream.

    Feed it bytes as they arrive; it returns the events completed by those bytes. The first
    violation raises `StreamError` (events parsed earlier in that same call are dropped); the
    parser is then dead and raises an equal error on every later feed until `reset()`.

    Handle the returned events in order. When one of them restarts the stream (<starttls/>,
    or <auth/> that ends in SASL success), call `reset()` and drop the rest of that batch:
    the peer sent those bytes before the restart, so they belong to no stream (RFC 6120
    §5.3.2, §6.3.2; for STARTTLS they are untrusted plaintext).
    """

    __slots__ = (
        "_default_ns",
        "_error",
        "_events",
        "_fed",
        "_last",
        "_mark",
        "_max_bytes",
        "_max_depth",
        "_opened",
        "_parser",
        "_sniff",
        "_stack",
        "_tail",
        "_text",
    )

    def __init__(
        self, max_stanza_bytes: int = MAX_STANZA_BYTES, max_depth: int = MAX_DEPTH
    ) -> None:
        if max_stanza_bytes < 1 or max_depth < 1:
            raise ValueError("max_stanza_bytes and max_depth must be positive")
        self._max_bytes = max_stanza_bytes
        self._max_depth = max_depth
        self._parser: expat.XMLParserType | None = None
        self._start_stream()

    def _start_stream(self) -> None:
        parser = expat.ParserCreate("UTF-8", "}")
        parser.buffer_text = True
        # RFC 6120 §11.1: no external or parameter entities, ever.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        if hasattr(parser, "SetReparseDeferralEnabled"):
            # Deferral (expat >= 2.6) would hold back a stanza that is already complete;
            # the stanza size limit already bounds the cost of re-scanning partial tokens.
            parser.SetReparseDeferralEnabled(False)
        for name in _DTD_HANDLERS:
            setattr(parser, name, self._on_dtd)
        parser.CommentHandler = self._on_comment
        parser.ProcessingInstructionHandler = self._on_pi
        parser.XmlDeclHandler = self._on_xml_decl
        parser.StartNamespaceDeclHandler = self._on_namespace_decl
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        parser.CharacterDataHandler = self._on_text
        self._parser = parser
        self._error: StreamError | None = None
        self._events: list[StreamEvent] = []
        self._stack: list[ET.Element] = []  # open elements of the current stanza
        self._text: list[str] = []  # text pieces not yet attached to _last
        self._last: ET.Element | None = None
        self._tail = False  # pending text belongs to _last.tail, not _last.text
        self._opened = False
        self._default_ns: str | None = None
        self._fed = 0  # bytes handed to expat on this stream
        self._mark = 0  # offset where the current stanza (or gap between stanzas) began
        self._sniff = b""  # first bytes, held back until the encoding check can run

    def _discard_parser(self) -> None:
        # Break the parser <-> handler cycle so expat's buffers are freed now, not at GC time.
        parser = self._parser
        if parser is not None:
            for name in _ALL_HANDLERS:
                setattr(parser, name, None)
            self._parser = None
        self._stack = []
        self._text = []
        self._last = None
        self._events = []

    def reset(self) -> None:
        """Start a new stream on the same connection (RFC 6120 §5.4.3.3, §6.4.6)."""
        self._discard_parser()
        self._start_stream()

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Parse more bytes; return the events they complete, in order."""
        if self._error is not None:
            # A fresh copy: re-raising the stored one would pin this call's frames (and data).
            raise StreamError(self._error.condition, self._error.text)
        try:
            if self._fed == 0:
                data = self._check_encoding(data)
            if data:
                self._parse(data)
        except StreamError as exc:
            self._die(exc)
            raise
        except expat.ExpatError as exc:
            err = StreamError(_condition_for(exc.code), str(exc))
            self._die(err)
            raise err from None
        events = self._events
        self._events = []
        return events

    def _die(self, err: StreamError) -> None:
        # Keep only condition and text: the traceback would pin expat and the fed bytes.
        self._error = StreamError(err.condition, err.text)
        self._discard_parser()

    def _check_encoding(self, data: bytes) -> bytes:
        # RFC 6120 §11.6: UTF-8 only. Expat honours a UTF-16 byte order mark even when told
        # the input is UTF-8, so catch UTF-16/32 (BOM or NUL in the first two bytes) here.
        head = (self._sniff + bytes(data[:2]))[:2]
        if len(head) < 2:
            self._sniff = head
            return b""
        if head in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in head:
            raise StreamError("unsupported-encoding", "stream is not UTF-8")
        if self._sniff:
            data = self._sniff + bytes(data)
            self._sniff = b""
        return data

    def _parse(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None  # only a dead parser has none, and feed() stops those
        size = len(data)
        if size <= _PIECE_BYTES:
            self._fed += size
            parser.Parse(data, False)
            self._check_size()
            return
        view = memoryview(data)
        for start in range(0, size, _PIECE_BYTES):
            piece = view[start : start + _PIECE_BYTES]
            self._fed += len(piece)
            parser.Parse(piece, False)
            self._check_size()

    def _check_size(self) -> None:
        # Bytes since the open stanza started (or since the last stanza ended): this also
        # catches one giant start tag, which expat buffers without firing any handler.
        if self._fed - self._mark > self._max_bytes:
            raise StreamError("policy-violation", f"stanza larger than {self._max_bytes} bytes")

    def _position(self) -> int:
        parser = self._parser
        assert parser is not None
        return parser.CurrentByteIndex

    # --- expat handlers; raising StreamError here aborts Parse() and reaches feed()

    def _on_dtd(self, *_args: object) -> None:
        # Fires at the DOCTYPE itself, before any entity in an internal subset is declared.
        raise StreamError("restricted-xml", "DTDs are not allowed (RFC 6120 §11.1)")

    def _on_comment(self, _data: str) -> None:
        raise StreamError("restricted-xml", "comments are not allowed (RFC 6120 §11.1)")

    def _on_pi(self, _target: str, _data: str) -> None:
        raise StreamError(
            "restricted-xml", "processing instructions are not allowed (RFC 6120 §11.1)"
        )

    def _on_xml_decl(self, _version: str, encoding: str | None, _standalone: int) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            raise StreamError("unsupported-encoding", f"encoding {encoding!r} is not UTF-8")

    def _on_namespace_decl(self, prefix: str | None, uri: str | None) -> None:
        # Only installed until the stream header is parsed: we need the default namespace.
        if prefix is None:
            self._default_ns = uri or None

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        stack = self._stack
        if stack:
            if len(stack) >= self._max_depth:
                raise StreamError(
                    "policy-violation", f"elements nested deeper than {self._max_depth}"
                )
            if self._text:
                self._flush_text()
            el = ET.SubElement(stack[-1], _clark(name), _clark_attrs(attrs) if attrs else {})
        elif self._opened:
            self._mark = self._position()
            el = ET.Element(_clark(name), _clark_attrs(attrs) if attrs else {})
        else:
            self._open_stream(name, attrs)
            return
        stack.append(el)
        self._last = el
        self._tail = False

    def _open_stream(self, name: str, attrs: dict[str, str]) -> None:
        parser = self._parser
        assert parser is not None
        # RFC 6120 §4.8.1: the root must be <stream> in the streams namespace.
        if _clark(name) != _STREAM_TAG:
            raise StreamError("invalid-namespace", f"root element {_clark(name)!r} is not a stream")
        # RFC 6120 §4.8.5: <stream> must carry a prefix; it is unprefixed if the streams
        # namespace is the default (content) namespace.
        if self._default_ns == NS_STREAMS:
            raise StreamError("bad-namespace-prefix", "stream element must use a prefix")
        plain: dict[str, str] = {}
        for key, value in attrs.items():
            if key == _EXPAT_XML_LANG:
                plain["xml:lang"] = value
            else:
                plain[_clark(key)] = value
        self._opened = True
        self._mark = parser.CurrentByteIndex
        parser.StartNamespaceDeclHandler = None
        self._events.append(StreamOpened(plain, self._default_ns))

    def _on_end(self, _name: str) -> None:
        stack = self._stack
        if not stack:
            # RFC 6120 §4.4: </stream:stream> closes the stream.
            self._events.append(StreamClosed())
            return
        if self._text:
            self._flush_text()
        el = stack.pop()
        if stack:
            self._last = el
            self._tail = True
            return
        position = self._position()
        if position - self._mark > self._max_bytes:
            raise StreamError("policy-violation", f"stanza larger than {self._max_bytes} bytes")
        self._mark = position
        self._last = None
        self._events.append(StanzaReceived(el))

    def _on_text(self, data: str) -> None:
        if self._stack:
            self._text.append(data)
        elif data.strip(_XML_WHITESPACE):
            # RFC 6120 §4.6.1: between stanzas only whitespace (keepalives) is allowed.
            raise StreamError("not-well-formed", "text outside of a stanza")
        else:
            self._mark = self._position()

    def _flush_text(self) -> None:
        text = self._text[0] if len(self._text) == 1 else "".join(self._text)
        self._text.clear()
        last = self._last
        assert last is not None
        if self._tail:
            last.tail = text
        else:
            last.text = text


def _condition_for(code: int) -> str:
    if code in _RESTRICTED_CODES:
        return "restricted-xml"
    if code in _ENCODING_CODES:
        return "unsupported-encoding"
    return "not-well-formed"


# --------------------------------------------------------------------------- serializing

# XML 1.0 §2.2 Char: everything else (C0 controls, lone surrogates, U+FFFE/U+FFFF) is dropped.
_ILLEGAL_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape_text(text: str) -> str:
    text = _ILLEGAL_XML_CHARS.sub("", text)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        # XML 1.0 §2.11 would turn a literal CR into LF on the receiving side.
        text = text.replace("\r", "&#13;")
    return text


def _escape_attr(value: str) -> str:
    value = _escape_text(value)
    if "'" in value:
        value = value.replace("'", "&apos;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value:
        # XML 1.0 §3.3.3 attribute value normalization would turn these into spaces.
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#9;")
    return value


def _split_tag(tag: str) -> tuple[str, str]:
    if tag[:1] == "{":
        # Local names cannot contain "}", namespace names can: split at the last one.
        ns, _, local = tag[1:].rpartition("}")
    else:
        ns, local = "", tag
    if not local or ":" in local:
        raise ValueError(f"cannot serialize element name {tag!r}; use Clark notation")
    return ns, local


def _write(parts: list[str], el: ET.Element, parent_ns: str, prefixes: dict[str, str]) -> None:
    ns, local = _split_tag(el.tag)
    parts.append("<" + local)
    if ns != parent_ns:
        parts.append(" xmlns='" + _escape_attr(ns) + "'")
    for key, value in el.attrib.items():
        if key[:1] == "{":
            attr_ns, _, attr_local = key[1:].rpartition("}")
        else:
            attr_ns, attr_local = "", key
        if not attr_local or ":" in attr_local or (attr_local == "xmlns" and not attr_ns):
            # Namespace declarations come from the tags; a stray one could contradict them.
            raise ValueError(f"cannot serialize attribute name {key!r}; use Clark notation")
        if not attr_ns:
            name = attr_local
        elif attr_ns == NS_XML:
            name = "xml:" + attr_local
        elif attr_ns == _NS_XMLNS:
            raise ValueError(f"cannot serialize namespace declaration {key!r} as an attribute")
        else:
            prefix = prefixes.get(attr_ns)
            if prefix is None:
                prefix = f"ns{len(prefixes)}"
                prefixes = {**prefixes, attr_ns: prefix}
                parts.append(f" xmlns:{prefix}='{_escape_attr(attr_ns)}'")
            name = f"{prefix}:{attr_local}"
        parts.append(f" {name}='{_escape_attr(value)}'")
    text = el.text
    if not text and not len(el):
        parts.append("/>")
        return
    parts.append(">")
    if text:
        parts.append(_escape_text(text))
    for child in el:
        # ET.Comment / ET.ProcessingInstruction have callable tags: RFC 6120 §11.1 forbids them.
        if isinstance(child.tag, str):
            _write(parts, child, ns, prefixes)
        if child.tail:
            parts.append(_escape_text(child.tail))
    parts.append("</" + local + ">")


def serialize(el: ET.Element, parent_ns: str = NS_CLIENT) -> bytes:
    """Compact UTF-8 XML for one stanza (or any element) written inside a stream whose
    content namespace is `parent_ns`. `el.tail` is not written. Characters XML 1.0 forbids
    are dropped; element or attribute names that cannot be expressed raise ValueError."""
    parts: list[str] = []
    _write(parts, el, parent_ns, {})
    return "".join(parts).encode("utf-8")


def stream_header(
    *,
    from_: str,
    to: str | None,
    stream_id: str,
    lang: str = "en",
    default_ns: str = NS_CLIENT,
) -> bytes:
    """Our stream header (RFC 6120 §4.7), preceded by an XML declaration."""
    parts = ["<?xml version='1.0'?><stream:stream from='", _escape_attr(from_), "'"]
    if to is not None:
        parts += [" to='", _escape_attr(to), "'"]
    parts += [" id='", _escape_attr(stream_id), "' version='1.0'"]
    if lang:
        parts += [" xml:lang='", _escape_attr(lang), "'"]
    parts += [" xmlns='", _escape_attr(default_ns), "' xmlns:stream='", NS_STREAMS, "'>"]
    return "".join(parts).encode("utf-8")


def stream_error(condition: str, text: str = "", *, lang: str = "en") -> bytes:
    """A stream error followed by the closing stream tag (RFC 6120 §4.9.1.1, §4.9.2)."""
    _check_condition(condition)
    parts = ["<stream:error><", condition, " xmlns='", NS_STREAM_ERRORS, "'/>"]
    if text:
        parts += ["<text xmlns='", NS_STREAM_ERRORS, "'"]
        if lang:
            parts += [" xml:lang='", _escape_attr(lang), "'"]
        parts += [">", _escape_text(text), "</text>"]
    parts.append("</stream:error></stream:stream>")
    return "".join(parts).encode("utf-8")


def make(
    tag: str, attrs: dict[str, str] | None = None, *children: ET.Element, text: str | None = None
) -> ET.Element:
    """Build an element in one expression: make(f"{{{NS_CLIENT}}}message", {"to": jid}, body)."""
    el = ET.Element(tag, attrs or {})
    if text is not None:
        el.text = text
    el.extend(children)
    return el
