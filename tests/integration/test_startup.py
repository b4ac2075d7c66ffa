"""Start-up: a server that cannot start says why in one line and exits, instead of hanging; one
that starts sets its garbage collector up for a long run."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from standard_edition import gc_tuning

from .server import Server, clean_env, executable, free_port


def test_a_taken_port_ends_the_process_with_one_line(tmp_path: Path):
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    config = tmp_path / "config.toml"
    config.write_text(
        'domain = "example.test"\n'
        'data_dir = "var"\n'
        "[listen]\n"
        f'c2s = ["127.0.0.1:{port}"]\n'
        "c2s_tls = []\nsip = []\nsip_tls = []\n"
    )
    try:
        # the store and archive threads are already running when the listener fails
        r = subprocess.run(
            [executable("se-appliance"), "--config", str(config)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("se-appliance:")]
    assert errors == [
        f"se-appliance: listen.c2s: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already"
        " in use"
    ]
    assert "Traceback" not in r.stderr
    # nothing half-written was left: the store opened and closed cleanly
    assert (tmp_path / "var" / "se.sqlite3").exists()


def test_a_started_server_freezes_its_start_up_objects_and_raises_gc_thresholds(
    make_server: Callable[..., Server],
):
    server = make_server()
    line = re.compile(r"garbage collector: (\d+) start-up objects frozen, thresholds (\S+)")
    # the line follows start-up, which may finish a moment after the control socket answers
    end = time.monotonic() + 30
    while not (found := line.search(server.log_path.read_text(errors="replace"))):
        assert time.monotonic() < end, f"no garbage collector line; log:\n{server.log_tail()}"
        time.sleep(0.1)
    frozen, thresholds = int(found[1]), found[2]
    assert thresholds == "/".join(str(t) for t in gc_tuning.THRESHOLDS)
    assert frozen > 10_000  # modules, config, store: the start-up heap left every generation
    assert server.ctl("status").returncode == 0
