"""Debian's baresip, headless, driven over its ctrl_tcp interface (JSON in netstrings).

Commands go in as `{"command": ..., "params": ...}`; answers and UA events (REGISTER_OK...)
come back the same way. Incoming MESSAGEs are printed by baresip's menu module on its
user interface output, which the `cons` module serves on a TCP port the test reads.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .server import _die_with_parent, free_port

BARESIP = shutil.which("baresip")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Baresip:
    def __init__(
        self,
        root: Path,
        user: str,
        password: str,
        domain: str,
        sip_port: int,
        contact: str,
        presence: bool = False,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.aor = f"sip:{user}@{domain}"
        self.ctrl_port = free_port()
        self.cons_port = free_port()
        self.log_path = root / "baresip.log"
        # no audio device: sine source and file sink, so it runs on a machine without sound
        (root / "config").write_text(
            "poll_method\t\tepoll\n"
            f"sip_listen\t\t127.0.0.1:{free_port()}\n"
            "audio_player\t\taufile,/dev/null\n"
            "audio_source\t\tausine,440\n"
            "module_path\t\t/usr/lib/baresip/modules\n"
            "module\t\t\tg711.so\n"
            "module\t\t\tausine.so\n"
            "module\t\t\taufile.so\n"
            "module\t\t\taccount.so\n"
            "module\t\t\tmenu.so\n"
            "module\t\t\tcontact.so\n"
            "module\t\t\tctrl_tcp.so\n"
            "module\t\t\tcons.so\n"
            f"cons_listen\t\t127.0.0.1:{self.cons_port}\n"
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}\n"
            # PUBLISH of its own state (pubint), SUBSCRIBE to contacts marked presence=p2p
            + ("module\t\t\tpresence.so\n" if presence else "")
        )
        # the domain is not in DNS: every request goes to the server as outbound proxy
        (root / "accounts").write_text(
            f"<{self.aor};transport=udp>;auth_pass={password};"
            f'outbound="sip:127.0.0.1:{sip_port};transport=udp";regint=600'
            + (";pubint=600" if presence else "")
            + "\n"
        )
        (root / "contacts").write_text(f"<{contact}>{';presence=p2p' if presence else ''}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.cons: socket.socket | None = None
        self.output = b""  # what the user interface showed (cons)
        self.buf = b""
        self.events: list[dict[str, Any]] = []

    def start(self, timeout: float = 15) -> Baresip:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [BARESIP or "baresip", "-f", str(self.root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baresip exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                self.cons = socket.create_connection(("127.0.0.1", self.cons_port), timeout=1)
                return self
            except OSError:
                if time.monotonic() > end:
                    msg = f"baresip's ctrl_tcp never listened:\n{self.log()}"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)

    def stop(self) -> None:
        for s in (self.sock, self.cons):
            if s is not None:
                s.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        """What baresip printed, without its colour codes."""
        if not self.log_path.exists():
            return ""
        return _ANSI.sub("", self.log_path.read_text(errors="replace"))

    # -- ctrl_tcp ----------------------------------------------------------------------------

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """One netstring-framed JSON object, or None after timeout."""
        assert self.sock is not None
        end = time.monotonic() + timeout
        while True:
            head, colon, rest = self.buf.partition(b":")
            if colon and head.isdigit() and len(rest) > int(head):
                n = int(head)
                obj = json.loads(rest[:n])
                self.buf = rest[n + 1 :]  # the trailing comma
                return obj  # type: ignore[no-any-return]
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("baresip closed ctrl_tcp")
            self.buf += chunk

    def command(self, command: str, params: str = "", timeout: float = 10) -> dict[str, Any]:
        assert self.sock is not None
        data = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data + b",")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            obj = self._read(end - time.monotonic())
            if obj is None:
                break
            if obj.get("response"):
                return obj
            self.events.append(obj)
        raise TimeoutError(f"baresip did not answer {command}")

    def wait_event(self, type_: str, timeout: float = 15) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("type") == type_:
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {type_} event from baresip; got {self.events[-5:]}")
            obj = self._read(left)
            if obj is not None and obj.get("event"):
                self.events.append(obj)

    def contact_status(self, uri: str) -> str | None:
        """The presence baresip shows for a contact (/contacts): Unknown, Online, Busy..."""
        listing = _ANSI.sub("", str(self.command("contacts").get("data", "")))
        for line in listing.splitlines():
            if f"<{uri}>" in line:
                return line.strip(" >").split()[0]
        return None

    def wait_contact_status(self, uri: str, status: str, timeout: float = 15) -> None:
        end = time.monotonic() + timeout
        while (shown := self.contact_status(uri)) != status:
            if time.monotonic() > end:
                raise TimeoutError(f"baresip shows {uri} as {shown}, not {status}")
            time.sleep(0.2)

    def wait_output(self, text: str, timeout: float = 10) -> str:
        """Wait until the user interface showed `text`; returns everything shown so far."""
        assert self.cons is not None
        end = time.monotonic() + timeout
        while text.encode() not in self.output:
            left = end - time.monotonic()
            if left <= 0:
                shown = self.output[-500:]
                raise TimeoutError(f"baresip never showed {text!r}; it showed {shown!r}")
            self.cons.settimeout(left)
            try:
                chunk = self.cons.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("baresip closed its console")
            self.output += chunk
        return self.output.decode(errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > end:
                raise TimeoutError(f"baresip never printed {text!r}:\n{self.log()[-2000:]}")
            time.sleep(0.1)
