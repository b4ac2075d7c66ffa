"""Digest authentication of SIP requests and the brute-force brake (RFC 3261 §22)."""

from __future__ import annotations

import hashlib

from twisted.internet.task import Clock

from standard_edition.sip.auth import MAX_DELAY, Authenticator, Throttle
from standard_edition.sip.digest import compute_response
from standard_edition.sip.message import Headers, Request, parse_auth


class _Creds:
    ha1_md5 = hashlib.md5(b"carol:example.test:pw").hexdigest()
    ha1_sha256 = hashlib.sha256(b"carol:example.test:pw").hexdigest()


class _Account:
    enabled = True
    credentials = _Creds()


class _Accounts:
    def get(self, name: str):
        return _Account() if name == "carol" else None


def register(auth: str | None = None) -> Request:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"),
            ("From", "<sip:carol@example.test>;tag=1"),
            ("To", "<sip:carol@example.test>"),
            ("Call-ID", "c"),
            ("CSeq", "1 REGISTER"),
        ]
    )
    if auth:
        h.add("Authorization", auth)
    return Request("REGISTER", "sip:example.test", h)


def answer(
    challenge: str, user: str = "carol", ha1: str = _Creds.ha1_md5, nc: str = "00000001"
) -> str:
    ch = parse_auth(challenge)
    alg = ch.get("algorithm") or "MD5"
    nonce = ch.get("nonce") or ""
    resp = compute_response(alg, ha1, nonce, "REGISTER", "sip:example.test", nc=nc, cnonce="cn")
    return (
        f'Digest username="{user}", realm="example.test", nonce="{nonce}", '
        f'uri="sip:example.test", response="{resp}", algorithm={alg}, qop=auth, nc={nc}, '
        'cnonce="cn"'
    )


def make(clock: Clock, algorithms: tuple[str, ...] = ("MD5",)) -> Authenticator:
    return Authenticator(clock, _Accounts(), "example.test", algorithms)  # type: ignore[arg-type]


def test_challenge_then_success_md5_first_then_sha256() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth = make(clock, ("SHA-256", "MD5"))
    res = auth.check(register(), "192.0.2.1", proxy=False)
    assert res.user is None and [n for n, _ in res.challenge] == ["WWW-Authenticate"] * 2
    assert "algorithm=MD5" in res.challenge[0][1] and "algorithm=SHA-256" in res.challenge[1][1]
    ok = auth.check(register(answer(res.challenge[1][1], ha1=_Creds.ha1_sha256)), "a", proxy=False)
    assert ok.user == "carol"


def test_expired_nonce_is_stale_and_a_replayed_count_too() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth = make(clock)
    ch = auth.check(register(), "a", proxy=False).challenge[0][1]
    creds = answer(ch)
    assert auth.check(register(creds), "a", proxy=False).user == "carol"
    replay = auth.check(register(creds), "a", proxy=False)
    assert replay.user is None and "stale=true" in replay.challenge[0][1]
    clock.advance(auth.lifetime + 1)
    late = auth.check(register(answer(ch, nc="00000002")), "a", proxy=False)
    assert late.user is None and "stale=true" in late.challenge[0][1]


def test_wrong_password_and_unknown_user_are_the_same_refusal() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth = make(clock)
    ch = auth.check(register(), "a", proxy=False).challenge[0][1]
    wrong = auth.check(register(answer(ch, ha1="0" * 32)), "a", proxy=False)
    nobody = auth.check(register(answer(ch, user="nobody")), "b", proxy=False)
    assert wrong.forbidden and nobody.forbidden


def test_failures_slow_down_per_address_and_per_account_and_are_forgotten() -> None:
    clock = Clock()
    t = Throttle(clock)
    for _ in range(2):
        t.failed("addr:1", "user:carol")
    assert t.delay("addr:1") == 0.0  # a mistyped password or two costs nothing
    t.failed("addr:1", "user:carol")
    assert t.delay("addr:1") > 0 and t.delay("addr:2", "user:carol") > 0  # the account too
    assert t.delay("addr:2", "user:bob") == 0.0
    for _ in range(20):
        t.failed("addr:1")
    assert t.delay("addr:1") == MAX_DELAY
    clock.advance(3600)
    assert t.delay("addr:1") == 0.0


def test_a_failing_phone_does_not_hold_back_its_colleagues_behind_the_same_address() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth = make(clock)
    office = "198.51.100.7"
    ch = auth.check(register(), office, proxy=False).challenge[0][1]
    for i in range(10):  # someone's phone keeps an old password (unknown users count alike)
        bad = auth.check(
            register(answer(ch, user="nobody", nc=f"{i + 1:08x}")), office, proxy=False
        )
        assert bad.forbidden
    assert bad.delay > 0  # its failures are slowed down
    ok = auth.check(register(answer(ch)), office, proxy=False)
    assert ok.user == "carol" and ok.delay == 0.0
    # a wrong password for carol from there is still held back by the address's record
    wrong = auth.check(register(answer(ch, ha1="0" * 32, nc="00000002")), office, proxy=False)
    assert wrong.forbidden and wrong.delay > 0


def test_an_account_under_attack_is_slowed_down_even_when_the_password_is_right() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    auth = make(clock)
    ch = auth.check(register(), "a", proxy=False).challenge[0][1]
    for i in range(6):
        source = f"203.0.113.{i}"  # spread over addresses: the account's own count grows
        assert auth.check(
            register(answer(ch, ha1="0" * 32, nc=f"{i + 1:08x}")), source, proxy=False
        ).forbidden
    ok = auth.check(register(answer(ch, nc="00000010")), "192.0.2.50", proxy=False)
    assert ok.user == "carol" and ok.delay > 0
