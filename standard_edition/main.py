"""`se-appliance`: run the server in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import defer
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    globalLogBeginner,
)

from standard_edition import __version__, config


def _format(event: dict[str, Any]) -> str | None:
    if os.environ.get("JOURNAL_STREAM"):
        # under systemd the journal stamps each line itself; ours would be a second time
        return formatEventAsClassicLogText(event, formatTime=lambda t: "-")
    return formatEventAsClassicLogText(event, formatTime=lambda t: _time(t))


def _time(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t or 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="se-appliance",
        description="SE Appliance: IM and presence server (runs in the foreground).",
        epilog="Config lookup: --config FILE, else $SE_CONFIG, else "
        "/etc/se-appliance/config.toml, else the embedded demo default.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument("--version", action="version", version=f"se-appliance {__version__}")
    parser.add_argument("--debug", action="store_true", help="log debug messages too")
    args = parser.parse_args(argv)

    try:
        cfg = config.load(config.locate(args.config))
    except config.ConfigError as e:
        print(f"se-appliance: {e}", file=sys.stderr)
        return 1

    level = LogLevel.debug if args.debug else LogLevel.info
    observer = FilteringLogObserver(
        FileLogObserver(sys.stderr, _format), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    from twisted.internet import reactor

    from standard_edition.server import Server, StartupError

    server = Server(reactor, cfg)
    exit_code = [0]

    @defer.inlineCallbacks
    def start():  # type: ignore[no-untyped-def]
        try:
            yield server.start()
        except StartupError as e:
            print(f"se-appliance: {e}", file=sys.stderr)
            exit_code[0] = 1
            reactor.stop()  # type: ignore[attr-defined]
            return
        except Exception:
            from twisted.python import log as legacy

            legacy.err(None, "start failed")
            exit_code[0] = 1
            reactor.stop()  # type: ignore[attr-defined]
            return
        reactor.addSystemEventTrigger("before", "shutdown", _sd_notify, "STOPPING=1")  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger("before", "shutdown", server.stop)  # type: ignore[attr-defined]
        _tune_gc()
        _banner(cfg, server)
        _sd_notify(f"READY=1\nSTATUS=serving {cfg.domain}")

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    _reload_on_sighup(reactor, server)
    reactor.run()  # type: ignore[attr-defined]
    return exit_code[0]


def _banner(cfg: config.Config, server: Any) -> None:
    lines = [f"SE Appliance {__version__} serving {cfg.domain} (config: {cfg.source})"]
    for item in server.listeners():
        lines.append(f"  listening: {item['name']:8} {item['address']} ({item['transport']})")
    lines.append(f"  data: {cfg.data_dir}   control socket: {cfg.control_socket}")
    ctl = "se-ctl" + (f" --config {cfg.source}" if cfg.source != "embedded default" else "")
    lines.append(f"  add a user: {ctl} user add alice@{cfg.domain}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _tune_gc() -> None:
    """Start-up objects out of the collector's way, thresholds raised (gc_tuning says why)."""
    import gc

    from twisted.logger import Logger

    from standard_edition import gc_tuning

    frozen = gc_tuning.tune_after_start()
    Logger(namespace="se").info(
        "garbage collector: {frozen} start-up objects frozen, thresholds {thresholds}",
        frozen=frozen,
        thresholds="/".join(str(t) for t in gc.get_threshold()),
    )


def _reload_on_sighup(reactor: Any, server: Any) -> None:
    """SIGHUP (systemctl reload) calls server.reload() on the reactor thread."""
    from twisted.logger import Logger

    log = Logger(namespace="se")

    def reload() -> None:
        _sd_notify("RELOADING=1")
        d = defer.maybeDeferred(server.reload)
        d.addErrback(lambda f: log.failure("reload failed; the server runs on as before", f))
        d.addBoth(lambda _: _sd_notify("READY=1"))

    # the handler only hands over: callFromThread is safe to call from a signal handler
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))


def _sd_notify(state: str) -> None:
    """Tell systemd how the service is doing (Type=notify, sd_notify(3)); no-op outside it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as e:
        print(f"se-appliance: cannot notify systemd at {address!r}: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
