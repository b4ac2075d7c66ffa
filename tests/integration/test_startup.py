"""A server that cannot start says why in one line and exits, instead of hanging."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from .server import clean_env, executable, free_port


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
