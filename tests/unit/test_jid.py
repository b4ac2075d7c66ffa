"""Addresses and user names: RFC 7622 parsing, PRECIS preparation, the SIP-safe user name rule."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standard_edition.core.jid import (
    JID,
    InvalidJID,
    parse_jid,
    prepare_password,
    prepare_username,
)


def test_full_jid_is_split_into_its_three_parts() -> None:
    assert parse_jid("juliet@example.com/balcony") == JID("juliet", "example.com", "balcony")


def test_localpart_and_domain_fold_case_but_resource_is_kept_as_is() -> None:
    j = parse_jid("Juliet@Example.COM/Balcony")
    assert (j.local, j.domain, j.resource) == ("juliet", "example.com", "Balcony")
    assert str(j) == "juliet@example.com/Balcony"


def test_domain_only_and_bare_jids() -> None:
    assert parse_jid("example.com") == JID(None, "example.com", None)
    assert parse_jid("example.com/res") == JID(None, "example.com", "res")
    assert parse_jid("romeo@example.net").is_bare


def test_resource_may_hold_at_slash_and_spaces() -> None:
    # RFC 7622 §3.5: the resource is everything after the first '/'
    j = parse_jid("juliet@example.com/foo@bar/baz qux")
    assert j.local == "juliet" and j.resource == "foo@bar/baz qux"
    # '@' after the first '/' does not start a localpart
    assert parse_jid("example.com/a@b") == JID(None, "example.com", "a@b")


def test_unicode_localpart_and_resource() -> None:
    assert parse_jid("ΣΠ@example.com/♚").local == "σπ"
    assert parse_jid("king@example.com/♚").resource == "♚"


def test_trailing_dot_is_dropped_from_the_domain() -> None:
    assert parse_jid("user@example.com.").domain == "example.com"


def test_a_label_and_u_label_compare_equal() -> None:
    assert parse_jid("a@xn--bcher-kva.example").domain == "bücher.example"
    assert parse_jid("a@Bücher.Example").domain == "bücher.example"


def test_ip_literals() -> None:
    assert parse_jid("a@192.0.2.1").domain == "192.0.2.1"
    assert parse_jid("a@[2001:DB8:0:0::1]/r").domain == "[2001:db8::1]"


def test_bare_and_with_resource() -> None:
    full = parse_jid("a@example.test/r1")
    assert full.bare == JID("a", "example.test", None)
    assert not full.is_bare
    assert full.bare.with_resource("r2") == JID("a", "example.test", "r2")
    assert full.with_resource(None) == full.bare
    with pytest.raises(InvalidJID):
        full.with_resource("")


def test_jids_are_hashable_dictionary_keys() -> None:
    seen = {parse_jid("A@example.test/x"): 1}
    assert seen[parse_jid("a@EXAMPLE.test/x")] == 1


@pytest.mark.parametrize(
    ("full", "bare"),
    [
        ("juliet@example.com/balcony", "juliet@example.com"),
        ("Juliet@Example.COM./Balcony", "juliet@example.com"),
        ("example.com/res", "example.com"),
        ("a@[2001:DB8::1]/r", "a@[2001:db8::1]"),
        ("ñandú@xn--bcher-kva.de/a@b/c", "ñandú@bücher.de"),
    ],
)
def test_bare_of_a_full_jid_equals_the_parsed_bare_jid(full: str, bare: str) -> None:
    j = parse_jid(full)
    first, again = j.bare, j.bare
    expected = parse_jid(bare)
    for b in (first, again):
        assert b == expected and hash(b) == hash(expected)
        assert str(b) == str(expected)
        assert b.is_bare and b.bare is b
    assert again is first  # asked twice, the same object
    assert JID(j.local, j.domain, j.resource).bare == first  # a fresh instance agrees


def test_asking_for_bare_leaves_the_jid_unchanged_and_immutable() -> None:
    asked, fresh = JID("a", "example.test", "r"), JID("a", "example.test", "r")
    assert asked.bare == JID("a", "example.test", None)
    assert asked == fresh and hash(asked) == hash(fresh) and repr(asked) == repr(fresh)
    assert repr(asked) == "JID(local='a', domain='example.test', resource='r')"
    for copied in (pickle.loads(pickle.dumps(asked)), copy.copy(asked), copy.deepcopy(asked)):
        assert copied == fresh and copied.bare == fresh.bare
    with pytest.raises(dataclasses.FrozenInstanceError):
        asked.resource = None  # type: ignore[misc]
    # not a field: Python 3.11's frozen slots classes refuse it with a TypeError
    with pytest.raises((dataclasses.FrozenInstanceError, TypeError)):
        asked._bare = JID("b", "example.test", None)
    assert asked.bare == JID("a", "example.test", None)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "@example.com",
        "juliet@",
        "juliet@example.com/",
        "/resource",
        "jul iet@example.com",
        'jul"iet@example.com',
        "jul:iet@example.com",
        "a<b@example.com",
        "ju\x00liet@example.com",
        "juliet@exa mple.com",
        "juliet@-example.com",
        "juliet@example-.com",
        "juliet@exa..mple.com",
        "juliet@exa_mple.com",
        "juliet@.",
        "juliet@[::1",
        "juliet@[not-ipv6]",
        "juliet@xn--zz$",
        "juliet@example.com/\x07",
        "ⅳ@example.com",  # RFC 8265 §3.3: compatibility characters are disallowed
        "x@" + "a" * 64 + ".com",
        "a" * 1024 + "@example.com",
        "a@example.com/" + "r" * 1024,
        "a@example.com/" + "r" * 10_000,
    ],
)
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InvalidJID):
        parse_jid(bad)


def test_invalid_address_error_says_which_part() -> None:
    with pytest.raises(InvalidJID, match="localpart"):
        parse_jid("a b@example.com")
    with pytest.raises(InvalidJID, match="resourcepart"):
        parse_jid("a@example.com/")


def test_invalid_jid_is_a_value_error() -> None:
    assert issubclass(InvalidJID, ValueError)


def test_user_names_fold_case_with_precis() -> None:
    assert prepare_username("Alice") == "alice"
    assert (
        prepare_username("\uff21\uff2c\uff29\uff23\uff25") == "alice"
    )  # RFC 8265 §3.3.2: full width


@pytest.mark.parametrize("ok", ["bob.smith", "42", "a-b_c.d!e~f*g(h)i=j+k$l,m;n?o"])
def test_user_names_may_use_sip_user_part_characters(ok: str) -> None:
    assert prepare_username(ok) == ok


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a b",
        "o'brien",
        "a@b",
        "a/b",
        "a:b",
        "a&b",
        "a<b",
        "a%b",
        "a#b",
        "müller",
        "\u03c3",  # Greek sigma
        "x" * 65,
        "\x00",
    ],
)
def test_user_names_outside_the_sip_safe_set_are_refused(bad: str) -> None:
    with pytest.raises(InvalidJID, match="user name"):
        prepare_username(bad)


def test_user_name_limit_is_64_characters() -> None:
    assert prepare_username("x" * 64) == "x" * 64
    with pytest.raises(InvalidJID, match="64"):
        prepare_username("x" * 65)


def test_passwords_are_opaque_strings() -> None:
    assert prepare_password("Pass Word") == "Pass Word"  # case and spaces kept
    assert prepare_password("a\u00a0b") == "a b"  # RFC 8265 §4.2.1: non-ASCII space mapped


@pytest.mark.parametrize("bad", ["", "pass\x00word", "pass\nword", "\x7f"])
def test_bad_passwords_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="password"):
        prepare_password(bad)


@given(st.text(max_size=60))
def test_parse_jid_either_parses_or_raises_invalid_jid(s: str) -> None:
    try:
        j = parse_jid(s)
    except InvalidJID:
        return
    # a prepared address reads back as itself
    assert parse_jid(str(j)) == j


_part = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="@/"), min_size=1, max_size=12
)


@given(_part, st.sampled_from(["example.com", "Example.TEST.", "xn--bcher-kva.de"]), _part)
def test_prepared_jids_round_trip(local: str, domain: str, resource: str) -> None:
    try:
        j = parse_jid(f"{local}@{domain}/{resource}")
    except InvalidJID:
        return
    assert parse_jid(str(j)) == j
    assert j.local is not None and j.resource is not None
    assert j.bare == parse_jid(str(j).partition("/")[0]) == JID(j.local, j.domain, None)


@given(st.text(max_size=80))
def test_prepare_username_result_is_sip_safe_or_refused(s: str) -> None:
    try:
        name = prepare_username(s)
    except InvalidJID:
        return
    assert name.isascii() and 1 <= len(name) <= 64
    assert not set(name) & set(" \"&'/:<>@%#")
    assert prepare_username(name) == name
