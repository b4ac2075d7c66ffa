"""This machine as the package's host: build, install, and run the service as its unit does."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .sandbox import unit_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = Path("/lib/systemd/system/se-appliance.service")
CONFIG = Path("/etc/se-appliance/config.toml")
DATA = Path("/var/lib/se-appliance")
VENV = Path("/opt/venvs/se-appliance")
PACKAGE = "se-appliance"


def run(
    cmd: list[str], *, check: bool = True, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run cmd; on failure an AssertionError that shows what it said."""
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
        )
    return p


def build(out: Path, version: str) -> Path:
    """packaging/build-deb, as the README says, as version `version`; the .deb it wrote."""
    p = run(
        [str(ROOT / "packaging" / "build-deb")],
        env={"DEB_VERSION": version, "SE_DEB_OUT": str(out)},
    )
    deb = Path(p.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.parent == out, p.stdout
    return deb


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["apt-get", "-y", "-q", *args], env={"DEBIAN_FRONTEND": "noninteractive"})


def preseed(domain: str) -> None:
    subprocess.run(
        ["debconf-set-selections"],
        input=f"{PACKAGE} {PACKAGE}/domain string {domain}\n",
        text=True,
        check=True,
    )


def installed_version() -> str | None:
    p = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", PACKAGE], check=False)
    status, _, version = p.stdout.partition(" ")
    return version.strip() if p.returncode == 0 and status.strip() == "ii" else None


def package_state() -> str:
    """dpkg's status letters for the package ('ii', 'rc', ...) or '' when dpkg knows nothing."""
    p = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", PACKAGE], check=False)
    return p.stdout.strip() if p.returncode == 0 else ""


def user_exists(name: str) -> bool:
    return run(["getent", "passwd", name], check=False).returncode == 0


def group_exists(name: str) -> bool:
    return run(["getent", "group", name], check=False).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen_on_loopback(config: Path = CONFIG) -> dict[str, int]:
    """Point the installed config's listeners at free loopback ports (as an admin's edit)."""
    ports = {"c2s": free_port(), "c2s_tls": free_port()}
    text = config.read_text()
    for name, value in [*((n, f'["127.0.0.1:{p}"]') for n, p in ports.items()), ("sip", "[]")]:
        text, n = re.subn(rf"^{name} = \[[^\]]*\]", f"{name} = {value}", text, count=1, flags=re.M)
        assert n == 1, f"no `{name} = [...]` line in {config}"
    text = re.sub(r"^sip_tls = \[[^\]]*\]", "sip_tls = []", text, count=1, flags=re.M)
    config.write_text(text)
    return ports


def se_ctl(
    *args: str, user: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """/usr/bin/se-ctl as root, or as `user` (runuser), with the system config found by default."""
    env = {k: v for k, v in os.environ.items() if k != "SE_CONFIG"}
    cmd = ["/usr/bin/se-ctl", *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd="/", timeout=60, check=False
    )
    if check and p.returncode != 0:
        raise AssertionError(f"se-ctl {shlex.join(args)} exited {p.returncode}: {p.stderr}")
    return p


class Service:
    """se-appliance started as se-appliance.service starts it, without systemd.

    The unit's ExecStart, as its User= and Group= (setpriv: no capabilities, no new privileges),
    in its WorkingDirectory= with its UMask=, under the seccomp filters of its
    SystemCallFilter=, RestrictAddressFamilies= (sandbox.py, --strict) and a notify socket
    for Type=notify: start() returns at READY=1, as systemctl start does.
    """

    def __init__(self, log: Path, unit: Path = UNIT) -> None:
        self.log_path = log
        self.settings = unit_settings(str(unit))
        self.unit = unit
        self.proc: subprocess.Popen[bytes] | None = None
        # the sandbox script must be readable by the service user, wherever the checkout is
        self.tools = Path(tempfile.mkdtemp(prefix="se-deb-test-"))
        self.tools.chmod(0o755)
        shutil.copy(Path(__file__).with_name("sandbox.py"), self.tools / "sandbox.py")
        (self.tools / "sandbox.py").chmod(0o644)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_address = f"@se-deb-test-{os.getpid()}-{id(self)}"  # abstract: no file modes
        self.notify.bind("\0" + self.notify_address[1:])

    def one(self, key: str) -> str:
        return self.settings[key][-1]

    def start(self, timeout: float = 60) -> Service:
        user, group = self.one("User"), self.one("Group")
        exec_start = shlex.split(self.one("ExecStart"))
        umask = int(self.one("UMask"), 8)
        home = DATA
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "USER": user,
            "LOGNAME": user,
            "NOTIFY_SOCKET": self.notify_address,
        }
        cmd = [
            "setpriv",
            f"--reuid={user}",
            f"--regid={group}",
            "--init-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "/usr/bin/python3",
            str(self.tools / "sandbox.py"),
            "--strict",
            str(self.unit),
            "--",
            *exec_start,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.one("WorkingDirectory"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(umask),  # the unit's UMask=
        )
        log.close()
        self.expect("READY=1", timeout)
        return self

    def expect(self, state: str, timeout: float = 30) -> None:
        """Wait for the service to send `state` (a line of an sd_notify message)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.notify.settimeout(0.5)
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                if self.proc is None or self.proc.poll() is not None:
                    break  # gone, and nothing left to read
                continue
            if state in message.splitlines():
                return
        raise AssertionError(f"no {state} from the service:\n{self.log()[-4000:]}")

    def reload(self) -> None:
        """ExecReload=: SIGHUP; returns at READY=1 after RELOADING=1."""
        assert self.proc
        self.proc.send_signal(signal.SIGHUP)
        self.expect("RELOADING=1")
        self.expect("READY=1")

    def stop(self, timeout: float = 30) -> int:
        """systemctl stop: SIGTERM, then the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.expect("STOPPING=1", timeout)
            return self.proc.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        shutil.rmtree(self.tools, ignore_errors=True)
