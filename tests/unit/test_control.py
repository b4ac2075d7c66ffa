"""The control socket and se-ctl: the real server code on a real unix socket, a fake API behind it.

The server runs in a subprocess (fake_control_server.py) so the blocking client and se-ctl talk
to it exactly as they do in production.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.control_client import (
    ControlClient,
    PermissionDenied,
    RemoteError,
    ServerNotRunning,
)
from standard_edition.control.api import ControlAPI
from standard_edition.control.server import COMMANDS, peer_allowed
from standard_edition.core.admin import Admin

FAKE_SERVER = Path(__file__).with_name("fake_control_server.py")
SECRET = "secret-detail-7f3a"


class FakeServer:
    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    def start(self) -> FakeServer:
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_SERVER), str(self.sock)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"fake control server did not start: {self.stderr}")
        return self

    def stop(self) -> str:
        """Stop it (SIGTERM) and return everything it logged."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            _, self.stderr = self.proc.communicate(timeout=10)
        return self.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o750)
    return d


@pytest.fixture
def server(data_dir: Path) -> Iterator[FakeServer]:
    s = FakeServer(data_dir / "control.sock").start()
    yield s
    s.stop()


@pytest.fixture
def client(server: FakeServer) -> Iterator[ControlClient]:
    with ControlClient(server.sock, timeout=10) as c:
        yield c


def raw_exchange(path: Path, *lines: bytes, answers: int) -> list[dict[str, Any]]:
    """Send raw lines on one connection and read that many answer lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"".join(lines))
        buf = b""
        while buf.count(b"\n") < answers:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


# -- the protocol ------------------------------------------------------------------------------


def test_every_api_method_is_a_command() -> None:
    assert COMMANDS["user.add"] == "user_add"
    assert COMMANDS["status"] == "status"
    assert COMMANDS["sessions"] == "sessions"
    assert set(COMMANDS.values()) >= {
        "user_list",
        "user_show",
        "user_remove",
        "user_passwd",
        "user_disable",
        "user_enable",
    }


def test_the_server_takes_exactly_the_arguments_the_api_names() -> None:
    # the API is the contract se-ctl and the console are checked against (argument types
    # included); an argument only the implementation knows would skip those checks
    for method in COMMANDS.values():
        named = list(inspect.signature(getattr(ControlAPI, method)).parameters)
        taken = list(inspect.signature(getattr(Admin, method)).parameters)
        assert named == taken, method


def test_round_trip_with_deferred_result(client: ControlClient) -> None:
    assert client.call("user.add", jid="alice@example.test", password="pw", name="Alice") == {
        "jid": "alice@example.test",
        "name": "Alice",
    }
    users = client.call("user.list")
    assert [u["jid"] for u in users] == ["alice@example.test"]


def test_response_echoes_id_and_version(server: FakeServer) -> None:
    [answer] = raw_exchange(
        server.sock, b'{"v": 1, "id": "abc", "cmd": "user.list", "args": {}}\n', answers=1
    )
    assert answer == {"v": 1, "id": "abc", "ok": True, "result": []}


def test_unknown_command(client: ControlClient) -> None:
    with pytest.raises(RemoteError) as e:
        client.call("user.frobnicate")
    assert e.value.code == "unknown-command"


def test_implementation_attributes_are_not_commands(client: ControlClient) -> None:
    # the fake has a helper _get and attributes users/passwords: none is reachable
    for cmd in ("_get", "users", "passwords", "__init__"):
        with pytest.raises(RemoteError) as e:
            client.call(cmd)
        assert e.value.code == "unknown-command"


def test_bad_json_is_answered_and_the_connection_stays_usable(server: FakeServer) -> None:
    answers = raw_exchange(
        server.sock,
        b"this is not json\n",
        b"[1, 2]\n",
        b'{"v": 1, "id": 3, "cmd": "status"}\n',
        answers=3,
    )
    assert [a["ok"] for a in answers] == [False, False, True]
    assert answers[0]["error"]["code"] == "bad-request"
    assert answers[1]["error"]["code"] == "bad-request"
    assert answers[2]["id"] == 3
    assert "Traceback" not in json.dumps(answers)


@pytest.mark.parametrize(
    "args",
    [
        {"jid": "alice@example.test"},  # password missing
        {"jid": "alice@example.test", "password": "pw", "colour": "red"},  # unknown argument
        {"jid": 42, "password": "pw"},  # wrong JSON type
        {"jid": "alice@example.test", "password": "pw", "name": True},
    ],
)
def test_wrong_args_are_a_bad_request(client: ControlClient, args: dict[str, Any]) -> None:
    with pytest.raises(RemoteError) as e:
        client.call("user.add", **args)
    assert e.value.code == "bad-request"
    assert e.value.message.startswith("user.add: ")
    assert client.call("user.list") == []  # nothing was called


def test_args_must_be_an_object(server: FakeServer) -> None:
    [answer] = raw_exchange(
        server.sock, b'{"v": 1, "id": 1, "cmd": "user.list", "args": [1]}\n', answers=1
    )
    assert answer["error"]["code"] == "bad-request"


def test_control_error_keeps_its_code_and_message(client: ControlClient) -> None:
    client.call("user.add", jid="bob@example.test", password="pw")
    with pytest.raises(RemoteError) as e:
        client.call("user.add", jid="bob@example.test", password="pw")
    assert (e.value.code, e.value.message) == ("exists", "bob@example.test already exists")


def test_control_error_from_a_deferred(client: ControlClient) -> None:
    with pytest.raises(RemoteError) as e:
        client.call("user.remove", jid="nobody@example.test")
    assert e.value.code == "not-found"


def test_internal_error_is_logged_but_not_shown(server: FakeServer) -> None:
    with ControlClient(server.sock, timeout=10) as c:
        with pytest.raises(RemoteError) as e:
            c.call("user.show", jid="boom@example.test")
        assert e.value.code == "internal"
        assert SECRET not in e.value.message
        # a result that is not JSON-able is a server bug too
        with pytest.raises(RemoteError) as e:
            c.call("user.enable", jid="odd@example.test")
        assert e.value.code == "internal"
        assert c.call("status")["domain"] == "example.test"  # still serving
    log = server.stop()
    assert "Traceback" in log and SECRET in log


def test_unsupported_version(server: FakeServer) -> None:
    [answer] = raw_exchange(server.sock, b'{"v": 2, "id": 9, "cmd": "status"}\n', answers=1)
    assert answer["id"] == 9
    assert answer["error"]["code"] == "unsupported-version"


def test_answers_come_in_the_order_requests_complete(server: FakeServer) -> None:
    answers = raw_exchange(
        server.sock,
        b'{"v": 1, "id": 1, "cmd": "sessions"}\n{"v": 1, "id": 2, "cmd": "status"}\n',
        answers=2,
    )
    assert [a["id"] for a in answers] == [2, 1]
    assert answers[1]["result"][0]["jid"] == "alice@example.test/laptop"


def test_oversized_request_is_refused_and_closed(server: FakeServer) -> None:
    answers = raw_exchange(server.sock, b"x" * (1024 * 1024 + 10), answers=1)
    assert answers[0]["error"]["code"] == "bad-request"


def test_socket_mode_is_0660(server: FakeServer) -> None:
    st = server.sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_stale_socket_is_replaced(data_dir: Path) -> None:
    path = data_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a server that died without removing its socket
    stale.close()
    s = FakeServer(path).start()
    try:
        with ControlClient(path, timeout=10) as c:
            assert c.call("user.list") == []
    finally:
        s.stop()
    assert not path.exists()  # removed on a clean stop


def test_a_live_socket_is_not_taken_over(server: FakeServer) -> None:
    second = subprocess.run(
        [sys.executable, str(FAKE_SERVER), str(server.sock)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "another se-appliance is running" in second.stderr
    with ControlClient(server.sock, timeout=10) as c:  # the first one still answers
        assert c.call("user.list") == []


def test_a_regular_file_is_not_removed(data_dir: Path) -> None:
    path = data_dir / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(RuntimeError):
        FakeServer(path).start()
    assert path.read_text() == "not a socket"


# -- who may connect ---------------------------------------------------------------------------


def test_root_and_the_server_user_are_allowed() -> None:
    assert peer_allowed(0, [0], server_uid=998, admin_gid=None)
    assert peer_allowed(998, [998], server_uid=998, admin_gid=None)


def test_admin_group_members_are_allowed() -> None:
    assert peer_allowed(1000, [1000, 990], server_uid=998, admin_gid=990)  # supplementary
    assert peer_allowed(1000, [990], server_uid=998, admin_gid=990)  # primary
    assert peer_allowed(
        1000, [1000], server_uid=998, admin_gid=990, admin_members=["ann"], user_name="ann"
    )


def test_other_users_are_refused() -> None:
    assert not peer_allowed(1000, [1000], server_uid=998, admin_gid=990)
    assert not peer_allowed(1000, [1000], server_uid=998, admin_gid=None)


PEER_PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b'{"v": 1, "id": 1, "cmd": "user.list"}\\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_an_outsider_gets_one_error_and_is_disconnected() -> None:
    # a directory the unprivileged user can reach, and a socket opened to everyone, so that only
    # the SO_PEERCRED check stands in the way
    d = Path(tempfile.mkdtemp(prefix="se-ctl-"))
    try:
        d.chmod(0o755)
        s = FakeServer(d / "control.sock").start()
        try:
            (d / "control.sock").chmod(0o666)
            probe = subprocess.run(
                ["/usr/bin/python3", "-c", PEER_PROBE, str(d / "control.sock")],
                capture_output=True,
                text=True,
                timeout=30,
                user=65534,
                group=65534,
                extra_groups=[],
                cwd="/",
            )
        finally:
            log = s.stop()
        assert probe.returncode == 0, probe.stderr
        answers = [json.loads(line) for line in probe.stdout.splitlines()]
        assert len(answers) == 1
        assert answers[0]["error"]["code"] == "forbidden"
        assert "refused uid 65534" in log
    finally:
        shutil.rmtree(d)


def test_client_reports_forbidden_as_permission_denied(data_dir: Path) -> None:
    # a stand-in server that refuses like the real one does
    path = data_dir / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        import threading

        def refuse() -> None:
            conn, _ = listener.accept()
            conn.sendall(
                b'{"v":1,"id":null,"ok":false,"error":{"code":"forbidden",'
                b'"message":"permission denied: uid 1000 is not root"}}\n'
            )
            # as the real server does: shut our side, drain the client's request, then close
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            conn.close()

        t = threading.Thread(target=refuse)
        t.start()
        with pytest.raises(PermissionDenied) as e, ControlClient(path, timeout=10) as c:
            c.call("status")
        t.join()
        assert "permission denied" in str(e.value)
    finally:
        listener.close()


def test_client_without_server_says_not_running(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with pytest.raises(ServerNotRunning) as e:
        ControlClient(path).call("status")
    assert str(e.value) == f"se-appliance is not running (no control socket at {path})"


# -- se-ctl ------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path, data_dir: Path) -> Path:
    f = tmp_path / "config.toml"
    f.write_text('domain = "example.test"\ndata_dir = "data"\n')
    return f


def se_ctl(config_file: Path | None, *args: str, stdin: str | None = None) -> Any:
    cmd = [sys.executable, "-m", "appliance.ctl"]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    return subprocess.run(
        [*cmd, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SE_CONFIG": ""},
    )


def assert_one_line_error(r: Any, code: int = 1) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("se-ctl: ")
    return lines[0]


def test_se_ctl_without_server_says_so_in_one_line(config_file: Path, data_dir: Path) -> None:
    r = se_ctl(config_file, "status")
    line = assert_one_line_error(r)
    assert (
        line
        == f"se-ctl: se-appliance is not running (no control socket at {data_dir}/control.sock)"
    )


@pytest.mark.parametrize("args", [[], ["user"], ["user", "frob"], ["status", "--bogus"]])
def test_se_ctl_usage_error_exits_2(config_file: Path, args: list[str]) -> None:
    r = se_ctl(config_file, *args)
    assert r.returncode == 2
    assert "usage:" in r.stderr
    assert "Traceback" not in r.stderr


def test_se_ctl_bad_config_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('domain = "example.test"\ncolour = "red"\n')
    line = assert_one_line_error(se_ctl(f, "status"))
    assert "colour: unknown key" in line


@pytest.mark.parametrize(
    "jid", ["alice", "alice@example.test/laptop", "al ice@example.test", "@example.test", "a@b@c"]
)
def test_se_ctl_rejects_a_bad_jid_before_asking(
    server: FakeServer, config_file: Path, jid: str, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    r = se_ctl(config_file, "user", "add", jid, "--password-file", str(pw))
    assert_one_line_error(r)
    with ControlClient(server.sock) as c:
        assert c.call("user.list") == []


def test_se_ctl_add_with_password_file(
    server: FakeServer, config_file: Path, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse \n second line ignored\n")
    r = se_ctl(
        config_file,
        "user",
        "add",
        "Alice@Example.test",
        "--name",
        "Alice",
        "--password-file",
        str(pw),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "added alice@example.test"
    shown = json.loads(se_ctl(config_file, "user", "show", "alice@example.test", "--json").stdout)
    assert shown["password"] == "correct horse "  # the first line, only its newline removed
    assert shown["name"] == "Alice"


def test_se_ctl_password_file_crlf_and_stdin(
    server: FakeServer, config_file: Path, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"windows\r\n")
    r = se_ctl(config_file, "user", "add", "bob@example.test", "--password-file", str(pw))
    assert r.returncode == 0, r.stderr
    with ControlClient(server.sock) as c:
        assert c.call("user.show", jid="bob@example.test")["password"] == "windows"
    r = se_ctl(
        config_file, "user", "passwd", "bob@example.test", "--password-file", "-", stdin="piped\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "password changed for bob@example.test"
    with ControlClient(server.sock) as c:
        assert c.call("user.show", jid="bob@example.test")["password"] == "piped"


def test_se_ctl_unreadable_or_empty_password_file(
    server: FakeServer, config_file: Path, tmp_path: Path
) -> None:
    line = assert_one_line_error(
        se_ctl(
            config_file, "user", "add", "a@example.test", "--password-file", str(tmp_path / "nope")
        )
    )
    assert "cannot read password file" in line
    empty = tmp_path / "empty"
    empty.write_text("\n")
    line = assert_one_line_error(
        se_ctl(config_file, "user", "add", "a@example.test", "--password-file", str(empty))
    )
    assert "first line is empty" in line


def test_se_ctl_without_terminal_asks_for_a_password_file(
    server: FakeServer, config_file: Path
) -> None:
    line = assert_one_line_error(se_ctl(config_file, "user", "add", "a@example.test"))
    assert "--password-file" in line


def test_se_ctl_server_refusal_is_one_line(
    server: FakeServer, config_file: Path, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    se_ctl(config_file, "user", "add", "carol@example.test", "--password-file", str(pw))
    r = se_ctl(config_file, "user", "add", "carol@example.test", "--password-file", str(pw))
    assert assert_one_line_error(r) == "se-ctl: carol@example.test already exists"
    r = se_ctl(config_file, "user", "show", "boom@example.test")
    assert SECRET not in assert_one_line_error(r)


def test_se_ctl_json_output_parses(server: FakeServer, config_file: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    se_ctl(config_file, "user", "add", "dave@example.test", "--password-file", str(pw))
    users = json.loads(se_ctl(config_file, "user", "list", "--json").stdout)
    assert users[0]["jid"] == "dave@example.test"
    assert json.loads(se_ctl(config_file, "status", "--json").stdout)["uptime"] == 3725
    sessions = json.loads(se_ctl(config_file, "sessions", "--json").stdout)
    assert sessions[0]["protocol"] == "xmpp"
    disabled = json.loads(
        se_ctl(config_file, "user", "disable", "dave@example.test", "--json").stdout
    )
    assert disabled == {"jid": "dave@example.test", "sessions_closed": 2}


def test_se_ctl_human_output(server: FakeServer, config_file: Path, tmp_path: Path) -> None:
    assert "no accounts yet" in se_ctl(config_file, "user", "list").stdout
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    se_ctl(
        config_file,
        "user",
        "add",
        "erin@example.test",
        "--name",
        "Erin Ek",
        "--password-file",
        str(pw),
    )
    se_ctl(config_file, "user", "add", "fy@example.test", "--password-file", str(pw))
    header, *rows = se_ctl(config_file, "user", "list").stdout.splitlines()
    assert header.split() == ["JID", "NAME", "ENABLED", "SESSIONS"]
    assert rows[0].split() == ["erin@example.test", "Erin", "Ek", "yes", "0"]
    assert header.index("NAME") == rows[0].index("Erin")  # aligned columns
    status = se_ctl(config_file, "status").stdout
    assert "uptime:" in status and "1h 2m 5s" in status
    assert "domain:" in status and "example.test" in status
    assert "alice@example.test/laptop" in se_ctl(config_file, "sessions").stdout
    r = se_ctl(config_file, "user", "disable", "erin@example.test")
    assert r.stdout.strip() == "disabled erin@example.test (2 sessions closed)"


def test_se_ctl_help_has_examples() -> None:
    r = se_ctl(None, "--help")
    assert r.returncode == 0
    assert "se-ctl user add alice@example.test" in r.stdout
    r = se_ctl(None, "user", "passwd", "--help")
    assert "--password-file" in r.stdout and "examples:" in r.stdout
