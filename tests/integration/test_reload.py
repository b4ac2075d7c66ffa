"""SIGHUP (systemctl reload) and the readiness messages of systemd's Type=notify."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from standard_edition import tls

from .scram_plus_client import XmppConnection, scram_plus_login
from .server import DOMAIN, PASSWORD, Server


def der(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def served_direct_tls(server: Server) -> bytes:
    """The certificate a new direct-TLS connection gets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", server.ports["c2s_tls"]), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server.domain) as s,
    ):
        cert = s.getpeercert(binary_form=True)
    assert cert
    return cert


def served_starttls(server: Server) -> bytes:
    """The certificate a new STARTTLS connection gets."""
    conn = XmppConnection("127.0.0.1", server.ports["c2s"], server.domain, direct_tls=False)
    try:
        assert conn.ch.tls is not None
        cert = conn.ch.tls.get_peer_certificate(as_cryptography=True)
        assert cert is not None
        return cert.public_bytes(serialization.Encoding.DER)
    finally:
        conn.close()


def hang_up(server: Server, expect: str, timeout: float = 15) -> None:
    """SIGHUP, then wait until the log says `expect`."""
    seen = server.log_path.read_text(errors="replace").count(expect)
    os.kill(server.pid, signal.SIGHUP)
    end = time.monotonic() + timeout
    while server.log_path.read_text(errors="replace").count(expect) <= seen:
        assert server.running, server.log_tail()
        assert time.monotonic() < end, f"no {expect!r} after SIGHUP:\n{server.log_tail()}"
        time.sleep(0.1)


@pytest.fixture
def own_certificate(tmp_path: Path) -> tuple[Path, Path, str]:
    """An admin's certificate pair outside data_dir, and the config lines naming it."""
    cert, key = tmp_path / "admin-cert.pem", tmp_path / "admin-key.pem"
    tls.make_self_signed(DOMAIN, cert, key)
    return cert, key, f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'


def test_sighup_serves_the_renewed_certificate_to_new_connections(
    make_server: Callable[..., Server], own_certificate: tuple[Path, Path, str]
) -> None:
    cert, key, toml = own_certificate
    server = make_server(toml)
    server.add_user("alice")
    first = der(cert)
    assert served_direct_tls(server) == first

    tls.make_self_signed(DOMAIN, cert, key)  # renewed in place, as a deploy hook would
    hang_up(server, "reload: done")

    renewed = der(cert)
    assert renewed != first
    assert served_direct_tls(server) == renewed
    assert served_starttls(server) == renewed
    # RFC 5929 tls-server-end-point now binds to the renewed certificate
    r = scram_plus_login(
        "127.0.0.1",
        server.ports["c2s"],
        server.domain,
        "alice",
        PASSWORD,
        "SHA-256",
        "tls-server-end-point",
    )
    assert r.success, r.condition


def test_sighup_keeps_the_certificate_in_use_when_the_new_one_is_unusable(
    make_server: Callable[..., Server], own_certificate: tuple[Path, Path, str]
) -> None:
    cert, _, toml = own_certificate
    server = make_server(toml)
    first = der(cert)

    cert.write_text("not a certificate\n")
    hang_up(server, "keeping the certificate in use")

    assert served_direct_tls(server) == first
    assert server.ctl("status").returncode == 0


def test_sighup_names_the_settings_that_wait_for_a_restart(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    with server.config.open("a") as f:
        f.write("\n[xmpp]\nversion = true\n")
    hang_up(server, "reload: done")
    assert "applied only at the next restart: xmpp_version" in server.log_tail()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on for a Type=notify service; the server inherits $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"se-test-notify-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_systemd_hears_ready_reloading_and_stopping(
    make_server: Callable[..., Server], notify_socket: socket.socket
) -> None:
    server = make_server()

    def next_state() -> list[str]:
        return notify_socket.recv(4096).decode().splitlines()

    assert "READY=1" in next_state()  # sent once every listener is up
    os.kill(server.pid, signal.SIGHUP)
    assert next_state() == ["RELOADING=1"]
    assert next_state() == ["READY=1"]
    assert server.stop() == 0
    assert next_state() == ["STOPPING=1"]
