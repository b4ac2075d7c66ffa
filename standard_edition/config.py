"""The configuration file: where it is, what it says, and whether it says it correctly.

One TOML file (DESIGN §8). Every key is declared in SCHEMA below with its type; an unknown
key or a bad value raises ConfigError with one line that names the key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SYSTEM_CONFIG = Path("/etc/se-appliance/config.toml")
DEFAULT_NAME = "default.toml"


class ConfigError(Exception):
    """A config file that cannot be used; str() is the one line shown to the admin."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    domain: str
    data_dir: Path
    source: str  # the file read, or "embedded default"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    listen: dict[str, tuple[Address, ...]] = field(default_factory=dict)
    edge: dict[str, tuple[Address, ...]] = field(default_factory=dict)
    federation_mode: str = "allowlist"
    federation_allow: tuple[str, ...] = ()
    federation_block: tuple[str, ...] = ()
    federation_hosts: dict[str, dict[str, Address]] = field(default_factory=dict)
    sip_digest: tuple[str, ...] = ("MD5",)
    im_offline: bool = True
    url_filter_mode: str = "off"  # [im.url_filter] (core/url_filter.py)
    url_filter_scope: str = "domains"
    url_filter_domains: tuple[str, ...] = ()
    url_filter_prefix: str = "[Link warning: links in this message were made unclickable]"
    archive_mode: str = "off"
    archive_users: tuple[str, ...] = ()
    archive_internal: bool = True
    archive_external: bool = True
    archive_critical: bool = False
    archive_keep_days: int = 0
    max_stanza_size: int = 262_144
    xmpp_version: bool = False
    privacy_default: bool = False
    resume_timeout: int = 300
    vcard_max_size: int = 131_072
    # edge rate limits (edge/limits.py EdgeLimits field names) and per-user policy defaults
    edge_limits: dict[str, float] = field(default_factory=dict)
    policy_outside_access: bool = True
    policy_federation_access: bool = True
    federation_connect_timeout: int = 20
    federation_idle_timeout: int = 300
    federation_dns: tuple[Address, ...] = ()  # resolvers for partner lookups; (): the system's
    # XEP-0363 file upload (upload/): "" URLs are derived from the listeners at start
    upload_url: str = ""
    upload_edge_url: str = ""
    upload_max_file_size: int = 104_857_600
    upload_quota: int = 1_073_741_824  # bytes per user; 0: no quota
    upload_expire_after: int = 2_592_000  # seconds; 0: kept until removed
    upload_blocked_extensions: tuple[str, ...] = ()
    upload_blocked_types: tuple[str, ...] = ()

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"

    @property
    def database(self) -> Path:
        return self.data_dir / "se.sqlite3"

    @property
    def archive_database(self) -> Path:
        return self.data_dir / "archive.sqlite3"


def locate(cli_path: str | None) -> Path | None:
    """The config file to use: --config, else $SE_CONFIG, else the system file; None: embedded."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get("SE_CONFIG")
    if env:
        return Path(env)
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return None


def load(path: Path | None) -> Config:
    """Read and validate a config file; path None reads the embedded demo default."""
    if path is None:
        text = resources.files("standard_edition").joinpath(DEFAULT_NAME).read_text("utf-8")
        base = Path.cwd()
        source = "embedded default"
    else:
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        base = path.resolve().parent
        source = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return _build(raw, base, source)


# -- validation ------------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected a string, got {v!r}")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


def _domain(key: str, v: Any) -> str:
    v = _str(key, v).strip().lower().rstrip(".")
    labels = v.split(".")
    ok = (
        bool(v)
        and len(v) <= 253
        and all(
            0 < len(lab) <= 63
            and all(c.isalnum() or c == "-" for c in lab)
            and not lab.startswith("-")
            and not lab.endswith("-")
            for lab in labels
        )
    )
    if not ok:
        raise ConfigError(f"{key}: {v!r} is not a valid domain name")
    return v


def _domains(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ConfigError(f"{key}: expected a list of domain names, got {v!r}")
    return tuple(_domain(key, d) for d in v)


def _address(key: str, v: Any) -> Address:
    s = _str(key, v)
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{key}: {s!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: {s!r} has no valid port")
    if host not in ("localhost", "*"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{key}: {s!r}: the host must be an IP address") from None
    return Address(host, int(port))


def _addresses(key: str, v: Any) -> tuple[Address, ...]:
    if not isinstance(v, list):
        raise ConfigError(f'{key}: expected a list of "host:port" strings, got {v!r}')
    return tuple(_address(key, a) for a in v)


def _dns_servers(key: str, v: Any) -> tuple[Address, ...]:
    """Resolvers as "IP" (port 53) or "IP:port" ("[IPv6]:port")."""
    if not isinstance(v, list):
        raise ConfigError(f'{key}: expected a list such as ["192.0.2.53", "127.0.0.1:5353"]')
    out = []
    for a in v:
        s = _str(key, a).strip()
        try:
            out.append(Address(str(ipaddress.ip_address(s.strip("[]"))), 53))
            continue
        except ValueError:
            pass
        addr = _address(key, s)
        if addr.host in ("localhost", "*"):
            raise ConfigError(f"{key}: {s!r}: give the resolver's IP address")
        out.append(addr)
    return tuple(out)


def _choice(*choices: str) -> Check:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(choices)}")
        return str(v)

    return check


def _digests(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or any(d not in ("MD5", "SHA-256") for d in v):
        raise ConfigError(f'{key}: expected a list of "MD5" and/or "SHA-256", got {v!r}')
    if "MD5" not in v:
        # common SIP clients stop at a non-MD5 challenge (DESIGN §3)
        raise ConfigError(f'{key}: "MD5" must stay enabled; "SHA-256" is offered after it')
    return tuple(dict.fromkeys(v))


def _stanza_size(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 10_000 <= v <= 16 * 1024 * 1024:
        raise ConfigError(f"{key}: expected a byte count between 10000 and 16777216, got {v!r}")
    return v


def _addresses_of_users(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ConfigError(f'{key}: expected a list of "user@domain" strings, got {v!r}')
    out = []
    for a in v:
        local, at, dom = _str(key, a).partition("@")
        if not (local and at and dom) or "/" in a or "@" in dom or any(c.isspace() for c in a):
            raise ConfigError(f"{key}: {a!r} is not a user address (user@domain)")
        out.append(f"{local}@{_domain(key, dom)}")
    return tuple(dict.fromkeys(out))


def _days(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 36_500:
        raise ConfigError(
            f"{key}: expected a number of days from 0 (keep forever) to 36500, got {v!r}"
        )
    return v


def _resume(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 3600:
        raise ConfigError(f"{key}: expected seconds between 1 and 3600, got {v!r}")
    return v


def _count(low: int, high: int) -> Check:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ConfigError(f"{key}: expected a whole number from {low} to {high}, got {v!r}")
        return v

    return check


# XEP-0363 uploads refused by default: programs and scripts a click would run (Windows mostly)
BLOCKED_EXTENSIONS = (
    ".exe", ".bat", ".cmd", ".com", ".scr", ".msi", ".msp", ".pif", ".cpl", ".hta", ".jar",
    ".js", ".jse", ".vbs", ".vbe", ".wsf", ".wsh", ".ps1", ".psm1", ".reg", ".lnk", ".dll",
)  # fmt: skip
BLOCKED_TYPES = (
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-dosexec",
    "application/x-msi",
    "application/x-ms-installer",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/javascript",
    "text/javascript",
    "application/x-javascript",
    "application/x-bat",
    "application/hta",
)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _duration(key: str, v: Any) -> int:
    s = _str(key, v).strip().lower()
    if s == "0":
        return 0
    number, unit = s[:-1], s[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or not 0 < int(number) <= 10**6:
        raise ConfigError(f'{key}: {v!r}: give a duration such as "30d", "12h", "90m", or "0"')
    return int(number) * _DURATION_UNITS[unit]


def _https_origin(key: str, v: Any) -> str:
    s = _str(key, v).strip().rstrip("/")
    if not s:
        return ""
    try:
        url = urlsplit(s)
        port = url.port
    except ValueError:
        port, url = -1, None
    if (
        url is None
        or port == -1
        or url.scheme != "https"
        or not url.hostname
        or url.path
        or url.query
        or url.fragment
        or url.username is not None
    ):
        raise ConfigError(f'{key}: {v!r}: give "https://host" or "https://host:port", no path')
    return s


def _extensions(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ConfigError(f'{key}: expected a list such as [".exe", ".bat"], got {v!r}')
    out = []
    for e in v:
        ext = _str(key, e).strip().lower()
        ext = ext if ext.startswith(".") else f".{ext}"
        if len(ext) < 2 or not all(c.isalnum() or c in "._-+" for c in ext[1:]):
            raise ConfigError(f"{key}: {e!r} is not a file name extension")
        out.append(ext)
    return tuple(dict.fromkeys(out))


def _media_types(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ConfigError(f'{key}: expected a list such as ["application/x-msdownload"], got {v!r}')
    out = []
    for t in v:
        mt = _str(key, t).strip().lower()
        top, slash, subtype = mt.partition("/")
        ok = (
            slash
            and top
            and subtype
            and all(c.isalnum() or c in "!#$&^_.+-*" for c in top + subtype)
        )
        if not ok:
            raise ConfigError(f'{key}: {t!r} is not a media type ("type/subtype" or "type/*")')
        out.append(mt)
    return tuple(dict.fromkeys(out))


EDGE_LIMITS: dict[str, Check] = {
    "max_connections_per_address": _count(1, 100_000),
    "connections_per_minute": _count(1, 1_000_000),
    "auth_failures_free": _count(1, 1000),
    "address_failures_free": _count(1, 100_000),
    "auth_backoff": _count(1, 3600),
    "auth_backoff_max": _count(1, 86_400),
    "stanzas_per_second": _count(1, 100_000),
    "federation_stanzas_per_second": _count(1, 1_000_000),
}


def _prefix(key: str, v: Any) -> str:
    s = _str(key, v)
    if len(s) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise ConfigError(f"{key}: expected at most 200 characters on one line, got {s[:40]!r}")
    return s


URL_FILTER: dict[str, Check] = {
    "mode": _choice("off", "warn", "block"),
    "scope": _choice("domains", "all"),
    "domains": _domains,
    "prefix": _prefix,
}


def _url_filter(key: str, v: Any) -> dict[str, Any]:
    """[im.url_filter]: a table of its own inside [im]."""
    if not isinstance(v, dict):
        raise ConfigError(f"[{key}]: expected a table")
    out = {}
    for sub, value in v.items():
        check = URL_FILTER.get(sub)
        if check is None:
            raise ConfigError(f"{key}.{sub}: unknown key")
        out[sub] = check(f"{key}.{sub}", value)
    return out


def _hosts(key: str, v: Any) -> dict[str, dict[str, Address]]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a table")
    out: dict[str, dict[str, Address]] = {}
    for dom, entry in v.items():
        k = f"{key}.{dom}"
        _domain(k, dom)
        if not isinstance(entry, dict):
            raise ConfigError(f'{k}: expected {{ xmpp = "host:port", sip = "host:port" }}')
        for proto in entry:
            if proto not in ("xmpp", "sip"):
                raise ConfigError(f"{k}.{proto}: unknown key")
        out[dom.lower()] = {p: _address(f"{k}.{p}", a) for p, a in entry.items()}
    return out


SCHEMA: dict[str, Check | dict[str, Check]] = {
    "domain": _domain,
    "data_dir": _str,
    "tls": {"cert": _str, "key": _str},
    "listen": {
        "c2s": _addresses,
        "c2s_tls": _addresses,
        "sip": _addresses,
        "sip_tls": _addresses,
        "upload": _addresses,
    },
    "edge": {
        "c2s": _addresses,
        "c2s_tls": _addresses,
        "sip_tls": _addresses,
        "s2s": _addresses,
        "upload": _addresses,
        **EDGE_LIMITS,
    },
    "federation": {
        "mode": _choice("allowlist", "blocklist", "open"),
        "allow": _domains,
        "block": _domains,
        "hosts": _hosts,
        "connect_timeout": _count(1, 600),
        "idle_timeout": _count(0, 86_400),
        "dns": _dns_servers,
    },
    "policy": {"outside_access": _bool, "federation_access": _bool},
    "sip": {"digest": _digests},
    "im": {"offline": _bool, "url_filter": _url_filter},
    "archive": {
        "mode": _choice("off", "all", "users"),
        "users": _addresses_of_users,
        "internal": _bool,
        "external": _bool,
        "critical": _bool,
        "keep_days": _days,
    },
    "xmpp": {
        "max_stanza_size": _stanza_size,
        "version": _bool,
        "resume_timeout": _resume,
        "vcard_max_size": _count(1024, 16 * 1024 * 1024),
    },
    "presence": {"privacy": _bool},
    "upload": {
        "url": _https_origin,
        "edge_url": _https_origin,
        "max_file_size": _count(1, 1 << 40),
        "quota": _count(0, 1 << 50),
        "expire_after": _duration,
        "blocked_extensions": _extensions,
        "blocked_types": _media_types,
    },
}


def _validate(raw: dict[str, Any]) -> dict[str, Any]:
    """Check every key against SCHEMA; returns {dotted.key: value} of what was given."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        rule = SCHEMA.get(key)
        if rule is None:
            raise ConfigError(f"{key}: unknown key")
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}]: expected a table")
            for sub, v in value.items():
                check = rule.get(sub)
                if check is None:
                    raise ConfigError(f"{key}.{sub}: unknown key")
                out[f"{key}.{sub}"] = check(f"{key}.{sub}", v)
        else:
            out[key] = rule(key, value)
    return out


def _build(raw: dict[str, Any], base: Path, source: str) -> Config:
    v = _validate(raw)
    if "domain" not in v:
        raise ConfigError("domain: missing (the one domain this server serves)")

    def path(key: str) -> Path | None:
        s = v.get(key, "")
        return (base / s) if s else None

    data_dir = path("data_dir") or base / "var"
    cert, key = path("tls.cert"), path("tls.key")
    if (cert is None) != (key is None):
        raise ConfigError(
            "tls.cert, tls.key: give both PEM paths, or neither for a self-signed pair"
        )
    defaults = {"c2s": (), "c2s_tls": (), "sip": (), "sip_tls": (), "s2s": (), "upload": ()}
    listen = {k: v.get(f"listen.{k}", ()) for k in ("c2s", "c2s_tls", "sip", "sip_tls", "upload")}
    edge = {
        k: v.get(f"edge.{k}", defaults[k]) for k in ("c2s", "c2s_tls", "sip_tls", "s2s", "upload")
    }
    return Config(
        domain=v["domain"],
        data_dir=data_dir,
        source=source,
        tls_cert=cert,
        tls_key=key,
        listen=listen,
        edge=edge,
        federation_mode=v.get("federation.mode", "allowlist"),
        federation_allow=v.get("federation.allow", ()),
        federation_block=v.get("federation.block", ()),
        federation_hosts=v.get("federation.hosts", {}),
        sip_digest=v.get("sip.digest", ("MD5",)),
        im_offline=v.get("im.offline", True),
        **{f"url_filter_{k}": x for k, x in v.get("im.url_filter", {}).items()},
        archive_mode=v.get("archive.mode", "off"),
        archive_users=v.get("archive.users", ()),
        archive_internal=v.get("archive.internal", True),
        archive_external=v.get("archive.external", True),
        archive_critical=v.get("archive.critical", False),
        archive_keep_days=v.get("archive.keep_days", 0),
        max_stanza_size=v.get("xmpp.max_stanza_size", 262_144),
        xmpp_version=v.get("xmpp.version", False),
        privacy_default=v.get("presence.privacy", False),
        resume_timeout=v.get("xmpp.resume_timeout", 300),
        vcard_max_size=v.get("xmpp.vcard_max_size", 131_072),
        edge_limits={k: v[f"edge.{k}"] for k in EDGE_LIMITS if f"edge.{k}" in v},
        policy_outside_access=v.get("policy.outside_access", True),
        policy_federation_access=v.get("policy.federation_access", True),
        federation_connect_timeout=v.get("federation.connect_timeout", 20),
        federation_idle_timeout=v.get("federation.idle_timeout", 300),
        federation_dns=v.get("federation.dns", ()),
        upload_url=v.get("upload.url", ""),
        upload_edge_url=v.get("upload.edge_url", ""),
        upload_max_file_size=v.get("upload.max_file_size", 104_857_600),
        upload_quota=v.get("upload.quota", 1_073_741_824),
        upload_expire_after=v.get("upload.expire_after", 2_592_000),
        upload_blocked_extensions=v.get("upload.blocked_extensions", BLOCKED_EXTENSIONS),
        upload_blocked_types=v.get("upload.blocked_types", BLOCKED_TYPES),
    )
