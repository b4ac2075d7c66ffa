"""The server's certificate: the admin's pair, or a self-signed one made at first start.

DESIGN §8/§9: with tls.cert and tls.key empty, a self-signed pair for the domain and its
conference. and upload. names is made in data_dir and reused from then on.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger

from standard_edition.config import Config, ConfigError

SELF_SIGNED_CERT = "cert.pem"
SELF_SIGNED_KEY = "key.pem"
VALID_DAYS = 825  # the longest lifetime common clients accept for a server certificate
WARN_DAYS = 30


def service_names(domain: str) -> list[str]:
    """The DNS names the certificate must cover (DESIGN §8)."""
    return [domain, f"conference.{domain}", f"upload.{domain}"]


def ensure_certificate(cfg: Config, log: Logger) -> tuple[Path, Path]:
    """The (cert, key) PEM paths to serve with; ConfigError with one line if they are unusable."""
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        cert = _load_pair(cfg.tls_cert, cfg.tls_key, "tls.cert", "tls.key")
        _warn_expiry(cert, cfg.tls_cert, log, self_signed=False)
        return cfg.tls_cert, cfg.tls_key

    cert_path, key_path = cfg.data_dir / SELF_SIGNED_CERT, cfg.data_dir / SELF_SIGNED_KEY
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as e:
        raise ConfigError(f"data_dir: cannot create {cfg.data_dir}: {e.strerror}") from None
    if cert_path.exists() and key_path.exists():
        cert = _load_pair(cert_path, key_path, "tls.cert", "tls.key")
        reason = _why_remake(cert, cfg.domain)
        if reason is None:
            _warn_expiry(cert, cert_path, log, self_signed=True)
            return cert_path, key_path
        log.warn(
            "self-signed certificate {path}: {reason}; making a new one",
            path=cert_path,
            reason=reason,
        )
    elif cert_path.exists() or key_path.exists():
        log.warn(
            "self-signed certificate in {dir}: only half of the pair is there; making a new one",
            dir=cfg.data_dir,
        )
    make_self_signed(cfg.domain, cert_path, key_path)
    log.info(
        "made a self-signed certificate {path} for {names}; clients will ask to accept it",
        path=cert_path,
        names=", ".join(service_names(cfg.domain)),
    )
    return cert_path, key_path


def make_self_signed(domain: str, cert_path: Path, key_path: Path) -> None:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate for the domain."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [_a_label(n) for n in service_names(domain)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clients' clock skew
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        # serverAuth for clients; clientAuth too, as XMPP servers present it to each other
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # the key first: a pair cut in half by a crash is noticed and remade at the next start
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def server_tls_options(cert_path: Path, key_path: Path) -> CertificateOptions:
    """Twisted TLS options for the listeners: this pair (and any chain after the leaf), TLS 1.2+."""
    certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    # cryptography objects, which pyOpenSSL takes directly (its own X509/PKey are deprecated)
    options = CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=certs[0],  # type: ignore[arg-type]
        extraCertChain=certs[1:],  # type: ignore[arg-type]
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    # Twisted's own ALPN callback answers a client offering protocols we do not name with an
    # empty selection, which OpenSSL turns into a fatal internal_error alert: Prosody (ALPN
    # "xmpp-server") and XEP-0368 clients ("xmpp-client") could not connect at all. Go on
    # without ALPN instead; the context is cached, so every connection of these options has it.
    options.getContext().set_alpn_select_callback(_no_alpn)
    return options


def _no_alpn(connection: SSL.Connection, offered: list[bytes]) -> object:
    """Accept the handshake whatever the client offers over ALPN, selecting no protocol."""
    return SSL.NO_OVERLAPPING_PROTOCOLS


def certificate_der(cert_path: Path) -> bytes:
    """The leaf certificate of a PEM file, DER-encoded (what the TLS handshake sends)."""
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    return cert.public_bytes(serialization.Encoding.DER)


def server_end_point_hash(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1 tls-server-end-point: the certificate hashed with its signature's hash,
    SHA-256 when that is MD5 or SHA-1; ValueError where RFC 5929 leaves it undefined."""
    cert = x509.load_der_x509_certificate(cert_der)
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None:
        # e.g. Ed25519: "uses no hash functions", so the binding is undefined (RFC 5929 §4.1)
        raise ValueError("tls-server-end-point is undefined for this certificate's signature")
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


# -- helpers -----------------------------------------------------------------------------------


def _load_pair(cert_path: Path, key_path: Path, cert_key: str, key_key: str) -> x509.Certificate:
    """Read and check a PEM pair; ConfigError naming the config key on any problem."""
    cert_pem = _read(cert_path, cert_key)
    key_pem = _read(key_path, key_key)
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise ConfigError(f"{cert_key}: {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"{key_key}: {key_path}: the key is encrypted; give it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_key}: {key_path}: not a PEM private key") from None
    if not _same_public_key(cert, key.public_key()):
        raise ConfigError(f"{key_key}: {key_path} is not the key of {cert_path}")
    return cert


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{key}: {path}: cannot read: {e.strerror}") from None


def _same_public_key(cert: x509.Certificate, public_key: object) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.DER, fmt)
        == public_key.public_bytes(serialization.Encoding.DER, fmt)  # type: ignore[attr-defined]
    )


def _why_remake(cert: x509.Certificate, domain: str) -> str | None:
    """Why a self-signed certificate of ours no longer fits, or None if it still does."""
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        return "it has expired"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    wanted = {_a_label(n) for n in service_names(domain)}
    if not wanted <= names:
        return f"it is not for {domain} (the domain changed?)"
    return None


def _warn_expiry(cert: x509.Certificate, path: Path, log: Logger, *, self_signed: bool) -> None:
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    if left > datetime.timedelta(days=WARN_DAYS):
        return
    hint = (
        "delete it and its key to get a new one at the next start"
        if self_signed
        else "renew it (tls.cert, tls.key)"
    )
    if left.total_seconds() <= 0:
        log.warn(
            "certificate {path} has expired; clients will refuse it: {hint}", path=path, hint=hint
        )
    else:
        log.warn(
            "certificate {path} expires in {days} days: {hint}",
            path=path,
            days=left.days,
            hint=hint,
        )


def _a_label(name: str) -> str:
    """A DNS name as certificates carry it (IDNA A-labels)."""
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"domain: {name!r} cannot be written as an IDNA name") from None


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits the mode asked for
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
