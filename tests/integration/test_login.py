"""Logging in: TLS first, then SASL with every mechanism we offer, and the failures."""

from __future__ import annotations

import asyncio
import statistics
import time
import xml.etree.ElementTree as ET

import pytest

from . import rawxmpp
from .scram_plus_client import ScramClient, scram_plus_login
from .server import PASSWORD, Server
from .xmppclient import LoginFailed, Sessions

SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"
CB = "{urn:xmpp:sasl-cb:0}"
LIMITS = "{urn:xmpp:stream-limits:0}"
TLS = "{urn:ietf:params:xml:ns:xmpp-tls}"

ALL_MECHANISMS = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}
SLIXMPP_MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
TRANSPORTS = {"starttls": False, "direct-tls": True}


def parse_features(raw: bytes) -> ET.Element:
    """<stream:features/> as an element (the stream prefix is declared on the stream header)."""
    start = raw.index(b"<stream:features")
    wrapped = (
        b"<w xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        + raw[start:]
        + b"</w>"
    )
    return ET.fromstring(wrapped)[0]


def mechanisms(features: ET.Element) -> set[str]:
    return {m.text or "" for m in features.iter(f"{SASL}mechanism")}


# -- SCRAM arithmetic of our own -PLUS client (no server needed) --------------------------------


def test_scram_client_reproduces_rfc5802_sha1_vector():
    c = ScramClient("SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert c.client_first() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = c.client_final(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    assert final == (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    c.check_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_scram_client_reproduces_rfc7677_sha256_vector():
    c = ScramClient("SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = c.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    c.check_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_client_rejects_a_wrong_server_signature():
    c = ScramClient("SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    c.client_first()
    c.client_final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    with pytest.raises(Exception, match="signature"):
        c.check_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def test_scram_plus_gs2_header_carries_binding_type_and_data():
    c = ScramClient("SHA-256", "u", "p", gs2_flag="p", cb_type="tls-exporter", cb_data=b"\x01\x02")
    assert c.mechanism == "SCRAM-SHA-256-PLUS"
    assert c.client_first().startswith(b"p=tls-exporter,,n=u,r=")
    final = c.client_final(f"r={c.nonce}xyz,s=QSXCR+Q6sek8bf92,i=4096".encode())
    # base64("p=tls-exporter,," + 0x01 0x02)
    assert final.startswith(b"c=cD10bHMtZXhwb3J0ZXIsLAEC,")


# -- what the server offers, and when ----------------------------------------------------------


def test_sasl_is_not_offered_before_starttls(server: Server, run):
    async def check() -> tuple[bytes, bytes]:
        s, feats = await rawxmpp.open_stream(server.ports["c2s"], server.domain)
        # a client that tries anyway must not get in
        s.send(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            b"AGFsaWNlAENvcnJlY3QtSG9yc2UtNw==</auth>"
        )
        after, _ = await s.read_until_closed(5)
        s.close()
        return feats, after

    feats, after = run(check())
    f = parse_features(feats)
    assert f.find(f"{TLS}starttls") is not None, feats
    assert mechanisms(f) == set(), f"SASL offered before TLS: {feats!r}"
    assert b"<success" not in after, after
    assert b"<failure" in after or b"<stream:error" in after, after


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_after_tls_all_mechanisms_cb_types_and_size_limit_are_announced(
    server: Server, run, transport
):
    async def features() -> bytes:
        s, feats = await rawxmpp.open_stream(
            server.ports["c2s_tls" if TRANSPORTS[transport] else "c2s"],
            server.domain,
            direct_tls=TRANSPORTS[transport],
        )
        if not TRANSPORTS[transport]:
            feats = await rawxmpp.starttls(s)
        s.close()
        return feats

    raw = run(features())
    f = parse_features(raw)
    assert mechanisms(f) == ALL_MECHANISMS, raw
    assert f.find(f"{TLS}starttls") is None, "STARTTLS offered again inside TLS"
    cb_types = {c.get("type") for c in f.iter(f"{CB}channel-binding")}
    assert {"tls-exporter", "tls-server-end-point"} <= cb_types, raw  # XEP-0440
    max_bytes = f.find(f"{LIMITS}limits/{LIMITS}max-bytes")  # XEP-0478
    assert max_bytes is not None and max_bytes.text == "262144", raw


# -- slixmpp, a stock client -------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mechanism", SLIXMPP_MECHANISMS)
def test_stock_client_logs_in_with_each_mechanism(server: Server, run, mechanism, transport):
    (user,) = server.new_users("login")

    async def login() -> tuple[str, float]:
        async with Sessions(server) as ss:
            c = await ss.login(user, direct_tls=TRANSPORTS[transport], mechanisms=[mechanism])
            rtt = await c.plugin["xep_0199"].ping(jid=server.domain, timeout=10)
            return c.mechanism_used, rtt

    used, rtt = run(login())
    assert used == mechanism
    assert rtt < 10


def test_stock_client_plus_attempt_falls_back_to_scram_sha256(server: Server, run):
    """slixmpp's -PLUS wants tls-unique, which TLS 1.3 lacks: it falls back without a failure."""
    (user,) = server.new_users("fallback")

    async def login() -> tuple[str, list[str]]:
        async with Sessions(server) as ss:
            c = await ss.login(user)  # no restriction: the client picks from what is offered
            return c.mechanism_used, c.auth_failures

    used, failures = run(login())
    assert used == "SCRAM-SHA-256"
    assert failures == []


@pytest.mark.parametrize("mechanism", SLIXMPP_MECHANISMS)
def test_wrong_password_is_refused_not_authorized(server: Server, run, mechanism):
    (user,) = server.new_users("wrongpw")

    async def login() -> list[str]:
        async with Sessions(server) as ss:
            with pytest.raises(LoginFailed) as e:
                await ss.login(user, password="not-the-password", mechanisms=[mechanism])
            return e.value.conditions

    assert run(login()) == ["not-authorized"]


@pytest.mark.parametrize("mechanism", SLIXMPP_MECHANISMS)
def test_unknown_user_is_refused_like_a_wrong_password(server: Server, run, mechanism):
    async def login() -> list[str]:
        async with Sessions(server) as ss:
            with pytest.raises(LoginFailed) as e:
                await ss.login("nosuchuser", password=PASSWORD, mechanisms=[mechanism])
            return e.value.conditions

    assert run(login()) == ["not-authorized"]


def test_failed_login_takes_as_long_for_unknown_as_for_known_user(server: Server, run):
    """An attacker must not learn which accounts exist from how fast PLAIN fails."""
    (user,) = server.new_users("timing")

    async def attempt(name: str) -> float:
        s, _ = await rawxmpp.open_stream(server.ports["c2s"], server.domain)
        await rawxmpp.starttls(s)
        t0 = time.monotonic()
        got = await rawxmpp.auth_plain(s, name, "not-the-password")
        dt = time.monotonic() - t0
        s.close()
        assert b"<not-authorized" in got, got
        return dt

    async def measure() -> tuple[float, float]:
        known, unknown = [], []
        for _ in range(3):
            known.append(await attempt(user))
            unknown.append(await attempt("nosuchuser"))
        return statistics.median(known), statistics.median(unknown)

    known, unknown = run(measure())
    assert unknown >= 0.5 * known - 0.01, (
        f"known user fails in {known:.4f}s, unknown in {unknown:.4f}s"
    )


# -- SCRAM -PLUS with our own client over pyOpenSSL --------------------------------------------


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("hash_name", ["SHA-256", "SHA-1"])
def test_scram_plus_login_succeeds_with_channel_binding(
    server: Server, hash_name, cb_type, direct_tls
):
    (user,) = server.new_users("plus")
    port = server.ports["c2s_tls" if direct_tls else "c2s"]
    r = scram_plus_login(
        "127.0.0.1", port, server.domain, user, PASSWORD, hash_name, cb_type, direct_tls
    )
    assert r.success, f"SCRAM-{hash_name}-PLUS with {cb_type} failed: {r.condition}"
    assert r.jid.startswith(f"{user}@{server.domain}/")


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("hash_name", ["SHA-256", "SHA-1"])
def test_scram_plus_with_wrong_binding_data_is_refused(server: Server, hash_name, cb_type):
    (user,) = server.new_users("badcb")
    r = scram_plus_login(
        "127.0.0.1",
        server.ports["c2s"],
        server.domain,
        user,
        PASSWORD,
        hash_name,
        cb_type,
        tamper=True,
    )
    assert not r.success, "a session bound to another TLS channel was accepted (MITM possible)"
    assert r.condition == "not-authorized"


def test_scram_plus_naming_another_binding_type_than_its_data_is_refused(server: Server):
    (user,) = server.new_users("swapcb")
    r = scram_plus_login(
        "127.0.0.1",
        server.ports["c2s"],
        server.domain,
        user,
        PASSWORD,
        "SHA-256",
        "tls-exporter",
        claim_type="tls-server-end-point",
    )
    assert not r.success


def test_scram_plus_with_unsupported_binding_type_is_refused(server: Server):
    (user,) = server.new_users("uniquecb")
    r = scram_plus_login(
        "127.0.0.1",
        server.ports["c2s"],
        server.domain,
        user,
        PASSWORD,
        "SHA-256",
        "tls-exporter",
        claim_type="tls-unique",
    )
    assert not r.success


def test_scram_plus_with_wrong_password_is_refused(server: Server):
    (user,) = server.new_users("pluspw")
    r = scram_plus_login(
        "127.0.0.1", server.ports["c2s"], server.domain, user, "not-the-password", "SHA-256"
    )
    assert not r.success
    assert r.condition == "not-authorized"


def test_scram_downgrade_flag_y_is_refused_when_plus_was_offered(server: Server):
    """RFC 5802 §6: 'y' says the client thinks the server cannot bind; the server offered -PLUS,
    so someone stripped it on the way: fail."""
    (user,) = server.new_users("downgrade")
    r = scram_plus_login(
        "127.0.0.1", server.ports["c2s"], server.domain, user, PASSWORD, "SHA-256", gs2_flag="y"
    )
    assert not r.success


def test_scram_without_binding_flag_n_still_works_for_our_client(server: Server):
    (user,) = server.new_users("flagn")
    r = scram_plus_login(
        "127.0.0.1", server.ports["c2s"], server.domain, user, PASSWORD, "SHA-1", gs2_flag="n"
    )
    assert r.success, r.condition


# -- disabled accounts -------------------------------------------------------------------------


def test_disabled_account_is_logged_out_and_cannot_log_in_until_enabled(server: Server, run):
    (user,) = server.new_users("disabled")
    jid = f"{user}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            live = await ss.login(user, resource="live")
            await asyncio.to_thread(server.ctl_ok, "user", "disable", jid)
            assert await live.closed_by_server(10), "the disabled user's live session stayed open"

            with pytest.raises(LoginFailed) as e:
                await ss.login(user, resource="again")
            # RFC 6120 §6.5.1 account-disabled; not-authorized would do (one per mechanism tried)
            assert e.value.conditions, "no SASL failure for a disabled account"
            assert set(e.value.conditions) <= {"account-disabled", "not-authorized"}

            r = await asyncio.to_thread(
                scram_plus_login, "127.0.0.1", server.ports["c2s"], server.domain, user, PASSWORD
            )
            assert not r.success, "a disabled account logged in with SCRAM-SHA-256-PLUS"

            await asyncio.to_thread(server.ctl_ok, "user", "enable", jid)
            back = await ss.login(user, resource="back")
            assert await back.plugin["xep_0199"].ping(jid=server.domain, timeout=10) < 10

    run(scenario())
