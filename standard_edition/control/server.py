"""The control socket: se-ctl's way into the running server.

A unix stream socket at <data_dir>/control.sock, mode 0660, group se-appliance (DESIGN §9).
Each line is one JSON request; each answer is one JSON line with the same id, written when the
request completes, so answers to several requests on one connection may come in any order:

    {"v": 1, "id": 7, "cmd": "user.add", "args": {"jid": "alice@example.test", ...}}
    {"v": 1, "id": 7, "ok": true, "result": {...}}
    {"v": 1, "id": 7, "ok": false, "error": {"code": "exists", "message": "one line"}}

A command names a ControlAPI method with "." for "_" ("user.add" -> user_add); its args are the
method's keyword arguments. Three more belong to the connection itself (control/stream.py):
"subscribe" {"topics"?, "level"?} starts live event lines on it, "unsubscribe" ends them, and
"subscribers" lists who is subscribed and what they have queued. Error codes made here (the
API adds its own through ControlError):

    bad-request          not a JSON object, or args that do not fit the method
    unknown-command      cmd names no ControlAPI method
    unsupported-version  "v" is not a version this server speaks
    forbidden            the peer's uid/groups may not use the socket (then the server hangs up)
    unavailable          subscribe on a server without live events
    internal             the server failed; the details are in the server's log only
"""

from __future__ import annotations

import contextlib
import errno
import grp
import inspect
import json
import os
import socket
import stat
import struct
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from standard_edition.control.api import ControlAPI, ControlError
from standard_edition.control.stream import (
    MAX_QUEUE,
    StreamError,
    StreamStats,
    Subscription,
    check_args,
)
from standard_edition.core.events import EventBus

VERSION = 1
ADMIN_GROUP = "se-appliance"
SOCKET_MODE = 0o660
MAX_REQUEST = 1024 * 1024
HANG_UP_GRACE = 5.0
# read-only requests a console polls, and backup chunks: logged, they would flood the log
QUIET_COMMANDS = frozenset({"status", "sessions", "backup.read", "log.tail", "subscribers"})
# requests about the connection itself, answered here rather than by the ControlAPI
STREAM_COMMANDS = frozenset({"subscribe", "unsubscribe", "subscribers"})

# the commands are exactly the methods the ControlAPI protocol declares, nothing else of the
# implementing object is reachable from the socket
COMMANDS: dict[str, str] = {
    name.replace("_", "."): name
    for name, member in vars(ControlAPI).items()
    if not name.startswith("_") and inspect.isfunction(member)
}


class ControlSocketError(OSError):
    """The control socket path is taken (a live server, or not a socket); str() is one line."""


def listen_control(
    reactor: Any,
    path: Path,
    api: ControlAPI,
    *,
    log: Logger,
    events: EventBus | None = None,
    log_last: Callable[[], int] | None = None,
) -> IListeningPort:
    """Listen on the control socket at path; stopListening() removes the socket file.

    events: the core's bus that "subscribe" reads; log_last: the newest log line's seq."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    _remove_stale(path)
    factory = ControlFactory(
        reactor, api, log, admin_gid=_admin_gid(), events=events, log_last=log_last
    )
    # Twisted chmods right after bind; the 0750 data_dir and the peer check cover the moment between
    port: IListeningPort = reactor.listenUNIX(str(path), factory, backlog=16, mode=SOCKET_MODE)
    _set_group(path, factory.admin_gid, log)
    log.info("control socket {path}", path=path)
    return port


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a server that is gone; refuse if a live server still answers."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
    else:
        raise ControlSocketError("another se-appliance is running and answers on it")
    finally:
        probe.close()
    path.unlink(missing_ok=True)


def _admin_gid() -> int | None:
    try:
        return grp.getgrnam(ADMIN_GROUP).gr_gid
    except KeyError:
        return None


def _set_group(path: Path, gid: int | None, log: Logger) -> None:
    if gid is None or not (os.geteuid() == 0 or gid in os.getgroups()):
        return
    with contextlib.suppress(OSError):
        if path.stat().st_gid == gid:
            return  # already right (e.g. the service's own group): no chown needed
    try:
        os.chown(path, -1, gid)
    except OSError as e:
        log.warn(
            "control socket {path}: cannot give it to group {group}: {error}",
            path=path,
            group=ADMIN_GROUP,
            error=e.strerror,
        )


# -- who may connect ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Peer:
    """The connecting process as the kernel saw it at connect() (SO_PEERCRED, unix(7))."""
    fmt = "3i"  # struct ucred: pid, uid, gid
    pid, uid, gid = struct.unpack(
        fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    )
    return Peer(pid, uid, gid)


def peer_groups(peer: Peer) -> frozenset[int]:
    """The peer's primary and supplementary groups: its /proc status, else the group database."""
    groups = {peer.gid}
    try:
        with open(f"/proc/{peer.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return frozenset(groups)


def peer_allowed(
    uid: int,
    groups: Collection[int],
    *,
    server_uid: int,
    admin_gid: int | None,
    admin_members: Collection[str] = (),
    user_name: str | None = None,
) -> bool:
    """Root, the server's own user, and members of group se-appliance (DESIGN §9)."""
    if uid in (0, server_uid):
        return True
    if admin_gid is None:
        return False
    return admin_gid in groups or (user_name is not None and user_name in admin_members)


def _user_name(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _admin_members(gid: int | None) -> tuple[str, ...]:
    if gid is None:
        return ()
    try:
        return tuple(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return ()


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    rid: Any
    cmd: str
    args: dict[str, Any]


def parse_request(line: bytes) -> Request | bytes:
    """A well-formed request of this protocol version, or the error response line to send."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return _error(None, "bad-request", "the request is not valid JSON")
    if not isinstance(req, dict):
        return _error(None, "bad-request", "the request is not a JSON object")
    rid = req.get("id")
    if isinstance(rid, bool) or not (rid is None or isinstance(rid, (int, str))):
        return _error(None, "bad-request", '"id" must be a number or a string')
    if req.get("v") != VERSION or isinstance(req.get("v"), bool):
        return _error(
            rid,
            "unsupported-version",
            f"protocol version {req.get('v')!r} is not supported; this server "
            f"speaks {VERSION} (is se-ctl from the same release?)",
        )
    cmd, args = req.get("cmd"), req.get("args", {})
    if not isinstance(cmd, str):
        return _error(rid, "bad-request", '"cmd" must be a string')
    if not isinstance(args, dict):
        return _error(rid, "bad-request", f'{_short(cmd)}: "args" must be a JSON object')
    return Request(rid, cmd, args)


def handle_request(api: ControlAPI, line: bytes, log: Logger, who: str = "") -> Deferred[bytes]:
    """One request line in, one response line (without the newline) out, never failing."""
    req = parse_request(line)
    if isinstance(req, bytes):
        return _done(req)
    return dispatch(api, req, log, who)


def dispatch(api: ControlAPI, req: Request, log: Logger, who: str = "") -> Deferred[bytes]:
    """Run one parsed request on the API; its response line, never failing."""
    rid, cmd, args = req.rid, req.cmd, req.args
    name = COMMANDS.get(cmd)
    if name is None:
        return _done(_error(rid, "unknown-command", f"unknown command {_short(cmd)!r}"))
    method: Callable[..., Any] = getattr(api, name)
    try:
        inspect.signature(method).bind(**args)
    except TypeError as e:
        return _done(_error(rid, "bad-request", f"{cmd}: {e}"))
    wrong = _wrong_types(name, args)
    if wrong:
        return _done(_error(rid, "bad-request", f"{cmd}: {wrong}"))

    # never log args: they may hold a password
    if cmd not in QUIET_COMMANDS:
        log.info("control: {cmd}{who}", cmd=cmd, who=who)
    d = maybeDeferred(method, **args)
    d.addCallback(lambda result: _encode({"v": VERSION, "id": rid, "ok": True, "result": result}))

    def failed(f: Failure) -> bytes:
        if f.check(ControlError):
            e: ControlError = f.value  # type: ignore[assignment]
            return _error(rid, e.code, e.message)
        log.failure("control: {cmd} failed", failure=f, cmd=cmd)
        return _error(rid, "internal", f"{cmd} failed inside the server; its log says why")

    d.addErrback(failed)
    return d


def _wrong_types(name: str, args: dict[str, Any]) -> str | None:
    """The first argument whose JSON type the ControlAPI signature does not accept."""
    try:
        hints = typing.get_type_hints(getattr(ControlAPI, name))
    except Exception:  # an annotation that cannot be resolved: leave the check to the method
        return None
    for arg, value in args.items():
        hint = hints.get(arg)
        if hint is None:
            continue
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        # list[str] is checked as list; the method checks the items
        allowed = tuple(typing.get_origin(t) or t for t in allowed)
        if not all(isinstance(t, type) for t in allowed):
            continue
        ok = any(
            (value is None)
            if t is type(None)
            else isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
            for t in allowed
        )
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            return f"{arg} must be {want}, not {type(value).__name__}"
    return None


def _done(line: bytes) -> Deferred[bytes]:
    d: Deferred[bytes] = Deferred()
    d.callback(line)
    return d


def _error(rid: Any, code: str, message: str) -> bytes:
    one_line = " ".join(str(message).split())
    return _encode(
        {"v": VERSION, "id": rid, "ok": False, "error": {"code": code, "message": one_line}}
    )


def _encode(response: dict[str, Any]) -> bytes:
    # a result that is not JSON-able is a server bug: fail into the "internal" errback
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n] + "…"


# -- the Twisted shell -------------------------------------------------------------------------


class ControlProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, factory: ControlFactory) -> None:
        self.factory = factory
        self.allowed = False
        self.open = True
        self.hanging_up: IDelayedCall | None = None
        self.who = ""
        self.subscription: Subscription | None = None

    def connectionMade(self) -> None:
        f = self.factory
        try:
            peer = peer_credentials(self.transport.getHandle())  # type: ignore[attr-defined]
        except OSError as e:
            f.log.warn("control: cannot read the peer's credentials: {error}", error=e)
            self._refuse("cannot tell who is connecting")
            return
        self.who = f" (uid {peer.uid}, pid {peer.pid})"
        if peer_allowed(
            peer.uid,
            peer_groups(peer),
            server_uid=f.server_uid,
            admin_gid=f.admin_gid,
            admin_members=_admin_members(f.admin_gid),
            user_name=_user_name(peer.uid),
        ):
            self.allowed = True
            return
        f.log.warn(
            "control: refused uid {uid} (pid {pid}): not root and not in group {group}",
            uid=peer.uid,
            pid=peer.pid,
            group=ADMIN_GROUP,
        )
        self._refuse(
            f"permission denied: uid {peer.uid} is not root and not in group {ADMIN_GROUP}"
        )

    def _refuse(self, message: str) -> None:
        self._hang_up(_error(None, "forbidden", message))

    def _hang_up(self, last: bytes) -> None:
        """Send a last answer, then close so that the client reads it.

        Closing with the client's request still unread would reset the connection and lose the
        answer, so only our side is shut; what the client still sends is read and dropped until
        it closes, or for HANG_UP_GRACE seconds at most.
        """
        self.allowed = False
        if not self.open or self.hanging_up is not None:
            return
        self.transport.write(last + b"\n")  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]
        self.hanging_up = self.factory.reactor.callLater(
            HANG_UP_GRACE,
            self.transport.abortConnection,  # type: ignore[union-attr]
        )

    def dataReceived(self, data: bytes) -> None:
        if self.hanging_up is None:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self.allowed:
            return
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        req = parse_request(line)
        if isinstance(req, bytes):
            self._send(req)
        elif req.cmd in STREAM_COMMANDS:
            self._send(self._stream_request(req))
        else:
            dispatch(self.factory.api, req, self.factory.log, self.who).addCallback(self._send)

    # -- live events (control/stream.py) -------------------------------------------------------

    def _stream_request(self, req: Request) -> bytes:
        f = self.factory
        if req.cmd == "subscribers":
            return _encode({"v": VERSION, "id": req.rid, "ok": True, "result": f.stats.describe()})
        if req.cmd == "unsubscribe":
            was = self.subscription is not None
            self._end_subscription()
            return _encode(
                {
                    "v": VERSION,
                    "id": req.rid,
                    "ok": True,
                    "result": {"subscribed": False, "was": was},
                }
            )
        if f.events is None:
            return _error(req.rid, "unavailable", "this server has no live events")
        try:
            topics, level = check_args(req.args)
        except StreamError as e:
            return _error(req.rid, e.code, e.message)
        self._end_subscription()
        transport: Any = self.transport
        self.subscription = Subscription(
            f.events,
            req.rid,
            topics,
            level,
            lambda line: transport.write(line + b"\n"),
            self._overflowed,
            f.stats,
            self.who,
        )
        transport.registerProducer(self.subscription, True)
        f.log.info(
            "control: subscribe {topics}{who}", topics=",".join(sorted(topics)), who=self.who
        )
        result = {
            "topics": sorted(topics),
            "level": level,
            "max_queue": MAX_QUEUE,
            "log_last": f.log_last() if f.log_last is not None else 0,
        }
        return _encode({"v": VERSION, "id": req.rid, "ok": True, "result": result})

    def _end_subscription(self) -> None:
        sub, self.subscription = self.subscription, None
        if sub is not None:
            sub.cancel()
            if self.open:
                self.transport.unregisterProducer()  # type: ignore[union-attr]

    def _overflowed(self, sub: Subscription) -> None:
        # the reader stopped reading: its events are let go and its connection closed, so that
        # it costs nothing more; a client that wants events again subscribes afresh
        self.factory.log.warn(
            "control: dropped an event subscriber{who}: more than {n} events waiting "
            "for it to read",
            who=self.who,
            n=MAX_QUEUE,
        )
        self.subscription = None
        if self.open:
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.abortConnection()  # type: ignore[union-attr]

    def _send(self, response: bytes) -> None:
        # a client that hung up before its answer was ready simply does not get it
        if self.open:
            self.transport.write(response + b"\n")  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.open = False
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None
        if self.hanging_up is not None and self.hanging_up.active():
            self.hanging_up.cancel()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.clearLineBuffer()
        self._hang_up(_error(None, "bad-request", f"request longer than {MAX_REQUEST} bytes"))


class ControlFactory(Factory):
    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        api: ControlAPI,
        log: Logger,
        *,
        admin_gid: int | None,
        events: EventBus | None = None,
        log_last: Callable[[], int] | None = None,
    ) -> None:
        self.events = events
        self.log_last = log_last
        self.stats = StreamStats()
        self.reactor = reactor
        self.api = api
        self.log = log
        self.admin_gid = admin_gid
        self.server_uid = os.geteuid()

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self)
