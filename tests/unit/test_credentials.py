"""Stored credentials: SCRAM keys and SIP HA1s made from a password, and nothing that is it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from standard_edition.core.credentials import (
    SCRAM_ITERATIONS,
    Credentials,
    check_password,
    decoy_credentials,
    derive,
    scram_keys,
)


@pytest.fixture(scope="module")
def alice() -> Credentials:
    return derive("alice", "example.test", "secret")


def test_ha1_md5_is_md5_of_user_realm_password(alice: Credentials) -> None:
    # RFC 2617 §3.2.2.2: A1 = username ":" realm ":" passwd; realm is the domain
    # expected values computed outside Python: printf 'alice:example.test:secret' | md5sum
    assert alice.ha1_md5 == "4842575394a190ef4c973253ba19099c"
    # RFC 7616 §3.4.2: the same A1 with SHA-256 (| sha256sum)
    assert alice.ha1_sha256 == "cc0140d97f2b011fee9f86aa26b63fc472268267b652dcea0675e15d9da92468"


def test_scram_keys_follow_rfc_5802(alice: Credentials) -> None:
    for hash_name, keys in (("sha1", alice.scram_sha1), ("sha256", alice.scram_sha256)):
        salted = hashlib.pbkdf2_hmac(hash_name, b"secret", keys.salt, keys.iterations)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        assert keys.stored_key == hashlib.new(hash_name, client_key).digest()
        assert keys.server_key == hmac.new(salted, b"Server Key", hash_name).digest()
        assert keys.iterations == SCRAM_ITERATIONS
        assert len(keys.salt) == 16


def test_rfc_7677_salted_keys_reproduce_the_example_proof() -> None:
    # RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096
    keys = scram_keys("sha256", "pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    auth = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    signature = hmac.new(keys.server_key, auth, "sha256").digest()
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_each_derivation_gets_fresh_salts(alice: Credentials) -> None:
    again = derive("alice", "example.test", "secret")
    assert again.scram_sha256.salt != alice.scram_sha256.salt
    assert again.scram_sha1.salt != again.scram_sha256.salt
    assert again.ha1_md5 == alice.ha1_md5  # digest HA1 has no salt by design (RFC 2617)


def test_right_password_checks_and_wrong_one_does_not(alice: Credentials) -> None:
    assert check_password(alice, "secret")
    assert not check_password(alice, "Secret")
    assert not check_password(alice, "")


def test_password_is_not_stored(alice: Credentials) -> None:
    assert "secret" not in json.dumps(alice.to_json())


def test_json_round_trip_for_sqlite(alice: Credentials) -> None:
    text = json.dumps(alice.to_json())
    back = Credentials.from_json(json.loads(text))
    assert back == alice
    assert check_password(back, "secret")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("scram_sha1"),
        lambda d: d.update(ha1_md5="xyz"),
        lambda d: d.update(ha1_sha256=None),
        lambda d: d["scram_sha256"].update(salt="not base64!"),
        lambda d: d["scram_sha256"].update(iterations="4096"),
        lambda d: d["scram_sha256"].update(iterations=0),
        lambda d: d["scram_sha1"].update(stored_key=base64.b64encode(b"short").decode()),
    ],
)
def test_damaged_json_is_refused(alice: Credentials, damage) -> None:  # type: ignore[no-untyped-def]
    d = json.loads(json.dumps(alice.to_json()))
    damage(d)
    with pytest.raises(ValueError, match="credentials"):
        Credentials.from_json(d)


def test_from_json_refuses_a_non_object() -> None:
    with pytest.raises(ValueError):
        Credentials.from_json([1, 2])


def test_decoys_are_stable_per_name_and_look_like_real_ones(alice: Credentials) -> None:
    a = decoy_credentials(b"k" * 32, "mallory")
    assert a == decoy_credentials(b"k" * 32, "mallory")
    assert a != decoy_credentials(b"k" * 32, "mallet")
    assert a != decoy_credentials(b"j" * 32, "mallory")
    for fake, real in ((a.scram_sha1, alice.scram_sha1), (a.scram_sha256, alice.scram_sha256)):
        assert len(fake.salt) == len(real.salt)
        assert len(fake.stored_key) == len(real.stored_key)
        assert len(fake.server_key) == len(real.server_key)
        assert fake.iterations == real.iterations
    assert len(a.ha1_md5) == 32 and len(a.ha1_sha256) == 64
    assert Credentials.from_json(a.to_json()) == a


def test_no_password_opens_a_decoy() -> None:
    fake = decoy_credentials(b"k" * 32, "mallory")
    assert not check_password(fake, "")
    assert not check_password(fake, "secret")


def test_unknown_hash_is_refused() -> None:
    with pytest.raises(ValueError):
        scram_keys("md5", "x", b"salt", 1)
