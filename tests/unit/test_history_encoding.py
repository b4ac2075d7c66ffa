"""What the message history stores is read back as the message that was sent."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from standard_edition.core.history import _encode, decode_message
from standard_edition.core.jid import parse_jid
from standard_edition.core.model import Message

STANZA = (
    "<message xmlns='jabber:client'><body>a &amp; b &lt;c&gt; \"q\" 'x' ]]&gt; é 😀</body>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    "<x xmlns='jabber:x:oob' a='1'><url>https://example.test/?a=1&amp;b=2</url></x>"
    "<thread xmlns='jabber:client' parent='p'>t1</thread></message>"
)


def shape(el: ET.Element) -> tuple[object, ...]:
    return (el.tag, el.text or "", dict(el.attrib), [shape(ch) for ch in el])


def message(payload: tuple[ET.Element, ...], body: str | None) -> Message:
    return Message(
        sender=parse_jid("alice@example.test/laptop"),
        to=parse_jid("bob@example.test"),
        type="chat",
        body=body,
        id="m1",
        payload=payload,
    )


def test_every_payload_element_comes_back_with_its_namespace_attributes_and_children() -> None:
    el = ET.fromstring(STANZA)
    msg = message(tuple(el), el.findtext("{jabber:client}body"))
    back = decode_message(_encode(msg), 1_700_000_000.0)
    assert [shape(p) for p in back.payload] == [shape(p) for p in msg.payload]
    assert (back.sender, back.to, back.type, back.body, back.id) == (
        msg.sender,
        msg.to,
        msg.type,
        msg.body,
        msg.id,
    )
    assert back.delay is not None and back.delay.timestamp() == 1_700_000_000.0


# text a parsed stanza can hold: any XML 1.0 character but CR (a parser turns it into LF)
XML_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r").filter(
        lambda c: c in "\t\n" or (ord(c) >= 0x20 and ord(c) not in (0xFFFE, 0xFFFF))
    ),
    max_size=200,
)


@given(XML_TEXT)
def test_any_body_text_survives(text: str) -> None:
    body = ET.Element("{jabber:client}body")
    body.text = text
    back = decode_message(_encode(message((body,), text)), 0.0)
    assert back.body == text
    assert (back.payload[0].text or "") == text
