"""vCard visibility by access level, photo hashes, and directory matching, without a server."""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from standard_edition.core.directory import Directory, Query, split_name
from standard_edition.presence.access import Level, card_parts
from standard_edition.xmpp.stanzas import StanzaError
from standard_edition.xmpp.vcard import summarize, visible_card

V = "{vcard-temp}"
CARD = ET.fromstring(
    "<vCard xmlns='vcard-temp'><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN></N>"
    "<TITLE>Engineer</TITLE><TEL><WORK/><NUMBER>1</NUMBER></TEL><TEL><CELL/><NUMBER>2</NUMBER>"
    "</TEL><TEL><HOME/><NUMBER>3</NUMBER></TEL><ADR><HOME/><LOCALITY>Oxford</LOCALITY></ADR>"
    "<EMAIL><HOME/><USERID>a@home.example</USERID></EMAIL>"
    "<EMAIL><INTERNET/><USERID>a@work.example</USERID></EMAIL><BDAY>1990-05-04</BDAY>"
    f"<PHOTO><BINVAL>{base64.b64encode(b'png-bytes').decode()}</BINVAL></PHOTO>"
    "<x xmlns='urn:example:private'/></vCard>"
)


def shown(level: Level, name: str = "") -> ET.Element:
    return visible_card(CARD, card_parts(level), name)


def phones(card: ET.Element) -> list[str | None]:
    return [t.findtext(V + "NUMBER") for t in card.findall(V + "TEL")]


def test_external_contacts_see_only_name_and_photo() -> None:
    card = shown(Level.EXTERNAL, "Alice Liddell")
    assert [c.tag.removeprefix(V) for c in card] == ["FN", "N", "PHOTO", "NICKNAME"]
    assert card.findtext(V + "FN") == "Alice Liddell"


def test_colleagues_see_work_details_but_no_mobile_home_or_birthday() -> None:
    card = shown(Level.COLLEAGUES)
    assert phones(card) == ["1"]
    assert card.find(V + "ADR") is None and card.find(V + "BDAY") is None
    assert [e.findtext(V + "USERID") for e in card.findall(V + "EMAIL")] == ["a@work.example"]
    assert card.findtext(V + "TITLE") == "Engineer"
    assert card.find("{urn:example:private}x") is None


def test_workgroup_adds_mobile_and_friends_see_everything() -> None:
    assert phones(shown(Level.WORKGROUP)) == ["1", "2"]
    everything = shown(Level.FRIENDS)
    assert len(everything) == len(CARD)
    assert phones(everything) == ["1", "2", "3"] and everything.findtext(V + "BDAY")


def test_blocked_sees_no_part_at_all() -> None:
    assert card_parts(Level.BLOCKED) == frozenset()
    assert len(shown(Level.BLOCKED, "Alice")) == 0


def test_display_name_does_not_replace_the_users_own_fn() -> None:
    own = ET.fromstring("<vCard xmlns='vcard-temp'><FN>Ali</FN></vCard>")
    card = visible_card(own, card_parts(Level.COLLEAGUES), "Alice Liddell")
    assert card.findtext(V + "FN") == "Ali" and card.findtext(V + "NICKNAME") == "Alice Liddell"


def test_summary_has_the_photo_sha1_fn_and_work_email() -> None:
    s = summarize(CARD)
    assert s.photo_sha1 == hashlib.sha1(b"png-bytes").hexdigest()
    assert s.email == "a@work.example" and s.fn is None


def test_photo_that_is_not_base64_is_a_bad_request() -> None:
    bad = ET.fromstring("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>@@@</BINVAL></PHOTO></vCard>")
    with pytest.raises(StanzaError) as e:
        summarize(bad)
    assert e.value.condition == "bad-request"


# -- directory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeAccount:
    username: str
    name: str
    enabled: bool = True


class FakeAccounts:
    domain = "example.test"

    def __init__(self, *accts: FakeAccount) -> None:
        self._by = {a.username: a for a in accts}

    def get(self, username: str) -> FakeAccount | None:
        return self._by.get(username)

    def all(self) -> list[FakeAccount]:
        return sorted(self._by.values(), key=lambda a: a.username)


def test_split_name() -> None:
    assert split_name("Robert Brown") == ("Robert", "Brown")
    assert split_name("Mary Ann Smith") == ("Mary Ann", "Smith")
    assert split_name("Cher") == ("Cher", "")


def test_substring_in_any_case_on_user_name_or_display_name() -> None:
    d = Directory(
        FakeAccounts(
            FakeAccount("rbrown", "Robert Brown"),
            FakeAccount("bob", ""),
            FakeAccount("roberta", "Roberta White", enabled=False),
        )
    )
    assert [e.username for e in d.search(Query(text="ROB")).entries] == ["rbrown"]
    assert [e.username for e in d.search(Query(text="bo")).entries] == ["bob"]
    assert [e.username for e in d.search(Query(last="brow", first="rob")).entries] == ["rbrown"]
    assert d.search(Query(first="Brown")).entries == []
    assert [e.username for e in d.search(Query(nick="BROWN")).entries] == ["rbrown"]


def test_cards_full_name_and_email_are_used_when_the_admin_gave_no_name() -> None:
    d = Directory(FakeAccounts(FakeAccount("u1", "")), lambda u: ("Una Smith", "una@work.example"))
    (e,) = d.search(Query(text="una s")).entries
    assert (e.name, e.last, e.email) == ("Una Smith", "Smith", "una@work.example")
    assert d.search(Query(email="work.example")).total == 1


def test_results_are_capped_and_counted() -> None:
    accts = FakeAccounts(*(FakeAccount(f"user{i:03}", f"Staff {i}") for i in range(60)))
    d = Directory(accts, limit=50)
    r = d.search(Query(text="staff"))
    assert len(r.entries) == 50 and r.total == 60 and r.truncated
    assert not d.search(Query(text="user001")).truncated


def test_hidden_users_are_left_out() -> None:
    d = Directory(FakeAccounts(FakeAccount("a", "Ann"), FakeAccount("b", "Anna")))
    assert [e.username for e in d.search(Query(text="ann"), hidden=lambda u: u == "a").entries] == [
        "b"
    ]


def test_matches_lists_every_match_in_user_name_order_for_paging() -> None:
    accts = FakeAccounts(*(FakeAccount(f"user{i:03}", f"Staff {i}") for i in reversed(range(60))))
    d = Directory(accts, limit=50)
    found = d.matches(Query(text="staff"), hidden=lambda u: u == "user007")
    assert [e.username for e in found] == [f"user{i:03}" for i in range(60) if i != 7]
