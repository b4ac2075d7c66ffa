"""The control socket's live event stream against the real server, and se-ctl's streaming and
progress-reporting commands end to end."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.control_client import ControlClient, StreamClosed

from .server import Server, clean_env, executable
from .test_conference import MUC, invite, is_invite, join
from .xmppclient import Sessions, next_matching


class EventReader:
    """A subscribed control connection read in a thread; the test waits for what it needs."""

    def __init__(self, server: Server, topics: list[str], level: str = "info") -> None:
        self.client = ControlClient(server.data_dir / "control.sock", timeout=10)
        self.info = self.client.subscribe(topics, level=level)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.closed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                event = self.client.next_event(0.2)
                if event is not None:
                    self.events.put(event)
        except StreamClosed as e:
            self.closed = str(e)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict:
        end = time.monotonic() + timeout
        for event in self.seen:
            if pred(event):
                return event
        while time.monotonic() < end:
            try:
                event = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(event)
            if pred(event):
                return event
        raise AssertionError(f"no such event within {timeout}s; saw {self.seen[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def sessions_event(jid: str, change: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["event"] == "sessions" and e["data"]["jid"] == jid and e["data"]["change"] == change
    )


def test_login_presence_change_and_log_lines_arrive_as_events(server: Server, run):
    (alice,) = server.new_users("alice")
    bare = f"{alice}@{server.domain}"
    reader = EventReader(server, ["sessions", "presence", "log"])
    try:
        assert reader.info["topics"] == ["log", "presence", "sessions"]

        async def scenario() -> None:
            async with Sessions(server) as ss:
                a = await ss.login(alice)
                login = await asyncio.to_thread(
                    reader.wait_for, sessions_event(f"{bare}/test", "login")
                )
                assert login["v"] == 1 and login["data"]["protocol"] == "xmpp"
                assert login["data"]["origin"] == "internal" and login["data"]["tls"] is True
                await asyncio.to_thread(
                    reader.wait_for,
                    lambda e: e["event"] == "presence" and e["data"]["jid"] == bare,
                )
                a.send_presence(pshow="dnd", pstatus="writing the quarterly report")
                busy = await asyncio.to_thread(
                    reader.wait_for,
                    lambda e: (
                        e["event"] == "presence"
                        and e["data"]["jid"] == bare
                        and e["data"]["note"] == "writing the quarterly report"
                    ),
                )
                assert busy["data"]["availability"]["band"] == "dnd", busy
            await asyncio.to_thread(reader.wait_for, sessions_event(f"{bare}/test", "logout"))

        run(scenario())
        server.ctl_ok("user", "show", bare)
        line = reader.wait_for(
            lambda e: e["event"] == "log" and "control: user.show" in e["data"]["text"]
        )
        assert line["data"]["level"] == "info" and line["data"]["seq"] > reader.info["log_last"]
    finally:
        reader.close()


def test_log_events_are_filtered_by_level_and_unsubscribe_ends_them(server: Server):
    client = ControlClient(server.data_dir / "control.sock", timeout=10)
    with client:
        client.subscribe(["log"], level="warn")
        server.ctl_ok("conference", "list")  # the server logs this request at info
        assert client.next_event(1.0) is None, "an info line reached a warn subscriber"
        assert client.call("unsubscribe") == {"subscribed": False, "was": True}
        listing = client.call("subscribers")
        assert listing["max_queue"] >= 100 and isinstance(listing["dropped"], int)


def test_subscribe_refuses_unknown_topics_and_levels(server: Server):
    from appliance.control_client import RemoteError

    with ControlClient(server.data_dir / "control.sock", timeout=10) as client:
        for args in ({"topics": ["weather"]}, {"level": "loud"}, {"topics": []}):
            try:
                client.call("subscribe", **args)
            except RemoteError as e:
                assert e.code in ("invalid", "bad-request"), e.code
            else:
                raise AssertionError(f"subscribe {args} was accepted")


def test_a_subscriber_that_never_reads_is_dropped_and_others_are_served(server: Server):
    sock_path = str(server.data_dir / "control.sock")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(sock_path)
    request = {"v": 1, "id": 1, "cmd": "subscribe", "args": {"topics": ["log"]}}
    stuck.sendall(json.dumps(request).encode() + b"\n")
    # a well-behaved subscriber at the same time: it must keep getting events
    reader = EventReader(server, ["log"])
    try:
        with ControlClient(sock_path, timeout=10) as load:
            first = load.call("subscribers")
            assert len(first["subscribers"]) >= 2, first
            peak, dropped = 0, 0
            for i in range(30_000):
                # each request is a log line, so an event for both subscribers
                load.call("conference.list")
                if i % 100 == 0:
                    state = load.call("subscribers")
                    peak = max(peak, state["queued"])
                    assert state["queued"] <= state["max_queue"], state
                    dropped = state["dropped"] - first["dropped"]
                    if dropped >= 1:
                        break
            assert dropped >= 1, "the subscriber that never reads was never dropped"
            state = load.call("subscribers")
            # only the stuck one is gone; the reader is still subscribed
            assert len(state["subscribers"]) == len(first["subscribers"]) - 1, state
            assert peak > 0, "events never waited for the stuck subscriber"
        reader.wait_for(lambda e: e["event"] == "log" and "dropped an event subscriber" in str(e))
        assert reader.closed is None
        server.ctl_ok("status")
        # the stuck connection was closed by the server: reading it ends (after what it holds)
        stuck.settimeout(10)
        while stuck.recv(65536):
            pass
    finally:
        reader.close()
        stuck.close()


# -- se-ctl events / log --follow ------------------------------------------------------------------


class Streaming:
    """A streaming se-ctl command whose stdout lines are read as they come."""

    def __init__(self, server: Server, *args: str) -> None:
        self.proc = subprocess.Popen(
            [executable("se-ctl"), "--config", str(server.config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        self.lines: list[str] = []
        self._partial = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            for line in self.lines:
                if pred(line):
                    return line
            left = end - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._sel.select(0)):
                raise AssertionError(f"no such line; got {self.lines[-5:]}")
            if self._sel.select(min(left, 0.5)):
                chunk = self.proc.stdout.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    raise AssertionError(f"se-ctl ended; got {self.lines[-5:]}")
                data = self._partial + chunk
                *done, self._partial = data.split(b"\n")
                self.lines.extend(d.decode() for d in done)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, err.decode()


def subscribed(server: Server, n: int, timeout: float = 15) -> None:
    """Wait until n event subscribers are there (se-ctl has subscribed)."""
    end = time.monotonic() + timeout
    with ControlClient(server.data_dir / "control.sock", timeout=10) as c:
        while len(c.call("subscribers")["subscribers"]) < n:
            assert time.monotonic() < end, "se-ctl did not subscribe"
            time.sleep(0.1)


def test_se_ctl_events_prints_a_login_and_stops_cleanly_on_ctrl_c(server: Server, run):
    (bob,) = server.new_users("bob")
    with ControlClient(server.data_dir / "control.sock", timeout=10) as c:
        before = len(c.call("subscribers")["subscribers"])
    events = Streaming(server, "events", "--topic", "sessions", "--json")
    try:
        subscribed(server, before + 1)

        async def login() -> None:
            async with Sessions(server) as ss:
                await ss.login(bob)
                await asyncio.to_thread(events.wait_line, lambda line: f"{bob}@" in line)

        run(login())
        line = events.wait_line(lambda line: f"{bob}@" in line)
        event = json.loads(line)
        assert event["event"] == "sessions" and event["data"]["change"] == "login", event
    finally:
        code, err = events.interrupt()
    assert code == 0, err
    assert err.strip() == "" and "Traceback" not in err, err


def test_se_ctl_log_follow_prints_the_tail_then_new_lines(server: Server):
    with ControlClient(server.data_dir / "control.sock", timeout=10) as c:
        before = len(c.call("subscribers")["subscribers"])
    follow = Streaming(server, "log", "--follow", "--lines", "5")
    try:
        subscribed(server, before + 1)
        follow.wait_line(lambda line: "control: subscribe" in line)
        server.ctl_ok("conference", "list")
        line = follow.wait_line(lambda line: "control: conference.list" in line)
        assert " info " in line
    finally:
        code, err = follow.interrupt()
    assert code == 0 and "Traceback" not in err, err


def test_se_ctl_events_fails_in_one_line_without_a_server_or_when_it_stops(make_server):
    s = make_server()
    events = Streaming(s, "events")
    subscribed(s, 1)
    s.stop()
    events.proc.wait(timeout=15)
    err = events.proc.stderr.read().decode()  # type: ignore[union-attr]
    assert events.proc.returncode == 1, err
    assert len(err.strip().splitlines()) == 1 and "event stream" in err, err
    r = s.ctl("events")
    assert r.returncode == 1 and "not running" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# -- conference rooms --------------------------------------------------------------------------


DATA = "{jabber:x:data}"
OWNER = "{" + MUC + "#owner}"
ADMIN = "{" + MUC + "#admin}"


def rooms_event(room: str, change: str, nick: str | None = None) -> Callable[[dict], bool]:
    return lambda e: (
        e["event"] == "rooms"
        and e["data"]["room"] == room
        and e["data"]["change"] == change
        and (nick is None or e["data"].get("nick") == nick)
    )


def test_a_room_opening_its_joins_and_leaves_and_closing_arrive_as_events(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    room = f"events{os.getpid()}@conference.{server.domain}"
    reader = EventReader(server, ["rooms"])
    try:

        async def scenario() -> None:
            async with Sessions(server) as ss:
                a, b = await ss.login(alice), await ss.login(bob)
                await join(a, room, "alice")
                invite(a, room, f"{bob}@{server.domain}")
                await next_matching(b.inbox, is_invite)
                await join(b, room, "bob")
                # a line said in the room is no room event
                a.send_message(mto=room, mbody="the agenda", mtype="groupchat")
                await next_matching(b.inbox, lambda m: m["body"] == "the agenda")
                iq = a.make_iq_set(ito=room)
                form = ET.SubElement(ET.SubElement(iq.xml, OWNER + "query"), DATA + "x")
                form.set("type", "submit")
                field = ET.SubElement(form, DATA + "field", {"var": "muc#roomconfig_roomname"})
                ET.SubElement(field, DATA + "value").text = "Planning"
                await iq.send(timeout=10)
                b.send_presence(pto=f"{room}/robert")  # XEP-0045 §7.6: a new nickname
                await asyncio.to_thread(reader.wait_for, rooms_event(room, "renamed", "robert"))
                iq = a.make_iq_set(ito=room)  # §8.2: the moderator kicks him
                query = ET.SubElement(iq.xml, ADMIN + "query")
                ET.SubElement(query, ADMIN + "item", {"nick": "robert", "role": "none"})
                await iq.send(timeout=10)
                await asyncio.to_thread(reader.wait_for, rooms_event(room, "left", "robert"))
                a.send_presence(pto=f"{room}/alice", ptype="unavailable")
                await asyncio.to_thread(reader.wait_for, rooms_event(room, "destroyed"))

        run(scenario())
    finally:
        reader.close()
    mine = [e["data"] for e in reader.seen if e["event"] == "rooms" and e["data"]["room"] == room]
    assert [(d["change"], d.get("nick"), d["count"]) for d in mine] == [
        ("created", None, 1),
        ("joined", "alice", 1),
        ("joined", "bob", 2),
        ("configured", None, 2),
        ("renamed", "robert", 2),
        ("left", "robert", 1),
        ("left", "alice", 0),
        ("destroyed", None, 0),
    ], mine
    created, joined, configured, renamed = mine[0], mine[1], mine[3], mine[4]
    assert created["persistent"] is False and created["members_only"] is True, created
    assert joined["jid"] == f"{alice}@{server.domain}/test" and joined["role"] == "moderator"
    assert mine[2]["jid"] == f"{bob}@{server.domain}/test" and mine[2]["role"] == "participant"
    assert configured["name"] == "Planning" and mine[-1]["name"] == "Planning", configured
    assert renamed["old_nick"] == "bob" and renamed["jid"] == mine[2]["jid"], renamed


def test_se_ctl_events_shows_room_events_of_the_rooms_topic_only(server: Server, run):
    (carol,) = server.new_users("carol")
    room = f"ctlevents{os.getpid()}@conference.{server.domain}"
    with ControlClient(server.data_dir / "control.sock", timeout=10) as c:
        before = len(c.call("subscribers")["subscribers"])
    events = Streaming(server, "events", "--topic", "rooms")
    try:
        subscribed(server, before + 1)

        async def scenario() -> None:
            async with Sessions(server) as ss:
                await join(await ss.login(carol), room, "carol")
                await asyncio.to_thread(
                    events.wait_line, lambda line: "room joined" in line and room in line
                )

        run(scenario())
        joined = events.wait_line(lambda line: "room joined" in line and room in line)
        assert f"carol ({carol}@{server.domain}/test), 1 in the room" in joined, joined
        # her session ended: she left, and the ad hoc room went with her
        events.wait_line(lambda line: "room left" in line and room in line)
        closed = events.wait_line(lambda line: "room destroyed" in line and room in line)
        assert "ad hoc, 0 in the room" in closed, closed
        first = next(line for line in events.lines if room in line)
        assert first.split()[1:3] == ["room", "created"], events.lines
        assert not any(" login " in line or " logout " in line for line in events.lines)
    finally:
        code, err = events.interrupt()
    assert code == 0 and "Traceback" not in err, err


# -- progress of long operations ---------------------------------------------------------------


def test_backup_reports_progress_on_stderr_and_keeps_json_clean(server: Server, tmp_path: Path):
    target = tmp_path / "b.tar.gz"
    r = server.ctl("backup", str(target), "--progress", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["bytes"] == target.stat().st_size
    lines = r.stderr.strip().splitlines()
    assert "snapshot" in lines[0], lines
    assert lines[-1].startswith("backup: ") and lines[-1].endswith("(100%)"), lines
    quiet = server.ctl("backup", str(tmp_path / "c.tar.gz"))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_archive_export_reports_records_done_of_total(make_server, run, tmp_path: Path):
    s = make_server('[archive]\nmode = "all"')
    alice, bob = s.new_users("alice", "bob")

    async def chat() -> None:
        async with Sessions(s) as ss:
            a = await ss.login(alice)
            for i in range(3):
                a.send_message(mto=f"{bob}@{s.domain}", mbody=f"note {i}", mtype="chat")

    run(chat())
    end = time.monotonic() + 15
    while True:  # the archive writes in batches
        r = s.ctl("archive", "export", "--out", str(tmp_path / "a.jsonl"), "--progress", "--json")
        assert r.returncode == 0, r.stderr
        if json.loads(r.stdout)["records"] >= 3 or time.monotonic() > end:
            break
        time.sleep(0.3)
    assert json.loads(r.stdout)["records"] >= 3
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("export: ") and "records (100%)" in last, r.stderr
