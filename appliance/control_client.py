"""A blocking client for the server's control socket (see standard_edition/control/server.py)."""

from __future__ import annotations

import errno
import json
import socket
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


class ControlClient:
    def __init__(self, path: Path | str, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 1

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

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

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
