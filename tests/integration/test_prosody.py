"""Federation over XMPP s2s with a real Prosody (Debian's package) on the other end (DESIGN §7).

Our a.test listens outside on 127.0.0.2 and finds Prosody's b.test (127.0.0.3) through its
[federation.hosts] map. Prosody has no such map and its resolver (libunbound) ignores
/etc/hosts, so the test runs a small Twisted Names server (dnsserver.py) serving the SRV and A
records of both domains, and points Prosody's `unbound` setting at it. Both certificates are
self-signed and unpinned, so both directions authenticate by XEP-0220 dialback after STARTTLS.

Prosody 0.12's `unbound` table goes to lua-unbound: `forward` takes "address@port", and
`options` are libunbound settings; "do-not-query-localhost" must be off to forward to
127.0.0.1, and "test." must be made transparent, as libunbound answers NXDOMAIN for the
special-use names (RFC 6761) itself. Without lua-unbound (only recommended by the package)
Prosody would use its own resolver and /etc/resolv.conf, so the test needs it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import PASSWORD, Server, _die_with_parent, free_port
from .test_federation import available_from, status
from .xmppclient import Sessions, next_matching

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"


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
            raise RuntimeError("the test DNS server did not start")
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
    """Debian's prosody for b.test on 127.0.0.3: c2s and s2s, TLS required, dialback allowed."""

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
                *("-subj", f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}"),
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
log = {{ debug = "{self.log}" }}
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
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def trust(self, cert: Path) -> None:
        """Accept this self-signed certificate as valid for its domain (before start)."""
        text = self.config.read_text()
        self.config.write_text(
            text.replace('certificate = "', f'cafile = "{cert}"; certificate = "')
        )

    def start(self, timeout: float = 20) -> Prosody:
        """Start it and wait for its ports; skips the test when prosody cannot start here."""
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
                    pytest.skip(
                        f"prosody exited with {self.proc.returncode} at start: {self.log_tail(5)}"
                    )
                try:
                    socket.create_connection((B_HOST, self.ports[name]), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > end:
                        self.stop()
                        pytest.skip(f"prosody does not listen on {name} after {timeout}s")
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


@pytest.fixture
def prosody_pair(
    make_server: Callable[..., Server], tmp_path: Path
) -> Iterator[Callable[..., tuple[Server, Prosody]]]:
    """Our a.test and Prosody's b.test, federating; pinned=True: each trusts the other's
    self-signed certificate (se-ctl federation trust; Prosody's cafile), so SASL EXTERNAL."""
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        pytest.skip("prosody is not installed (Debian package prosody)")
    probe = subprocess.run(["lua5.4", "-e", 'require "lunbound"'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("lua-unbound is not installed: prosody would not use the test's DNS server")
    started: list[tuple[Prosody, DNS]] = []

    def make(pinned: bool = False) -> tuple[Server, Prosody]:
        pa, pb = free_port(), free_port()
        records = {
            "a.test": {"srv": ["xmpp.a.test", pa]},
            "xmpp.a.test": {"a": A_HOST},
            "b.test": {"srv": ["xmpp.b.test", pb]},
            "xmpp.b.test": {"a": B_HOST},
        }
        dns = DNS(records, tmp_path / "dns.log")
        p = Prosody(tmp_path / "prosody", dns.port, pb)
        started.append((p, dns))
        a = make_server(
            '[federation]\nmode = "allowlist"\nallow = ["b.test"]\n'
            f'[federation.hosts]\n"b.test" = {{ xmpp = "{B_HOST}:{p.ports["s2s"]}" }}\n',
            domain="a.test",
            edge_host=A_HOST,
            edge_ports={"s2s": pa},
        )
        if pinned:
            a.ctl_ok("federation", "trust", "b.test", "--cert", str(p.cert))
            p.trust(a.data_dir / "cert.pem")
        p.start()
        return a, p

    yield make
    for p, dns in started:
        p.stop()
        dns.stop()
        print(f"--- prosody log ---\n{p.log_tail()}")


def test_prosody_subscription_presence_and_messages_both_ways(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair()
    (alice,) = a.new_users("alice")
    erin = "erin"
    p.add_user(erin)
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            # alice asks; erin's client approves and asks back (auto_subscribe)
            ca.send_presence(pto=je, ptype="subscribe")
            await next_matching(ca.presences, available_from(je), 30)
            await next_matching(ce.presences, available_from(ja), 30)
            ca.send_message(mto=je, mbody="hello prosody", mtype="chat")
            got = await next_matching(ce.inbox, lambda m: m["body"] == "hello prosody", 15)
            assert got["from"].bare == ja
            ce.send_message(mto=ja, mbody="hello appliance", mtype="chat")
            got = await next_matching(ca.inbox, lambda m: m["body"] == "hello appliance", 15)
            assert got["from"].bare == je
            # a presence change crosses both ways
            ca.send_presence(pshow="dnd")
            await next_matching(
                ce.presences, lambda x: x["from"].bare == ja and x["show"] == "dnd", 15
            )
            ce.send_presence(pshow="away")
            await next_matching(
                ca.presences, lambda x: x["from"].bare == je and x["show"] == "away", 15
            )
            # going offline is seen on the other side
            await sp.clients[0].stop()
            await next_matching(
                ca.presences, lambda x: x["from"].bare == je and x["type"] == "unavailable", 15
            )

    run(scenario(), 120)
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_dialback"] >= 1, fed
    assert fed["outgoing"] == {"b.test": "ready"} and "b.test" in fed["incoming"], fed


def test_prosody_with_pinned_certificates_authenticates_by_sasl_external(
    prosody_pair: Callable[..., tuple[Server, Prosody]], run: Callable[..., Any]
) -> None:
    a, p = prosody_pair(pinned=True)
    (alice,) = a.new_users("alice")
    erin = "erin"
    p.add_user(erin)
    ja, je = f"{alice}@a.test", f"{erin}@b.test"

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(p) as sp:
            ca = await sa.login(alice)
            ce = await sp.login(erin)
            ca.send_message(mto=je, mbody="over EXTERNAL", mtype="chat")
            await next_matching(ce.inbox, lambda m: m["body"] == "over EXTERNAL", 15)
            ce.send_message(mto=ja, mbody="and back", mtype="chat")
            await next_matching(ca.inbox, lambda m: m["body"] == "and back", 15)

    run(scenario(), 90)
    fed = status(a)["edge"]["federation"]
    assert fed["s2s_external"] >= 1 and fed["s2s_dialback"] == 0, fed
    # and Prosody took our certificate for a.test (its log is the only place that says so)
    assert "Accepting SASL EXTERNAL identity from a.test" in p.log.read_text()
