"""Link detection and defanging (core/links.py): what a client would make clickable, and where
it really leads."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standard_edition.core.links import defang, find_links, host_in, normalize_host


def hosts(text: str, bare: bool = False) -> list[str]:
    return [lk.host for lk in find_links(text, bare_hosts=bare)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://evil.example/page now", ["evil.example"]),
        ("HTTPS://EVIL.Example/X", ["evil.example"]),
        ("ftp://files.evil.example/a.zip", ["files.evil.example"]),
        ("www.evil.example/page", ["www.evil.example"]),
        ("go to WWW.Evil.Example.", ["www.evil.example"]),
        ("ftp.evil.example", ["ftp.evil.example"]),
        ("mailto:bob@evil.example?subject=hi", ["evil.example"]),
        ("(http://evil.example)", ["evil.example"]),
        ("http://en.wikipedia.org/wiki/Foo_(bar)", ["en.wikipedia.org"]),
        ("two: http://a.example, http://b.example.", ["a.example", "b.example"]),
        ("glued http://a.example,http://b.example/x", ["a.example", "b.example"]),
        ("http://a.example/?next=http://b.example/", ["a.example", "b.example"]),
        ("no link here, just text.", []),
        ("sip:alice@example.test and xmpp:bob@example.test are addresses", []),
    ],
)
def test_links_and_their_hosts(text: str, expected: list[str]) -> None:
    assert hosts(text) == expected


@pytest.mark.parametrize(
    ("text", "host"),
    [
        # userinfo is not the host: the browser goes to what follows the last @
        ("http://good.example@evil.example/", "evil.example"),
        ("http://good.example:443@evil.example/", "evil.example"),
        ("http://user:pw@Evil.Example:8080/x", "evil.example"),
        # ...and a backslash ends the host as a slash does, so this goes to evil
        ("http://evil.example\\@good.example/", "evil.example"),
        ("http:\\\\evil.example/", "evil.example"),
        ("http:////evil.example/", "evil.example"),
        # port, trailing dot, percent escapes, upper case
        ("http://EVIL.EXAMPLE.:80/", "evil.example"),
        ("http://evil%2Eexample/", "evil.example"),
        # IDN: U-labels, percent-encoded UTF-8 and fullwidth forms all fold to the A-label
        ("http://bücher.example/", "xn--bcher-kva.example"),
        ("http://b%C3%BCcher.example/", "xn--bcher-kva.example"),
        ("http://BÜCHER.example/", "xn--bcher-kva.example"),
        ("http://\uff45\uff56\uff49\uff4c\uff0eexample/", "evil.example"),  # fullwidth
        ("http://evil。example/", "evil.example"),
        ("http://ev\u00adil.example/", "evil.example"),
        ("http://[2001:db8::1]:8080/", "[2001:db8::1]"),
    ],
)
def test_the_host_is_where_a_browser_would_go(text: str, host: str) -> None:
    assert hosts(text) == [host]


def test_a_scheme_inside_a_word_is_still_found() -> None:
    # some clients link from "http" on whatever comes before it
    assert hosts("xhttp://evil.example") == ["evil.example"]
    assert hosts("_http://evil.example") == ["evil.example"]


def test_bare_host_names_and_mail_addresses_only_when_asked() -> None:
    text = "mail bob@evil.example or visit evil.example/x, not file.txt or 1.5"
    assert hosts(text) == []
    assert hosts(text, bare=True) == ["evil.example", "evil.example", "file.txt"]
    # inside a link's path a name is part of that link, not a link of its own
    assert hosts("http://good.example/evil.example", bare=True) == ["good.example"]


def test_normalize_host() -> None:
    assert normalize_host("Evil.Example.") == "evil.example"
    assert normalize_host("bücher.example") == "xn--bcher-kva.example"
    assert (
        normalize_host("\uff25\uff36\uff29\uff2c\uff0e\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25")
        == "evil.example"
    )


def test_a_domain_matches_itself_and_its_subdomains_only() -> None:
    listed = frozenset({"evil.example"})
    assert host_in("evil.example", listed)
    assert host_in("a.b.evil.example", listed)
    assert not host_in("notevil.example", listed)
    assert not host_in("evil.example.good.example", listed)
    assert not host_in("", listed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://evil.example/page", "see hxxp://evil[.]example/page"),
        ("HTTPS://EVIL.EXAMPLE", "HXXPS://EVIL[.]EXAMPLE"),
        ("ftp://a.evil.example/f", "fxp://a[.]evil[.]example/f"),
        ("www.evil.example", "www[.]evil[.]example"),
        ("http://good.example@evil.example/", "hxxp://good.example@evil[.]example/"),
        ("mailto:bob@evil.example", "mailto[:]bob@evil[.]example"),
        ("telnet://evil.example", "telnet[:]//evil[.]example"),
        ("http://evil。example", "hxxp://evil[.]example"),
    ],
)
def test_defang(text: str, expected: str) -> None:
    assert defang(text, find_links(text)) == expected


def test_defanged_text_has_no_links_left() -> None:
    text = "a http://x.example b www.y.example c mailto:z@w.example d bob@v.example"
    once = defang(text, find_links(text, bare_hosts=True))
    assert find_links(once, bare_hosts=True) == []
    assert defang(once, find_links(once, bare_hosts=True)) == once


def test_only_the_given_links_are_defanged() -> None:
    text = "http://good.example and http://evil.example"
    evil = [lk for lk in find_links(text) if lk.host == "evil.example"]
    assert defang(text, evil) == "http://good.example and hxxp://evil[.]example"


@pytest.mark.parametrize(
    "text",
    [
        "http:/" * 40_000,
        "www.a/" * 40_000,
        "http://a" + ")" * 200_000,
        "a." * 100_000,
        "@".join(["http://x"] * 30_000),
        "x" * 200_000 + "http://",
        "-" * 200_000,
    ],
)
def test_hostile_text_takes_linear_time(text: str) -> None:
    start = time.process_time()
    links = find_links(text, bare_hosts=True)
    defang(text, links)
    assert time.process_time() - start < 2.0


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("htp:/.w@\\aex-[]() 。Ü%2E")), max_size=80))
def test_any_text_parses_and_defanging_is_idempotent(text: str) -> None:
    links = find_links(text, bare_hosts=True)
    for lk in links:
        assert 0 <= lk.start <= lk.host_start <= lk.host_end <= lk.end <= len(text)
    once = defang(text, links)
    assert defang(once, find_links(once, bare_hosts=True)) == once
