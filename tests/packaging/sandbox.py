"""Run a command under the system-call sandbox of se-appliance.service, without systemd.

    setpriv --reuid=U --regid=G --init-groups --no-new-privs --bounding-set=-all \\
        /usr/bin/python3 sandbox.py [--strict] UNIT_FILE -- COMMAND...

Reads the unit's SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute= and installs seccomp filters that do what systemd does for them
(src/shared/seccomp-util.c), then execs COMMAND. With --strict a system call the filter refuses
kills the process, where the unit makes it fail with SystemCallErrorNumber=: a test then sees
it instead of a quiet error. The filesystem settings (ProtectSystem= and the like) are not
reproduced. Needs Debian's python3-seccomp, so it runs under /usr/bin/python3.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
from typing import Any

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def unit_settings(path: str) -> dict[str, list[str]]:
    """The [Service] settings, each key with all its values in order."""
    out: dict[str, list[str]] = {}
    section = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line:
                key, _, value = line.partition("=")
                out.setdefault(key, []).append(value)
    return out


def syscall_set(name: str, seen: set[str] | None = None) -> set[str]:
    """A syscall or an @group, expanded as systemd-analyze syscall-filter lists it."""
    if not name.startswith("@"):
        return {name}
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= syscall_set(item, seen)
    return names


def allow_list(values: list[str]) -> set[str]:
    """SystemCallFilter=: the first list allows, later ~lists take away (systemd.exec(5))."""
    allowed: set[str] = set()
    for value in values:
        deny = value.startswith("~")
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= syscall_set(item)
        allowed = allowed - names if deny else allowed | names
    return allowed


def add(f: Any, action: Any, name: str, *args: Any) -> None:
    # a name this libseccomp or architecture does not have is skipped
    with contextlib.suppress(RuntimeError, ValueError, OSError):
        f.add_rule(action, name, *args)


def install(settings: dict[str, list[str]], strict: bool = False) -> None:
    """One filter per setting, as systemd stacks them; the allow-list last, since it does not
    allow seccomp() itself."""
    import seccomp  # type: ignore[import-not-found]  # Debian's python3-seccomp

    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        eperm = seccomp.ERRNO(errno.EPERM)
        wx = PROT_WRITE | PROT_EXEC
        add(f, eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            add(f, eperm, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
        add(f, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
        f.load()
    if "RestrictAddressFamilies" in settings:
        names = " ".join(settings["RestrictAddressFamilies"]).split()
        allowed = {int(getattr(socket, n)) for n in names}
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
        for family in range(max(allowed)):
            if family not in allowed:
                add(f, refuse, "socket", seccomp.Arg(0, seccomp.EQ, family))
        add(f, refuse, "socket", seccomp.Arg(0, seccomp.GT, max(allowed)))
        f.load()
    if "SystemCallFilter" in settings:
        error = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
        names = allow_list(settings["SystemCallFilter"]) | {"execve"}  # to exec the command
        refused = seccomp.KILL_PROCESS if strict else seccomp.ERRNO(error)
        f = seccomp.SyscallFilter(defaction=refused)
        for name in sorted(names):
            add(f, seccomp.ALLOW, name)
        f.load()


def main() -> None:
    args = sys.argv[1:]
    strict = args[:1] == ["--strict"]
    unit, sep, *command = args[1:] if strict else args
    if sep != "--" or not command:
        sys.exit("usage: sandbox.py [--strict] UNIT_FILE -- COMMAND...")
    install(unit_settings(unit), strict)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
