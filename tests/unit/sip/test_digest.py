"""Server-side digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760)."""

from __future__ import annotations

import hashlib

from standard_edition.sip.digest import (
    Challenge,
    NonceCounts,
    Verdict,
    compute_response,
    make_challenge,
    make_nonce,
    nonce_age,
    verify,
)
from standard_edition.sip.message import parse_auth

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "example.test"
NOW = 1_700_000_000.0


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def authorization(
    nonce: str,
    *,
    password: str = "secret",
    algorithm: str = "MD5",
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
) -> dict[str, str]:
    """What a client sends, computed independently of the module under test."""
    h = md5 if algorithm == "MD5" else sha256
    ha1 = h(f"carol:{REALM}:{password}")
    ha2 = h("REGISTER:sip:example.test")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    value = (
        f'Digest username="carol", realm="{REALM}", nonce="{nonce}", uri="sip:example.test", '
        f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc}'
    )
    return parse_auth(value).params


HA1_MD5 = md5(f"carol:{REALM}:secret")
HA1_SHA256 = sha256(f"carol:{REALM}:secret")


def test_rfc7616_example_responses() -> None:
    # RFC 7616 §3.9.1: the same exchange with SHA-256 and with MD5
    args = {
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "method": "GET",
        "uri": "/dir/index.html",
        "nc": "00000001",
        "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    }
    a1 = "Mufasa:http-auth@example.org:Circle of Life"
    assert (
        compute_response("SHA-256", sha256(a1), **args)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert compute_response("MD5", md5(a1), **args) == "8ca523f5e9506fed4657c9700eebdbec"


def test_md5_response_matches_a_hand_computed_one() -> None:
    nonce = make_nonce(SECRET, NOW)
    params = authorization(nonce)
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW + 1, realm=REALM) is Verdict.OK


def test_sha256_per_rfc8760() -> None:
    nonce = make_nonce(SECRET, NOW)
    params = authorization(nonce, algorithm="SHA-256")
    assert verify(params, "REGISTER", HA1_SHA256, SECRET, NOW, realm=REALM) is Verdict.OK
    # the MD5 HA1 cannot answer a SHA-256 exchange
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW, realm=REALM) is Verdict.BAD


def test_wrong_password_is_bad() -> None:
    params = authorization(make_nonce(SECRET, NOW), password="guess")
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW) is Verdict.BAD


def test_wrong_method_or_realm_is_bad() -> None:
    params = authorization(make_nonce(SECRET, NOW))
    assert verify(params, "MESSAGE", HA1_MD5, SECRET, NOW) is Verdict.BAD
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW, realm="other.test") is Verdict.BAD


def test_old_nonce_with_right_password_is_stale() -> None:
    params = authorization(make_nonce(SECRET, NOW))
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW + 301) is Verdict.STALE
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW + 299) is Verdict.OK


def test_old_nonce_with_wrong_password_is_bad_not_stale() -> None:
    params = authorization(make_nonce(SECRET, NOW), password="guess")
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW + 1000) is Verdict.BAD


def test_nonce_from_another_secret_is_bad() -> None:
    params = authorization(make_nonce(b"another secret", NOW))
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW) is Verdict.BAD


def test_forged_nonce_is_bad() -> None:
    nonce = make_nonce(SECRET, NOW)
    forged = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    assert nonce_age(forged, SECRET, NOW) is None
    assert verify(authorization(forged), "REGISTER", HA1_MD5, SECRET, NOW) is Verdict.BAD
    assert nonce_age("short", SECRET, NOW) is None


def test_replayed_nonce_count_is_stale() -> None:
    counts = NonceCounts()
    nonce = make_nonce(SECRET, NOW)
    first = authorization(nonce, nc="00000001")
    assert verify(first, "REGISTER", HA1_MD5, SECRET, NOW, counts=counts) is Verdict.OK
    assert verify(first, "REGISTER", HA1_MD5, SECRET, NOW, counts=counts) is Verdict.STALE
    second = authorization(nonce, nc="00000002")
    assert verify(second, "REGISTER", HA1_MD5, SECRET, NOW, counts=counts) is Verdict.OK


def test_nonce_counts_are_bounded() -> None:
    counts = NonceCounts(max_entries=3)
    for i in range(10):
        assert counts.advance(f"n{i}", 1)
    assert len(counts) == 3


def test_missing_qop_is_refused_unless_rfc2069_is_allowed() -> None:
    nonce = make_nonce(SECRET, NOW)
    ha2 = md5("REGISTER:sip:example.test")
    params = {
        "username": "carol",
        "realm": REALM,
        "nonce": nonce,
        "uri": "sip:example.test",
        "response": md5(f"{HA1_MD5}:{nonce}:{ha2}"),
    }
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW) is Verdict.BAD
    assert verify(params, "REGISTER", HA1_MD5, SECRET, NOW, allow_rfc2069=True) is Verdict.OK


def test_challenge_header_is_parseable_and_carries_the_stale_flag() -> None:
    ch = make_challenge(REALM, SECRET, NOW, "SHA-256", stale=True, opaque="op")
    assert isinstance(ch, Challenge)
    parsed = parse_auth(str(ch))
    assert parsed.scheme == "Digest"
    assert parsed.params == {
        "realm": REALM,
        "nonce": ch.nonce,
        "opaque": "op",
        "algorithm": "SHA-256",
        "qop": "auth",
        "stale": "true",
    }
    assert nonce_age(ch.nonce, SECRET, NOW + 7) == 7


def test_nonces_are_unique() -> None:
    assert len({make_nonce(SECRET, NOW) for _ in range(100)}) == 100
