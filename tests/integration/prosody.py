"""A real Prosody (Debian's package) federating with our server, for the interop tests and the
s2s benchmark (DESIGN §7).

Our a.test listens outside on 127.0.0.2 and finds Prosody's b.test (127.0.0.3) through its
[federation.hosts] map. Prosody has no such map and its resolver (libunbound) ignores
/etc/hosts, so a small Twisted Names server (dnsserver.py) serves the SRV and A records of
both domains and of their conference services, and Prosody's `unbound` setting points at it.

Prosody 0.12's `unbound` table goes to lua-unbound: `forward` takes "address@port", and
`options` are libunbound settings; "do-not-query-localhost" must be off to forward to
127.0.0.1, and "test." must be made transparent, as libunbound answers NXDOMAIN for the
special-use names (RFC 6761) itself. Without lua-unbound (only recommended by the package)
Prosody would use its own resolver and /etc/resolv.conf, so it is required here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .server import PASSWORD, _die_with_parent, free_port

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"


class ProsodyUnavailable(RuntimeError):
    """Prosody cannot run here; str() says why (tests skip, the benchmark reports it)."""


def unavailable() -> str | None:
    """Why Prosody cannot federate here, or None when it can."""
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        return "prosody is not installed (Debian package prosody)"
    probe = subprocess.run(["lua5.4", "-e", 'require "lunbound"'], capture_output=True)
    if probe.returncode != 0:
        return "lua-unbound is not installed: prosody would not use the test's DNS server"
    return None


def records(ours: int, theirs: int) -> dict[str, dict[str, Any]]:
    """SRV and A records: a.test (and its conference service) on our s2s port at A_HOST,
    b.test (and its conference service) on Prosody's at B_HOST."""
    return {
        "a.test": {"srv": ["xmpp.a.test", ours]},
        "conference.a.test": {"srv": ["xmpp.a.test", ours]},
        "xmpp.a.test": {"a": A_HOST},
        "b.test": {"srv": ["xmpp.b.test", theirs]},
        "conference.b.test": {"srv": ["xmpp.b.test", theirs]},
        "xmpp.b.test": {"a": B_HOST},
    }


def federation_toml(prosody_s2s: int, idle_timeout: int = 300) -> str:
    """Our a.test's [federation] lines for Prosody's b.test."""
    return (
        f'[federation]\nmode = "allowlist"\nallow = ["b.test"]\nidle_timeout = {idle_timeout}\n'
        f'[federation.hosts]\n"b.test" = {{ xmpp = "{B_HOST}:{prosody_s2s}" }}\n'
    )


class DNS:
    """dnsserver.py in a subprocess on 127.0.0.1; it stops when its stdin closes."""

    def __init__(self, table: dict[str, dict[str, Any]], log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("dnsserver.py")), json.dumps(table)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            self.stop()
            raise ProsodyUnavailable("the test DNS server did not start")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Prosody:
    """Debian's prosody for b.test on 127.0.0.3: c2s and s2s, TLS required, dialback allowed,
    and a MUC service on conference.b.test."""

    domain = "b.test"

    def __init__(self, root: Path, dns_port: int, s2s_port: int):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        data = root / "data"
        data.mkdir()
        self.ports = {"c2s": free_port(), "s2s": s2s_port}
        self.hosts = {"c2s": B_HOST}
        self.passwords: dict[str, str] = {}
        key, crt = root / "key.pem", root / "crt.pem"
        self.cert = crt
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", f"/CN={self.domain}"),
                *("-addext", f"subjectAltName=DNS:{self.domain},DNS:conference.{self.domain}"),
                *("-keyout", str(key), "-out", str(crt)),
            ],
            check=True,
            capture_output=True,
        )
        self.log = root / "prosody.log"
        self.config = root / "prosody.cfg.lua"
        self.config.write_text(
            f"""
run_as_root = true
daemonize = false
pidfile = "{root}/prosody.pid"
data_path = "{data}"
log = {{ info = "{self.log}" }}
admins = {{ }}
plugin_paths = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix" }}
interfaces = {{ "{B_HOST}" }}
c2s_ports = {{ {self.ports["c2s"]} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {self.ports["s2s"]} }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
authentication = "internal_hashed"
storage = "internal"
certificates = "{root}"
ssl = {{ key = "{key}"; certificate = "{crt}"; }}
unbound = {{
  resolvconf = false;
  hoststxt = false;
  forward = {{ "127.0.0.1@{dns_port}" }};
  options = {{ ["do-not-query-localhost"] = "no"; ["local-zone"] = "test. transparent" }};
}}
VirtualHost "{self.domain}"
  ssl = {{ key = "{key}"; certificate = "{crt}"; }}
Component "conference.{self.domain}" "muc"
  muc_room_locking = false
  ssl = {{ key = "{key}"; certificate = "{crt}"; }}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def debug_log(self) -> None:
        """Log at debug level (tests read what Prosody decided; the benchmark does not)."""
        text = self.config.read_text()
        self.config.write_text(text.replace(f'info = "{self.log}"', f'debug = "{self.log}"'))

    def trust(self, cert: Path) -> None:
        """Accept this self-signed certificate as valid for its domain (before start)."""
        text = self.config.read_text()
        self.config.write_text(
            text.replace('certificate = "', f'cafile = "{cert}"; certificate = "')
        )

    def start(self, timeout: float = 20) -> Prosody:
        """Start it and wait for its ports; ProsodyUnavailable when it cannot start here."""
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config)],
            stdout=(self.root / "stdout.log").open("ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        end = time.monotonic() + timeout
        for name in ("c2s", "s2s"):
            while True:
                if self.proc.poll() is not None:
                    raise ProsodyUnavailable(
                        f"prosody exited with {self.proc.returncode} at start: {self.log_tail(5)}"
                    )
                try:
                    socket.create_connection((B_HOST, self.ports[name]), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > end:
                        self.stop()
                        raise ProsodyUnavailable(
                            f"prosody does not listen on {name} after {timeout}s"
                        ) from None
                    time.sleep(0.1)
        return self

    def add_user(self, user: str, password: str = PASSWORD) -> str:
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, self.domain, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.passwords[user] = password
        return f"{user}@{self.domain}"

    def log_tail(self, lines: int = 60) -> str:
        for path in (self.log, self.root / "stdout.log"):
            if path.exists() and path.stat().st_size:
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
