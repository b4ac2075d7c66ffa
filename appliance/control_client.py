"""A blocking client for the server's control socket (see standard_edition/control/server.py).

Besides request/response it reads the live event stream (standard_edition/control/stream.py):
subscribe(), then next_event(); events that arrive while a call() waits for its answer are
kept for next_event().
"""

from __future__ import annotations

import errno
import json
import socket
from collections import deque
from pathlib import Path
from typing import Any

VERSION = 1
MAX_RESPONSE = 256 * 1024 * 1024


class ControlClientError(Exception):
    """Anything that stops a control request; str() is the one line se-ctl prints."""


class ServerNotRunning(ControlClientError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"se-appliance is not running (no control socket at {path})")
        self.path = path


class PermissionDenied(ControlClientError):
    pass


class RemoteError(ControlClientError):
    """The server refused or failed the request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolError(ControlClientError):
    """The server's answer was not what the protocol promises."""


class StreamClosed(ControlClientError):
    """The server ended the connection an event stream was read from."""


class ControlClient:
    def __init__(self, path: Path | str, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 1
        self._events: deque[dict[str, Any]] = deque()

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one request and wait for its answer; the result, or raise ControlClientError."""
        sock = self._connect()
        rid = self._next_id
        self._next_id += 1
        request = {"v": VERSION, "id": rid, "cmd": cmd, "args": args}
        try:
            sock.sendall(json.dumps(request, ensure_ascii=False).encode("utf-8") + b"\n")
            while True:
                response = self._read_response()
                if "event" in response:
                    self._events.append(response)
                    continue
                if response.get("id") == rid:
                    break
                if response.get("id") is None and not response.get("ok", True):
                    break  # an error the server could not tie to a request (refused, bad line)
        except TimeoutError:
            self.close()
            raise ControlClientError(
                f"{cmd}: no answer from se-appliance within {self.timeout:g} s"
            ) from None
        except OSError as e:
            self.close()
            raise ControlClientError(f"{cmd}: lost the connection to se-appliance: {e}") from None
        if response.get("ok") is True:
            return response.get("result")
        error = response.get("error")
        if not isinstance(error, dict):
            raise ProtocolError(f"{cmd}: the server's answer has neither result nor error")
        code, message = str(error.get("code", "")), str(error.get("message", ""))
        if code == "forbidden":
            self.close()
            raise PermissionDenied(f"{message} (control socket {self.path})")
        raise RemoteError(code, message or code)

    def subscribe(self, topics: list[str] | None = None, level: str = "info") -> dict[str, Any]:
        """Start live events on this connection (all topics when None); the server's answer."""
        args: dict[str, Any] = {"level": level}
        if topics is not None:
            args["topics"] = topics
        result: dict[str, Any] = self.call("subscribe", **args)
        return result

    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event line ({"event", "time", "data", ...}); None when timeout seconds
        passed without one; StreamClosed when the server ended the connection."""
        if self._events:
            return self._events.popleft()
        sock = self._connect()
        sock.settimeout(timeout)
        try:
            while True:
                line = self._read_response()
                if "event" in line:
                    return line
                # an answer nobody waits for (e.g. to a request whose call() gave up): skip it
        except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0, nothing waiting
            return None
        except ProtocolError:
            raise
        except ControlClientError:
            raise StreamClosed(
                "se-appliance closed the event stream (it stopped, or this reader fell behind)"
            ) from None
        except OSError as e:
            self.close()
            raise StreamClosed(f"lost the connection to se-appliance: {e.strerror or e}") from None
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""
            self._events.clear()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as e:
            sock.close()
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
                raise ServerNotRunning(self.path) from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDenied(
                    f"permission denied on {self.path}: run as root or as a member of group "
                    "se-appliance"
                ) from None
            raise ControlClientError(f"cannot connect to {self.path}: {e.strerror}") from None
        self._sock = sock
        return sock

    def _read_response(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                self.close()
                raise ControlClientError("se-appliance closed the connection without answering")
            self._buffer += chunk
            if len(self._buffer) > MAX_RESPONSE:
                self.close()
                raise ProtocolError("the server's answer is too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            response = json.loads(line)
        except ValueError:
            self.close()
            raise ProtocolError("the server's answer is not JSON") from None
        if not isinstance(response, dict):
            raise ProtocolError("the server's answer is not a JSON object")
        if response.get("v") != VERSION:
            raise ProtocolError(f"the server speaks control protocol {response.get('v')!r}")
        return response
