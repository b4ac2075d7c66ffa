"""The real server process on free loopback ports, with its own temp data dir, for the tests."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DOMAIN = "example.test"
PASSWORD = "Correct-Horse-7"

_user_numbers = itertools.count(1)


def _port_sequence() -> Iterator[int]:
    """Ports for this test process: its slice of 20000-31999, below the kernel's ephemeral range.

    Each pytest-xdist worker gets a disjoint slice, so two workers never hand out the same port;
    a random start inside the slice keeps two separate runs on one machine apart as well.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = 12000 // count
    low = 20000 + (index % count) * size
    start = random.randrange(size)
    for i in range(size):
        yield low + (start + i) % size


_ports = _port_sequence()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # SIP takes the UDP port beside TCP
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port nobody uses (TCP and UDP), never handed out before in this run."""
    for port in _ports:
        if _bindable(port):
            return port
    raise RuntimeError("no free loopback port left for the tests")


def executable(name: str) -> str:
    """The console script installed next to this interpreter (the project's virtualenv)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install -e .)")
    return found


def _die_with_parent() -> None:
    # a server must not outlive a test run that is killed
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SE_CONFIG", None)  # every call names its config explicitly
    return env


class Server:
    """se-appliance started as an admin would: `se-appliance --config FILE`."""

    live: list[Server] = []  # started and not yet stopped; their logs are shown on failure

    def __init__(
        self,
        root: Path,
        extra_toml: str = "",
        domain: str = DOMAIN,
        sip: bool = False,
        edge_host: str | None = None,
        edge_ports: dict[str, int] | None = None,
        edge_extra: str = "",
        upload: bool = False,
    ):
        """edge_host: also listen on the [edge] (c2s, c2s_tls, s2s; sip_tls when edge_ports names
        it) at that loopback address, e.g. 127.0.0.2; the LAN listeners stay on 127.0.0.1.
        edge_ports: ports chosen before (a federation partner's config names them); edge_extra:
        more [edge] lines.
        upload: XEP-0363 HTTPS listeners too (listen.upload, and edge.upload with edge_host)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self.data_dir = root / "data"
        self.config = root / "config.toml"
        self.log_path = root / "server.log"
        self.ports = {"c2s": free_port(), "c2s_tls": free_port()}
        if sip:
            # opt-in: SIP over UDP and TCP on one port, TLS on another
            self.ports.update(sip=free_port(), sip_tls=free_port())
        if upload:
            self.ports["upload"] = free_port()
        # where each listener is, when not 127.0.0.1
        self.hosts: dict[str, str] = {}
        edge = ""
        if edge_host is not None:
            chosen = dict(edge_ports or {})
            edge_names = ("c2s", "c2s_tls", "s2s") + (("upload",) if upload else ())
            # SIP over TLS on the edge (remote SIP users, SIP federation) when a port is chosen
            edge_names += tuple(n for n in ("sip_tls",) if n in chosen)
            for name in edge_names:
                port = chosen.get(name) or free_port()
                self.ports[f"edge_{name}"] = port
                self.hosts[f"edge_{name}"] = edge_host
            edge = (
                "[edge]\n"
                + "".join(f'{n} = ["{edge_host}:{self.ports["edge_" + n]}"]\n' for n in edge_names)
                + f"{edge_extra}\n"
            )
        self.passwords: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(
            f'domain = "{domain}"\n'
            f'data_dir = "{self.data_dir}"\n'
            "[listen]\n"
            f'c2s = ["127.0.0.1:{self.ports["c2s"]}"]\n'
            f'c2s_tls = ["127.0.0.1:{self.ports["c2s_tls"]}"]\n'
            + (
                f'sip = ["127.0.0.1:{self.ports["sip"]}"]\n'
                f'sip_tls = ["127.0.0.1:{self.ports["sip_tls"]}"]\n'
                if sip
                else "sip = []\nsip_tls = []\n"
            )
            + (f'upload = ["127.0.0.1:{self.ports["upload"]}"]\n' if upload else "")
            + edge
            + f"{extra_toml}\n"
        )

    # -- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> Server:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [executable("se-appliance"), "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                preexec_fn=_die_with_parent,
            )
        Server.live.append(self)
        try:
            end = time.monotonic() + timeout
            for name, port in self.ports.items():
                self._wait_port(port, end, self.hosts.get(name, "127.0.0.1"))
            # the control socket may come up a moment after the listeners
            while self.ctl("status").returncode != 0:
                if time.monotonic() > end:
                    raise RuntimeError(f"se-ctl status still fails after {timeout}s")
                self._check_alive()
                time.sleep(0.2)
        except Exception as e:
            self.stop()
            raise RuntimeError(
                f"server did not come up: {e}\n--- server log ---\n{self.log_tail()}"
            ) from e
        return self

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}")

    def _wait_port(self, port: int, end: float, host: str = "127.0.0.1") -> None:
        while True:
            self._check_alive()
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait; returns the exit code, or None when it had to be killed."""
        if self in Server.live:
            Server.live.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS for the server")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- se-ctl -------------------------------------------------------------------------------

    def ctl(
        self, *args: str, config: Path | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `se-ctl --config FILE ARGS...`; never raises on a non-zero exit."""
        return subprocess.run(
            [executable("se-ctl"), "--config", str(config or self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
        )

    def ctl_ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.ctl(*args)
        if r.returncode != 0:
            raise AssertionError(
                f"se-ctl {' '.join(args)} -> {r.returncode}: {r.stderr.strip() or r.stdout.strip()}"
            )
        return r

    def password_file(self, password: str) -> Path:
        path = self.root / f"pw-{next(_user_numbers)}"
        path.write_text(password + "\n")
        return path

    def add_user(self, user: str, password: str = PASSWORD, name: str | None = None) -> str:
        """Create user@domain with se-ctl --password-file; returns the bare JID."""
        jid = f"{user}@{self.domain}"
        args = ["user", "add", jid, "--password-file", str(self.password_file(password))]
        if name:
            args += ["--name", name]
        self.ctl_ok(*args)
        self.passwords[user] = password
        return jid

    def new_users(self, *prefixes: str) -> list[str]:
        """Fresh accounts with unique names (tests sharing one server never meet)."""
        names = [f"{p}{next(_user_numbers)}" for p in prefixes]
        for n in names:
            self.add_user(n)
        return names
