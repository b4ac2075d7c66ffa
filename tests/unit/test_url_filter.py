"""The IM URL filter on core messages (core/url_filter.py): block, warn, scope, payloads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from standard_edition import config
from standard_edition.core.jid import JID
from standard_edition.core.model import Message
from standard_edition.core.url_filter import LINK_BLOCKED, LinkBlocked, UrlFilter

C = "{jabber:client}"
A = JID("alice", "example.test", "phone")
B = JID("bob", "example.test", None)
PREFIX = "[careful]"


def flt(mode: str, scope: str = "domains", domains: tuple[str, ...] = ("evil.example",)):
    return UrlFilter.build(mode, scope, domains, PREFIX, "example.test")


def body_el(text: str, lang: str | None = None) -> ET.Element:
    el = ET.Element(
        C + "body", {"{http://www.w3.org/XML/1998/namespace}lang": lang} if lang else {}
    )
    el.text = text
    return el


def message(text: str, mtype: str = "chat", extra: tuple[ET.Element, ...] = ()) -> Message:
    return Message(A, B, mtype, text, "m1", (body_el(text), *extra))


def test_off_and_unlisted_links_pass_untouched() -> None:
    msg = message("see http://evil.example")
    assert flt("off").filter_message(msg) is msg
    clean = message("see http://good.example and www.fine.example")
    assert flt("block").filter_message(clean) is clean
    assert flt("block", domains=()).filter_message(msg) is msg  # nothing listed: inactive


def test_block_names_the_reason() -> None:
    with pytest.raises(LinkBlocked) as e:
        flt("block").filter_message(message("hi http://good.example@sub.EVIL.example/x"))
    assert e.value.condition == "not-acceptable"
    assert e.value.app == LINK_BLOCKED
    assert "sub.evil.example" in e.value.text and "blocked" in e.value.text


def test_warn_prefixes_and_defangs_only_flagged_links() -> None:
    msg = message("http://good.example vs http://evil.example/p and evil.example")
    out = flt("warn").filter_message(msg)
    expected = f"{PREFIX} http://good.example vs hxxp://evil[.]example/p and evil[.]example"
    assert out.body == expected
    (el,) = out.payload
    assert el.text == expected
    assert msg.payload[0].text == msg.body  # the original element is not changed


def test_scope_all_flags_every_link_but_our_own_domain() -> None:
    f = flt("warn", scope="all", domains=())
    out = f.filter_message(message("http://a.example www.b.example https://upload.example.test/f"))
    assert out.body == (
        f"{PREFIX} hxxp://a[.]example www[.]b[.]example https://upload.example.test/f"
    )
    with pytest.raises(LinkBlocked) as e:
        flt("block", scope="all").filter_message(message("ftp://files.example/x"))
    assert "links are not allowed" in e.value.text
    # bare names are not links in scope all: only what clients make clickable
    plain = message("the file is report.txt on files.example")
    assert flt("block", scope="all").filter_message(plain) is plain


def test_every_body_language_is_warned_and_rich_copies_are_dropped() -> None:
    html = ET.fromstring(
        '<html xmlns="http://jabber.org/protocol/xhtml-im"><body xmlns="http://www.w3.org/1999/xhtml">'
        '<a href="http://evil.example/">click</a></body></html>'
    )
    oob = ET.fromstring('<x xmlns="jabber:x:oob"><url>https://evil.example/f.exe</url></x>')
    receipt = ET.Element("{urn:xmpp:receipts}request")
    msg = Message(
        A,
        B,
        "chat",
        "look www.evil.example",
        "m1",
        (
            body_el("look www.evil.example"),
            body_el("schau www.evil.example", "de"),
            html,
            oob,
            receipt,
        ),
    )
    out = flt("warn").filter_message(msg)
    assert [el.text for el in out.payload[:2]] == [
        f"{PREFIX} look www[.]evil[.]example",
        f"{PREFIX} schau www[.]evil[.]example",
    ]
    assert out.payload[1].get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
    assert out.payload[2:] == (receipt,)


def test_a_link_hidden_in_rich_content_is_blocked_too() -> None:
    html = ET.fromstring(
        '<html xmlns="http://jabber.org/protocol/xhtml-im"><body xmlns="http://www.w3.org/1999/xhtml">'
        '<a href="http://evil.example/">a harmless word</a></body></html>'
    )
    msg = message("a harmless word", extra=(html,))
    with pytest.raises(LinkBlocked):
        flt("block").filter_message(msg)
    warned = flt("warn").filter_message(msg)
    assert warned.body == f"{PREFIX} a harmless word"
    assert all(el.tag != html.tag for el in warned.payload)


def test_types_that_are_not_conversation_pass() -> None:
    for mtype in ("headline", "error"):
        msg = message("http://evil.example", mtype)
        assert flt("block").filter_message(msg) is msg
    for mtype in ("chat", "normal", "groupchat"):
        with pytest.raises(LinkBlocked):
            flt("block").filter_message(message("http://evil.example", mtype))


def test_room_subject_is_filtered_like_a_body() -> None:
    subject_el = ET.Element(C + "subject")
    subject_el.text = "agenda at www.evil.example"
    body, payload, subject = flt("warn").apply(None, (subject_el,), "agenda at www.evil.example")
    assert body is None
    assert subject == "agenda at www[.]evil[.]example"  # no prefix in a subject
    assert payload[0].text == subject


def test_warning_twice_changes_nothing_more() -> None:
    f = flt("warn")
    once = f.filter_message(message("http://evil.example"))
    assert f.filter_message(once) is once


def test_a_message_the_filter_let_through_is_not_filtered_again() -> None:
    # a listed domain in the userinfo is not the link's host, so it is not defanged; a second
    # pass would read it as a bare host name and prefix the message again
    counters: dict[str, int] = {}
    f = UrlFilter.build("warn", "domains", ["evil.example"], PREFIX, "example.test", counters)
    once = f.filter_message(message("see http://evil.example:80@evil.example/x"))
    assert once.filtered
    assert once.body == f"{PREFIX} see hxxp://evil.example:80@evil[.]example/x"
    unmarked = Message(A, B, "chat", once.body, "m1", once.payload)
    assert f.filter_message(unmarked).body.count(PREFIX) == 2  # what the mark prevents
    assert f.filter_message(once) is once
    # a rerouted copy that carries the mark passes even in block mode: it was accepted once
    blocking = UrlFilter.build("block", "domains", ["evil.example"], PREFIX, "example.test")
    assert blocking.filter_message(once) is once
    assert counters == {"url_filter_warned": 2}


def test_blocks_and_warnings_are_counted_and_each_block_logged_without_the_text() -> None:
    counters: dict[str, int] = {"url_filter_warned": 0, "url_filter_blocked": 0}
    warn = UrlFilter.build("warn", "domains", ["evil.example"], PREFIX, "example.test", counters)
    block = UrlFilter.build("block", "domains", ["evil.example"], PREFIX, "example.test", counters)
    warn.filter_message(message("secret plan at http://evil.example/p"))
    warn.filter_message(message("nothing to see"))
    with capturedLogs() as events, pytest.raises(LinkBlocked):
        block.filter_message(message("secret plan at http://sub.evil.example/p"))
    with pytest.raises(LinkBlocked):
        block.apply("secret plan at www.evil.example", (), sender=A, to="room@conference.x")
    assert counters == {"url_filter_warned": 1, "url_filter_blocked": 2}
    ours = [e for e in events if e.get("log_namespace") == "se.url_filter"]
    assert len(ours) == 1 and ours[0]["log_level"] == LogLevel.info
    line = formatEvent(ours[0])
    assert line.startswith("url filter: blocked") and "secret" not in line
    assert str(A.bare) in line and "to example.test" in line and "sub.evil.example" in line


def test_invitation_reasons_are_defanged_or_blocked() -> None:
    direct = ET.fromstring(
        "<x xmlns='jabber:x:conference' jid='r@conference.example.test' "
        "reason='slides at http://evil.example/s'/>"
    )
    mediated = ET.fromstring(
        "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='r@conference.example.test'>"
        "<reason>slides at http://evil.example/s</reason></invite></x>"
    )
    for el in (direct, mediated):
        msg = Message(A, B, "normal", None, "i1", (el,))
        with pytest.raises(LinkBlocked):
            flt("block").filter_message(msg)
        (out,) = flt("warn").filter_message(msg).payload
        reason = out.get("reason") if out.tag == direct.tag else out.findtext(".//{*}reason")
        assert reason == "slides at hxxp://evil[.]example/s"  # no prefix inside a reason
        assert out.get("jid") == el.get("jid")  # still a working invitation
    assert "evil.example/s" in direct.get("reason", "")  # the original is not changed
    assert flt("warn").filter_text("see www.evil.example") == "see www[.]evil[.]example"
    assert flt("warn").filter_text(None) is None
    with pytest.raises(LinkBlocked):
        flt("block").filter_text("see www.evil.example")


def test_empty_prefix_only_defangs() -> None:
    f = UrlFilter.build("warn", "domains", ["evil.example"], "", "example.test")
    assert f.filter_message(message("x http://evil.example")).body == "x hxxp://evil[.]example"


def test_config_section(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'domain = "example.test"\n[im]\noffline = false\n[im.url_filter]\n'
        'mode = "block"\nscope = "all"\ndomains = ["Evil.Example"]\nprefix = "!"\n'
    )
    cfg = config.load(path)
    assert (cfg.url_filter_mode, cfg.url_filter_scope) == ("block", "all")
    assert cfg.url_filter_domains == ("evil.example",)
    assert cfg.url_filter_prefix == "!"
    for bad, word in (
        ('mode = "allow"', "im.url_filter.mode"),
        ('scope = "some"', "im.url_filter.scope"),
        ('domains = ["not a domain"]', "im.url_filter.domains"),
        ('prefix = "two\\nlines"', "im.url_filter.prefix"),
        ("colour = 1", "im.url_filter.colour: unknown key"),
    ):
        path.write_text(f'domain = "example.test"\n[im.url_filter]\n{bad}\n')
        with pytest.raises(config.ConfigError, match=word):
            config.load(path)


@pytest.mark.parametrize(
    "args", [("mode", "maybe"), ("frob",), ("scope",), ("add",), ("show", "x"), ("prefix",)]
)
def test_se_ctl_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    from appliance import ctl

    path = tmp_path / "config.toml"
    path.write_text(f'domain = "example.test"\ndata_dir = "{tmp_path}"\n')
    assert ctl.main(["--config", str(path), "im", "url-filter", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "url-filter" in err
