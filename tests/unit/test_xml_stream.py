"""Bytes in, events out: the XMPP XML stream layer (RFC 6120 §4, §11)."""

from __future__ import annotations

import itertools
import tracemalloc
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standard_edition.xmpp.xml import (
    MAX_DEPTH,
    MAX_STANZA_BYTES,
    NS_CLIENT,
    NS_STREAM_ERRORS,
    NS_STREAMS,
    NS_XML,
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamError,
    StreamEvent,
    StreamOpened,
    StreamParser,
    make,
    serialize,
    stream_error,
    stream_header,
)

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream to='example.com' from='juliet@example.com' version='1.0' xml:lang='en'"
    b" xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
C = "{" + NS_CLIENT + "}"

Shape = tuple[Any, ...]


def shape(el: ET.Element) -> Shape:
    """Structural value of an element tree ('' and None text are the same on the wire)."""
    return (
        el.tag,
        dict(el.attrib),
        el.text or None,
        el.tail or None,
        [shape(child) for child in el],
    )


def event_shape(event: StreamEvent) -> Shape:
    if isinstance(event, StreamOpened):
        return ("opened", event.attrs, event.default_ns)
    if isinstance(event, StanzaReceived):
        return ("stanza", shape(event.element))
    return ("closed",)


def opened_parser(**limits: int) -> StreamParser:
    parser = StreamParser(**limits)
    [event] = parser.feed(HEADER)
    assert isinstance(event, StreamOpened)
    return parser


def stanzas(events: list[StreamEvent]) -> list[ET.Element]:
    return [e.element for e in events if isinstance(e, StanzaReceived)]


def condition_of(parser: StreamParser, data: bytes) -> str:
    with pytest.raises(StreamError) as info:
        parser.feed(data)
    return info.value.condition


def reparse(el: ET.Element) -> ET.Element:
    """Serialize inside a jabber:client stream and parse it back."""
    [stanza] = stanzas(opened_parser().feed(serialize(el)))
    return stanza


# --------------------------------------------------------------------------- opening


def test_stream_header_yields_opened_event_with_plain_attribute_names() -> None:
    [event] = StreamParser().feed(HEADER)

    assert event == StreamOpened(
        {
            "to": "example.com",
            "from": "juliet@example.com",
            "version": "1.0",
            "xml:lang": "en",
        },
        default_ns=NS_CLIENT,
    )


def test_stream_opened_records_the_declared_content_namespace() -> None:
    header = (
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
        b" version='1.0'>"
    )
    [event] = StreamParser().feed(header)

    assert isinstance(event, StreamOpened)
    assert event.default_ns == "jabber:server"


def test_stream_without_default_namespace_reports_none() -> None:
    [event] = StreamParser().feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'>")

    assert event == StreamOpened({}, default_ns=None)


def test_root_element_other_than_stream_is_invalid_namespace() -> None:
    assert condition_of(StreamParser(), b"<html xmlns='jabber:client'>") == "invalid-namespace"


def test_stream_element_in_wrong_namespace_is_invalid_namespace() -> None:
    data = b"<stream:stream xmlns:stream='urn:not-streams' xmlns='jabber:client'>"
    assert condition_of(StreamParser(), data) == "invalid-namespace"


def test_unprefixed_stream_element_is_bad_namespace_prefix() -> None:
    data = b"<stream xmlns='http://etherx.jabber.org/streams'>"
    assert condition_of(StreamParser(), data) == "bad-namespace-prefix"


def test_plain_text_before_the_stream_is_not_well_formed() -> None:
    assert condition_of(StreamParser(), b"GET / HTTP/1.1\r\n") == "not-well-formed"


# --------------------------------------------------------------------------- stanzas


def test_stanza_arrives_as_element_tree_in_clark_notation() -> None:
    parser = opened_parser()

    events = parser.feed(
        b"<message to='romeo@example.net' type='chat' xml:lang='fr'>"
        b"<body>Bonjour</body><active xmlns='http://jabber.org/protocol/chatstates'/>"
        b"</message>"
    )

    [stanza] = stanzas(events)
    assert shape(stanza) == (
        C + "message",
        {"to": "romeo@example.net", "type": "chat", "{" + NS_XML + "}lang": "fr"},
        None,
        None,
        [
            (C + "body", {}, "Bonjour", None, []),
            ("{http://jabber.org/protocol/chatstates}active", {}, None, None, []),
        ],
    )


def test_mixed_content_keeps_text_and_tails() -> None:
    parser = opened_parser()

    [stanza] = stanzas(parser.feed(b"<message><x>one<b>two</b>three</x>four</message>"))

    assert shape(stanza) == (
        C + "message",
        {},
        None,
        None,
        [(C + "x", {}, "one", "four", [(C + "b", {}, "two", "three", [])])],
    )


def test_stanza_is_only_emitted_once_complete() -> None:
    parser = opened_parser()

    assert parser.feed(b"<message><body>hel") == []
    assert parser.feed(b"lo</body>") == []
    [stanza] = stanzas(parser.feed(b"</message>"))

    assert stanza.findtext(C + "body") == "hello"


def test_several_stanzas_in_one_feed_come_out_in_order() -> None:
    parser = opened_parser()

    events = parser.feed(b"<iq id='1'/><presence/><message id='2'/>")

    assert [el.tag for el in stanzas(events)] == [C + "iq", C + "presence", C + "message"]


def test_whitespace_keepalives_between_stanzas_are_ignored() -> None:
    parser = opened_parser()

    assert parser.feed(b" ") == []
    assert parser.feed(b"\n\t \r\n") == []
    events = parser.feed(b"<presence/>   \n")

    assert [event_shape(e) for e in events] == [("stanza", (C + "presence", {}, None, None, []))]


def test_text_between_stanzas_is_not_well_formed() -> None:
    assert condition_of(opened_parser(), b"<presence/> hello ") == "not-well-formed"


def test_closing_tag_yields_stream_closed() -> None:
    parser = opened_parser()

    events = parser.feed(b"<presence type='unavailable'/></stream:stream>")

    assert [type(e) for e in events] == [StanzaReceived, StreamClosed]


def test_header_and_close_in_one_feed() -> None:
    events = StreamParser().feed(HEADER + STREAM_CLOSE)

    assert [type(e) for e in events] == [StreamOpened, StreamClosed]


def test_predefined_entities_and_character_references_are_decoded() -> None:
    parser = opened_parser()

    [stanza] = stanzas(
        parser.feed(
            b"<message a='&quot;&apos;&lt;'><body>&amp;&lt;&gt;&quot;&apos;"
            b" &#233;&#xE9;&#x1F600;</body></message>"
        )
    )

    assert stanza.get("a") == "\"'<"
    assert stanza.findtext(C + "body") == "&<>\"' \u00e9\u00e9\U0001f600"


def test_cdata_section_is_plain_text() -> None:
    parser = opened_parser()

    [stanza] = stanzas(parser.feed(b"<message><body><![CDATA[<b>&x]]></body></message>"))

    assert stanza.findtext(C + "body") == "<b>&x"


# --------------------------------------------------------------------------- any split point

SAMPLE_STREAM = (
    HEADER
    + b"\n"
    + (
        "<message to='rom\u00e9o@example.net' id='\u6f22\u5b57'><body>caf\u00e9 \U0001f389"
        " &amp; &#x263A;\r\nline</body><x xmlns='urn:x:data' xml:lang='de'>"
        "<field var='a'>\u00fc</field>tail</x></message>"
    ).encode()
    + b"  <iq type='get' id='q1'><query xmlns='jabber:iq:roster'/></iq>\n"
    + b"<presence><status><![CDATA[<away>]]></status></presence>"
    + STREAM_CLOSE
)


def events_of(chunks: list[bytes]) -> list[Shape]:
    parser = StreamParser()
    return [event_shape(event) for chunk in chunks for event in parser.feed(chunk)]


def test_sample_stream_parses_in_one_feed() -> None:
    events = events_of([SAMPLE_STREAM])

    assert [e[0] for e in events] == ["opened", "stanza", "stanza", "stanza", "closed"]
    assert events[1][1][4][0][2] == "caf\u00e9 \U0001f389 & \u263a\nline"


def test_byte_by_byte_feed_gives_same_events() -> None:
    one_byte_chunks = [SAMPLE_STREAM[i : i + 1] for i in range(len(SAMPLE_STREAM))]

    assert events_of(one_byte_chunks) == events_of([SAMPLE_STREAM])


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE_STREAM)), max_size=40))
def test_splitting_at_any_points_gives_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(SAMPLE_STREAM)]
    chunks = [SAMPLE_STREAM[a:b] for a, b in itertools.pairwise(bounds)]

    assert events_of(chunks) == events_of([SAMPLE_STREAM])


# --------------------------------------------------------------------------- restricted XML


def test_doctype_is_restricted_xml() -> None:
    data = b"<?xml version='1.0'?><!DOCTYPE stream:stream>" + HEADER[21:]
    assert condition_of(StreamParser(), data) == "restricted-xml"


def test_billion_laughs_is_rejected_at_doctype_with_flat_memory() -> None:
    lol = [b'<!ENTITY lol "lol">']
    for i in range(1, 10):
        prev = b"&lol%d;" % (i - 1) if i > 1 else b"&lol;"
        lol.append(b'<!ENTITY lol%d "%s">' % (i, prev * 10))
    bomb = (
        b"<?xml version='1.0'?><!DOCTYPE stream:stream [" + b"".join(lol) + b"]>"
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        b"<message><body>&lol9;</body></message>"
    )
    parser = StreamParser()

    tracemalloc.start()
    try:
        assert condition_of(parser, bomb) == "restricted-xml"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_entity_declaration_split_across_feeds_is_still_rejected() -> None:
    parser = StreamParser()

    assert parser.feed(b"<?xml version='1.0'?><!DOC") == []
    assert condition_of(parser, b"TYPE x [<!ENTITY a 'b'>]>") == "restricted-xml"


def test_comment_in_stanza_is_restricted_xml() -> None:
    assert condition_of(opened_parser(), b"<message><!-- hi --></message>") == "restricted-xml"


def test_comment_before_stream_is_restricted_xml() -> None:
    assert condition_of(StreamParser(), b"<!-- hi -->" + HEADER[21:]) == "restricted-xml"


def test_processing_instruction_is_restricted_xml() -> None:
    data = b"<message><?php echo 1; ?></message>"
    assert condition_of(opened_parser(), data) == "restricted-xml"


def test_undefined_entity_in_text_is_restricted_xml() -> None:
    assert condition_of(opened_parser(), b"<message>&foo;</message>") == "restricted-xml"


def test_undefined_entity_in_attribute_is_restricted_xml() -> None:
    assert condition_of(opened_parser(), b"<message to='&foo;'/>") == "restricted-xml"


# --------------------------------------------------------------------------- encoding & junk


def test_binary_junk_is_not_well_formed() -> None:
    assert condition_of(StreamParser(), bytes(range(1, 256))) == "not-well-formed"


def test_invalid_utf8_inside_stanza_is_not_well_formed() -> None:
    assert condition_of(opened_parser(), b"<message><body>\xc3\x28</body>") == "not-well-formed"


def test_control_character_reference_is_not_well_formed() -> None:
    assert condition_of(opened_parser(), b"<message><body>&#1;</body>") == "not-well-formed"


def test_declared_non_utf8_encoding_is_unsupported() -> None:
    data = b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER[21:]
    assert condition_of(StreamParser(), data) == "unsupported-encoding"


def test_declared_utf8_encoding_is_accepted() -> None:
    events = StreamParser().feed(b"<?xml version='1.0' encoding='utf-8'?>" + HEADER[21:])
    assert [type(e) for e in events] == [StreamOpened]


def test_utf16_stream_is_unsupported_encoding_even_split_after_one_byte() -> None:
    data = "<?xml version='1.0'?><stream:stream>".encode("utf-16")
    parser = StreamParser()

    assert parser.feed(data[:1]) == []
    assert condition_of(parser, data[1:]) == "unsupported-encoding"


def test_dead_parser_raises_the_same_error_again() -> None:
    parser = opened_parser()
    first = condition_of(parser, b"<message><!-- x -->")

    with pytest.raises(StreamError) as info:
        parser.feed(b"<presence/>")

    assert (first, info.value.condition) == ("restricted-xml", "restricted-xml")


# --------------------------------------------------------------------------- limits


def test_megabyte_stanza_is_rejected_before_it_is_all_consumed() -> None:
    parser = opened_parser()
    body = b"<message><body>" + b"x" * (1 << 20) + b"</body></message>"
    chunk = 4096
    fed = 0

    with pytest.raises(StreamError) as info:
        for start in range(0, len(body), chunk):
            fed += chunk
            parser.feed(body[start : start + chunk])

    assert info.value.condition == "policy-violation"
    assert fed <= MAX_STANZA_BYTES + 2 * chunk


def test_megabyte_stanza_in_one_feed_is_rejected_without_buffering_it() -> None:
    parser = opened_parser()
    body = b"<message><body>" + b"x" * (1 << 20) + b"</body></message>"

    tracemalloc.start()
    try:
        assert condition_of(parser, body) == "policy-violation"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_STANZA_BYTES


def test_megabyte_start_tag_is_rejected() -> None:
    data = b"<message to='" + b"a" * (1 << 20) + b"'/>"
    assert condition_of(opened_parser(), data) == "policy-violation"


def test_megabyte_stream_header_is_rejected() -> None:
    data = b"<stream:stream to='" + b"a" * (1 << 20)
    assert condition_of(StreamParser(), data) == "policy-violation"


def test_stanza_within_limit_is_accepted() -> None:
    parser = opened_parser(max_stanza_bytes=1000)
    stanza = b"<message><body>" + b"x" * 900 + b"</body></message>"

    assert len(stanzas(parser.feed(stanza))) == 1


def test_stanza_over_custom_limit_is_rejected_even_when_complete() -> None:
    stanza = b"<message><body>" + b"x" * 1100 + b"</body></message>"
    assert condition_of(opened_parser(max_stanza_bytes=1000), stanza) == "policy-violation"


def test_limit_is_per_stanza_not_per_stream() -> None:
    parser = opened_parser(max_stanza_bytes=1000)
    stanza = b"<message><body>" + b"x" * 900 + b"</body></message>"

    assert len(stanzas(parser.feed(stanza * 50))) == 50


def test_long_whitespace_keepalive_run_is_not_a_stanza() -> None:
    parser = opened_parser(max_stanza_bytes=1000)

    for _ in range(20):
        assert parser.feed(b" " * 600) == []
    assert len(stanzas(parser.feed(b"<presence/>"))) == 1


def test_deep_nesting_is_rejected_at_first_too_deep_tag() -> None:
    parser = opened_parser()

    assert condition_of(parser, b"<a>" * 20_000) == "policy-violation"


def test_nesting_up_to_max_depth_is_accepted() -> None:
    parser = opened_parser()
    deep = b"<a>" * MAX_DEPTH + b"</a>" * MAX_DEPTH

    [stanza] = stanzas(parser.feed(deep))

    assert len(list(stanza.iter())) == MAX_DEPTH


def test_custom_depth_limit_counts_the_stanza_itself() -> None:
    parser = opened_parser(max_depth=3)

    assert parser.feed(b"<message><a><b>") == []
    assert condition_of(parser, b"<c>") == "policy-violation"


# --------------------------------------------------------------------------- restart


def test_reset_starts_a_new_stream_and_forgets_the_old_one() -> None:
    parser = opened_parser()
    assert parser.feed(b"<message><body>half a sta") == []

    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")

    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]


def test_reset_revives_a_dead_parser() -> None:
    parser = opened_parser()
    condition_of(parser, b"<!-- x -->")

    parser.reset()

    assert [type(e) for e in parser.feed(HEADER)] == [StreamOpened]


# --------------------------------------------------------------------------- serialize


def test_serialize_omits_namespace_of_the_stream_and_declares_foreign_ones() -> None:
    el = make(
        C + "iq",
        {"type": "result", "id": "r1"},
        make("{jabber:iq:roster}query", None, make("{jabber:iq:roster}item", {"jid": "a@b"})),
    )

    assert serialize(el) == (
        b"<iq type='result' id='r1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>"
    )


def test_serialize_for_server_stream_declares_client_namespace() -> None:
    el = make(C + "presence")

    assert serialize(el, parent_ns="jabber:server") == b"<presence xmlns='jabber:client'/>"


def test_serialize_writes_xml_lang_and_prefixes_other_namespaced_attributes() -> None:
    el = make(C + "message", {"{" + NS_XML + "}lang": "de", "{urn:ext}flag": "1"})

    out = serialize(el)

    assert out == b"<message xml:lang='de' xmlns:ns0='urn:ext' ns0:flag='1'/>"
    assert shape(reparse(el)) == shape(el)


def test_serialize_round_trips_nested_foreign_namespaces() -> None:
    el = make(
        C + "message",
        {"to": "juliet@example.com", "{" + NS_XML + "}lang": "en"},
        make(C + "body", text="Hi \u00e9 \U0001f600"),
        make(
            "{http://jabber.org/protocol/pubsub#event}event",
            None,
            make(
                "{http://jabber.org/protocol/pubsub#event}items",
                {"node": "urn:xmpp:microblog:0"},
                make("{http://www.w3.org/2005/Atom}entry", {"{urn:a}x": "1", "{urn:b}y": "2"}),
            ),
        ),
        make("{jabber:x:data}x", {"{" + NS_XML + "}lang": "fr"}, make("plain")),
    )

    assert shape(reparse(el)) == shape(el)


def test_serialize_undeclares_default_namespace_for_unqualified_child() -> None:
    el = make(C + "message", None, make("bare"))

    assert serialize(el) == b"<message><bare xmlns=''/></message>"


def test_serialize_escapes_markup_in_text_and_attributes() -> None:
    el = make(C + "message", {"id": "a'b\"c<d>&e\tf\ng\rh"}, make(C + "body", text="<&>]]>\r\n"))

    out = serialize(el)

    assert b"<&" not in out
    assert shape(reparse(el)) == shape(el)


def test_serialize_strips_characters_illegal_in_xml() -> None:
    el = make(
        C + "message", {"id": "x\x00y\ud800"}, make(C + "body", text="a\x01b\x1fc\ufffed\ud83d")
    )

    out = serialize(el)

    assert out == b"<message id='xy'><body>abcd</body></message>"
    assert reparse(el).findtext(C + "body") == "abcd"


def test_serialize_skips_comments_but_keeps_their_tail() -> None:
    el = make(C + "message", None, make(C + "body", text="hi"))
    comment = ET.Comment("secret")
    comment.tail = "after"
    el.append(comment)

    assert serialize(el) == b"<message><body>hi</body>after</message>"


def test_serialize_refuses_xmlns_attributes_and_prefixed_names() -> None:
    with pytest.raises(ValueError):
        serialize(make(C + "query", {"xmlns": "jabber:iq:roster"}))
    with pytest.raises(ValueError):
        serialize(make("stream:error"))


_NAMESPACES = st.sampled_from([NS_CLIENT, "urn:x", "jabber:iq:roster", "", "http://a/b?c=&d"])
_LOCAL_NAMES = st.sampled_from(["a", "body", "x-y", "n.1", "\u00f1ame", "\u6f22"])
_ATTR_NAMES = st.sampled_from(["to", "id", "{" + NS_XML + "}lang", "{urn:attr}k", "{urn:o}k"])
_ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    ns = draw(_NAMESPACES)
    tag = ("{" + ns + "}" if ns else "") + draw(_LOCAL_NAMES)
    el = ET.Element(tag, draw(st.dictionaries(_ATTR_NAMES, _ANY_TEXT, max_size=3)))
    el.text = draw(st.none() | _ANY_TEXT)
    if depth < 3:
        for child in draw(st.lists(_trees(depth + 1), max_size=3)):
            child.tail = draw(st.none() | _ANY_TEXT)
            el.append(child)
    return el


def _legal(text: str | None) -> str | None:
    if text is None:
        return None
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r"
        or "\x20" <= ch <= "\ud7ff"
        or "\ue000" <= ch <= "\ufffd"
        or ch >= "\U00010000"
    )


def _legal_shape(el: ET.Element, top: bool = True) -> Shape:
    return (
        el.tag,
        {k: _legal(v) for k, v in el.attrib.items()},
        _legal(el.text) or None,
        None if top else _legal(el.tail) or None,
        [_legal_shape(child, top=False) for child in el],
    )


@settings(max_examples=200)
@given(_trees())
def test_serialize_then_parse_round_trips_any_tree(el: ET.Element) -> None:
    assert shape(reparse(el)) == _legal_shape(el)


# --------------------------------------------------------------------------- header & errors


def test_stream_header_parses_back_to_its_attributes() -> None:
    header = stream_header(from_="example.com", to="juliet@example.com", stream_id="s'1")

    [event] = StreamParser().feed(header)

    assert event == StreamOpened(
        {
            "from": "example.com",
            "to": "juliet@example.com",
            "id": "s'1",
            "version": "1.0",
            "xml:lang": "en",
        },
        default_ns=NS_CLIENT,
    )


def test_stream_header_without_to_omits_it() -> None:
    header = stream_header(from_="example.com", to=None, stream_id="x")

    assert b" to=" not in header
    assert header.startswith(b"<?xml version='1.0'?><stream:stream ")


def test_stream_error_parses_as_error_element_and_stream_close() -> None:
    header = stream_header(from_="example.com", to=None, stream_id="x")

    events = StreamParser().feed(header + stream_error("policy-violation", "too <big> & bad"))

    _opened, error, closed = events
    assert isinstance(error, StanzaReceived)
    assert isinstance(closed, StreamClosed)
    assert shape(error.element) == (
        "{" + NS_STREAMS + "}error",
        {},
        None,
        None,
        [
            ("{" + NS_STREAM_ERRORS + "}policy-violation", {}, None, None, []),
            (
                "{" + NS_STREAM_ERRORS + "}text",
                {"{" + NS_XML + "}lang": "en"},
                "too <big> & bad",
                None,
                [],
            ),
        ],
    )


def test_stream_error_without_text_has_only_the_condition() -> None:
    assert stream_error("restricted-xml") == (
        b"<stream:error><restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error></stream:stream>"
    )


def test_unknown_stream_error_condition_is_refused() -> None:
    with pytest.raises(ValueError):
        stream_error("no-such-condition")
    with pytest.raises(ValueError):
        StreamError("no-such-condition")
