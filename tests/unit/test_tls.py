"""The server certificate: made once, reused, checked; TLS 1.2 minimum; RFC 5929 binding hash."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from standard_edition import config, tls
from standard_edition.config import Config, ConfigError


class RecordingLog:
    """Stands in for twisted.logger.Logger: keeps what was logged, formatted."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _emit(self, level: str, fmt: str, **kw: Any) -> None:
        self.lines.append((level, fmt.format(**kw)))

    def info(self, fmt: str, **kw: Any) -> None:
        self._emit("info", fmt, **kw)

    def warn(self, fmt: str, **kw: Any) -> None:
        self._emit("warn", fmt, **kw)

    def warnings(self) -> list[str]:
        return [text for level, text in self.lines if level == "warn"]


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    f = tmp_path / "config.toml"
    f.write_text('domain = "example.test"\ndata_dir = "data"\n')
    return config.load(f)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_self_signed_pair_is_made_at_first_start(cfg: Config) -> None:
    log = RecordingLog()
    cert_path, key_path = tls.ensure_certificate(cfg, log)  # type: ignore[arg-type]
    assert (cert_path, key_path) == (cfg.data_dir / "cert.pem", cfg.data_dir / "key.pem")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.data_dir.stat().st_mode) == 0o750
    cert = load_cert(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "example.test",
        "conference.example.test",
        "upload.example.test",
    ]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=824) < lifetime <= datetime.timedelta(days=825)
    assert not log.warnings()


def test_self_signed_pair_is_reused(cfg: Config) -> None:
    log = RecordingLog()
    cert_path, key_path = tls.ensure_certificate(cfg, log)  # type: ignore[arg-type]
    first = (cert_path.read_bytes(), key_path.read_bytes())
    assert tls.ensure_certificate(cfg, log) == (cert_path, key_path)  # type: ignore[arg-type]
    assert (cert_path.read_bytes(), key_path.read_bytes()) == first


def test_a_new_domain_gets_a_new_self_signed_pair(cfg: Config) -> None:
    log = RecordingLog()
    cert_path, _ = tls.ensure_certificate(cfg, log)  # type: ignore[arg-type]
    tls.ensure_certificate(replace(cfg, domain="chat.example.org"), log)  # type: ignore[arg-type]
    san = load_cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "chat.example.org" in san.value.get_values_for_type(x509.DNSName)
    assert any("not for chat.example.org" in w for w in log.warnings())


def test_half_a_pair_is_remade(cfg: Config) -> None:
    log = RecordingLog()
    cert_path, key_path = tls.ensure_certificate(cfg, log)  # type: ignore[arg-type]
    key_path.unlink()
    tls.ensure_certificate(cfg, log)  # type: ignore[arg-type]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert load_cert(cert_path).public_key() == key.public_key()


def make_pair(
    tmp_path: Path, days: int, algorithm: Any = None, key: Any = None
) -> tuple[Path, Path]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, algorithm)
    )
    c, k = tmp_path / "admin-cert.pem", tmp_path / "admin-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_the_admins_pair_is_used_as_given(cfg: Config, tmp_path: Path) -> None:
    c, k = make_pair(tmp_path, 365, hashes.SHA256())
    log = RecordingLog()
    assert tls.ensure_certificate(replace(cfg, tls_cert=c, tls_key=k), log) == (c, k)  # type: ignore[arg-type]
    assert not (cfg.data_dir / "cert.pem").exists()
    assert not log.warnings()


def test_the_admins_pair_near_expiry_is_warned_about(cfg: Config, tmp_path: Path) -> None:
    c, k = make_pair(tmp_path, 10, hashes.SHA256())
    log = RecordingLog()
    tls.ensure_certificate(replace(cfg, tls_cert=c, tls_key=k), log)  # type: ignore[arg-type]
    [warning] = log.warnings()
    assert "expires in" in warning and "days" in warning


def test_a_missing_admin_cert_names_the_key(cfg: Config, tmp_path: Path) -> None:
    c, k = make_pair(tmp_path, 365, hashes.SHA256())
    with pytest.raises(ConfigError, match=r"^tls\.cert: .*no such file"):
        tls.ensure_certificate(
            replace(cfg, tls_cert=tmp_path / "nope.pem", tls_key=k), RecordingLog()
        )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^tls\.key: .*no such file"):
        tls.ensure_certificate(
            replace(cfg, tls_cert=c, tls_key=tmp_path / "nope.pem"), RecordingLog()
        )  # type: ignore[arg-type]


def test_a_key_that_does_not_fit_names_the_key(cfg: Config, tmp_path: Path) -> None:
    c, _ = make_pair(tmp_path, 365, hashes.SHA256())
    other = tmp_path / "other"
    other.mkdir()
    _, k = make_pair(other, 365, hashes.SHA256())
    with pytest.raises(ConfigError, match=r"^tls\.key: .* is not the key of "):
        tls.ensure_certificate(replace(cfg, tls_cert=c, tls_key=k), RecordingLog())  # type: ignore[arg-type]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"^tls\.cert: .*not a PEM certificate"):
        tls.ensure_certificate(replace(cfg, tls_cert=garbage, tls_key=k), RecordingLog())  # type: ignore[arg-type]


# -- channel binding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
    ],
)
def test_server_end_point_hash_uses_the_signature_hash(
    tmp_path: Path, algorithm: Any, digest: Any
) -> None:
    c, _ = make_pair(tmp_path, 365, algorithm)
    der = tls.certificate_der(c)
    assert der == load_cert(c).public_bytes(serialization.Encoding.DER)
    assert tls.server_end_point_hash(der) == digest(der).digest()


SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")  # OID 1.2.840.113549.1.1.11


@pytest.mark.parametrize(("name", "oid_last"), [("sha1", 0x05), ("md5", 0x04)])
def test_server_end_point_hash_of_weak_signatures_is_sha256(
    tmp_path: Path, name: str, oid_last: int
) -> None:
    # cryptography no longer signs with SHA-1 or MD5: relabel an RSA/SHA-256 certificate's
    # signature algorithm (same OID length, so the DER stays valid; the signature is not checked)
    c, _ = make_pair(tmp_path, 365, hashes.SHA256(), rsa.generate_private_key(65537, 2048))
    der = tls.certificate_der(c)
    assert der.count(SHA256_WITH_RSA) == 2  # in the TBS certificate and around the signature
    weak = der.replace(SHA256_WITH_RSA, SHA256_WITH_RSA[:-1] + bytes([oid_last]))
    assert x509.load_der_x509_certificate(weak).signature_hash_algorithm.name == name  # type: ignore[union-attr]
    # RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256
    assert tls.server_end_point_hash(weak) == hashlib.sha256(weak).digest()


def test_server_end_point_hash_is_undefined_without_a_hash(tmp_path: Path) -> None:
    c, _ = make_pair(tmp_path, 365, None, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValueError):
        tls.server_end_point_hash(tls.certificate_der(c))


# -- the listeners' TLS ------------------------------------------------------------------------


def handshake(
    server_ctx: SSL.Context, client_max: int, alpn: list[bytes] | None = None
) -> SSL.Connection:
    """Run a TLS handshake in memory; raise SSL.Error if it fails."""
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.set_max_proto_version(client_max)
    client_ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    server, client = SSL.Connection(server_ctx), SSL.Connection(client_ctx)
    if alpn:
        client.set_alpn_protos(alpn)
    server.set_accept_state()
    client.set_connect_state()
    for _ in range(20):
        for side in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                side.do_handshake()
        for a, b in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                b.bio_write(a.bio_read(65536))
        try:
            client.do_handshake()
            server.do_handshake()
            return server
        except SSL.WantReadError:
            continue
    raise AssertionError("handshake did not finish")


def test_server_tls_options_serve_tls12_and_13_only(cfg: Config) -> None:
    cert_path, key_path = tls.ensure_certificate(cfg, RecordingLog())  # type: ignore[arg-type]
    ctx = tls.server_tls_options(cert_path, key_path).getContext()
    assert handshake(ctx, SSL.TLS1_3_VERSION).get_protocol_version_name() == "TLSv1.3"
    assert handshake(ctx, SSL.TLS1_2_VERSION).get_protocol_version_name() == "TLSv1.2"
    with pytest.raises(SSL.Error):
        handshake(ctx, SSL.TLS1_1_VERSION)


@pytest.mark.parametrize("offered", [[b"xmpp-server"], [b"xmpp-client"], [b"h2", b"http/1.1"]])
def test_a_client_offering_alpn_is_served_without_a_protocol(
    cfg: Config, offered: list[bytes]
) -> None:
    # Prosody offers "xmpp-server" on s2s, XEP-0368 clients "xmpp-client": Twisted's own ALPN
    # callback failed such handshakes with an internal_error alert
    cert_path, key_path = tls.ensure_certificate(cfg, RecordingLog())  # type: ignore[arg-type]
    options = tls.server_tls_options(cert_path, key_path)
    for version in (SSL.TLS1_3_VERSION, SSL.TLS1_2_VERSION):
        server = handshake(options.getContext(), version, offered)
        assert server.get_alpn_proto_negotiated() == b""
