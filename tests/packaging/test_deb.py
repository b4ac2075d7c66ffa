"""The .deb on this machine: lintian, install, serve, upgrade, reconfigure, remove, purge.

Slow (two builds of the package: minutes), and it installs and purges se-appliance here as
root: it runs only with SE_PACKAGE_TESTS=1, which packaging/test-deb sets. The service is
started the way its unit starts it, without systemd (debhost.Service).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from standard_edition import __version__

from . import xmpp
from .debhost import (
    CONFIG,
    DATA,
    PACKAGE,
    UNIT,
    VENV,
    Service,
    apt_get,
    build,
    group_exists,
    installed_version,
    listen_on_loopback,
    package_state,
    preseed,
    run,
    se_ctl,
    user_exists,
)

# two builds come first: the whole module may take many minutes
pytestmark = [pytest.mark.package, pytest.mark.timeout(1800)]

DOMAIN = "packaging.test"
PASSWORD = "Deb-Test-Password-7"
ADMIN = "se-deb-test-admin"  # a member of group se-appliance, made and removed by the tests
CERT = DATA / "cert.pem"
KEY = DATA / "key.pem"
# a Debian 12 root file system for the container test, made once with mmdebstrap
BOOKWORM = Path("/var/cache/se-appliance-tests/bookworm.tar")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two builds of the checkout with packaging/build-deb, the second newer; SE_DEB_PREVIOUS
    names an older .deb to upgrade from instead of the first (e.g. the release in the field)."""
    if os.geteuid() != 0:
        pytest.fail("the package tests install the .deb: run packaging/test-deb as root")
    if package_state():
        pytest.fail(f"{PACKAGE} is installed here; the tests install and purge it: purge it first")
    out = tmp_path_factory.mktemp("debs")
    previous = os.environ.get("SE_DEB_PREVIOUS")
    old = Path(previous) if previous else build(out, f"{__version__}+test1")
    new = build(out, f"{__version__}+test2")
    return {"old": old, "new": new}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    """Leaves the machine as it found it: the package purged, the test admin gone."""
    yield tmp_path
    for proc in run(["pgrep", "-u", PACKAGE], check=False).stdout.split():
        run(["kill", proc], check=False)
    if package_state():
        apt_get("purge", PACKAGE)
    if user_exists(ADMIN):
        run(["userdel", ADMIN], check=False)


def deb_version(deb: Path) -> str:
    return run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def digest(*paths: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def password_file(tmp: Path) -> Path:
    f = tmp / "password"
    f.write_text(PASSWORD + "\n")
    return f


def certificate_names(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)


def reconfigure_domain(domain: str) -> subprocess.CompletedProcess[str]:
    """dpkg-reconfigure as an admin answers it: the editor frontend, with an 'editor' that
    types the new domain."""
    editor = Path(tempfile.gettempdir()) / f"se-deb-test-editor-{os.getpid()}"
    editor.write_text(
        f'#!/bin/sh\nsed -i \'s|^{PACKAGE}/domain=.*|{PACKAGE}/domain="{domain}"|\' "$1"\n'
    )
    editor.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_FRONTEND"}
    try:
        return subprocess.run(
            ["dpkg-reconfigure", "-f", "editor", PACKAGE],
            env={**env, "EDITOR": str(editor), "VISUAL": str(editor)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        editor.unlink()


def schema_version() -> tuple[int, int]:
    """(the database's schema version, the newest migration of the installed code)."""
    with sqlite3.connect(f"file:{DATA / 'se.sqlite3'}?mode=ro", uri=True) as db:
        have = db.execute("PRAGMA user_version").fetchone()[0]
    newest = run(
        [
            str(VENV / "bin" / "python"),
            "-I",
            "-c",
            "from standard_edition.store.migrations import MIGRATIONS; print(MIGRATIONS[-1][0])",
        ]
    ).stdout
    return have, int(newest)


def test_lintian_reports_no_errors(debs: dict[str, Path]) -> None:
    out = run(["lintian", "--tag-display-limit", "0", str(debs["new"])], check=False).stdout
    errors = [line for line in out.splitlines() if line.startswith("E:")]
    warnings = [line for line in out.splitlines() if line.startswith("W:")]
    print("lintian warnings:", *warnings or ["none"], sep="\n  ")
    assert not errors, "\n".join(errors)


def test_packaged_unit_is_hardened_to_exposure_2_or_less(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    run(["dpkg-deb", "-x", str(debs["new"]), str(tmp_path)])
    unit = tmp_path / str(UNIT).lstrip("/")
    out = run(["systemd-analyze", "security", "--offline=true", str(unit)], check=False).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out[-2000:]
    print(f"systemd-analyze security exposure: {m.group(1)}")
    assert float(m.group(1)) <= 2.0, out


def test_install_serve_upgrade_remove_purge(debs: dict[str, Path], host: Path) -> None:
    # -- install, the domain preseeded as for an unattended installation
    preseed(DOMAIN)
    apt_get("install", str(debs["old"]))
    assert installed_version() == deb_version(debs["old"])

    for path in ("/usr/sbin/se-appliance", "/usr/bin/se-ctl"):
        assert Path(path).resolve().parent == VENV / "bin", path
        assert os.access(path, os.X_OK), path
    assert run(["/usr/sbin/se-appliance", "--version"]).stdout.startswith("se-appliance ")
    assert UNIT.is_file()
    run(["systemd-analyze", "verify", str(UNIT)])
    for page in ("man1/se-ctl.1.gz", "man8/se-appliance.8.gz"):
        assert (Path("/usr/share/man") / page).is_file(), page

    user = pwd.getpwnam(PACKAGE)
    assert user.pw_uid < 1000 and user.pw_dir == str(DATA)
    assert user.pw_shell.endswith("nologin")
    assert grp.getgrgid(user.pw_gid).gr_name == PACKAGE

    cfg = CONFIG.read_text()
    assert re.search(rf'^domain = "{re.escape(DOMAIN)}"$', cfg, re.M), "the preseeded domain"
    assert stat.S_IMODE(CONFIG.stat().st_mode) == 0o644 and CONFIG.stat().st_uid == 0
    checked = run(
        [
            str(VENV / "bin" / "python"),
            "-I",
            "-c",
            "import sys; from pathlib import Path; from standard_edition import config; "
            "print(config.load(Path(sys.argv[1])).domain)",
            str(CONFIG),
        ]
    )
    assert checked.stdout.strip() == DOMAIN, "the server's own config check passes"

    st = DATA.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o750)
    assert certificate_names(CERT)[0] == DOMAIN, "the self-signed certificate is made at install"
    assert KEY.stat().st_uid == user.pw_uid and stat.S_IMODE(KEY.stat().st_mode) == 0o600

    # -- serve: the unit's command as the service user; a stock client; se-ctl
    ports = listen_on_loopback()  # an admin's edit, which the upgrade below must keep
    log = host / "service.log"
    service = Service(log).start()
    try:
        pw = password_file(host)
        for name in ("alice", "bob"):
            se_ctl("user", "add", f"{name}@{DOMAIN}", "--password-file", str(pw))
        # bob is offline: the message waits in the database through the upgrade
        xmpp.login_and_send(
            ports["c2s"], CERT, f"alice@{DOMAIN}", PASSWORD, f"bob@{DOMAIN}", "kept across upgrades"
        )
        status = json.loads(se_ctl("status", "--json").stdout)
        assert status["domain"] == DOMAIN and status["users"] == 2

        sock = (DATA / "control.sock").stat()
        assert stat.S_IMODE(sock.st_mode) == 0o660 and sock.st_gid == user.pw_gid
        run(["useradd", "--system", "--no-create-home", "--groups", PACKAGE, ADMIN])
        assert se_ctl("status", user=ADMIN, check=False).returncode == 0, "group members may"
        refused = se_ctl("status", user="nobody", check=False)
        assert refused.returncode == 1 and "permission denied" in refused.stderr

        service.reload()  # systemctl reload: the certificate is read again
        assert "reload: certificate" in service.log()
        assert service.stop() == 0
    finally:
        service.close()

    # -- upgrade with data present: config, data and certificate kept; migrations to the newest
    kept = digest(CONFIG, CERT, KEY)
    apt_get("install", str(debs["new"]))
    assert installed_version() == deb_version(debs["new"])
    assert digest(CONFIG, CERT, KEY) == kept
    service = Service(log).start()
    try:
        body = xmpp.login_and_receive(ports["c2s"], CERT, f"bob@{DOMAIN}", PASSWORD)
        assert body == "kept across upgrades"
        assert se_ctl("status").returncode == 0
        assert service.stop() == 0
    finally:
        service.close()
    have, newest = schema_version()
    assert have == newest, f"database at schema {have}, the code's newest migration is {newest}"

    # -- remove: the service's files go, configuration and data stay
    apt_get("remove", PACKAGE)
    assert package_state() == "rc"
    assert not VENV.exists() and not Path("/usr/bin/se-ctl").exists()
    assert digest(CONFIG, CERT, KEY) == kept and (DATA / "se.sqlite3").exists()
    assert user_exists(PACKAGE)

    # -- purge: says what it deletes, then nothing of the package is left
    run(["userdel", ADMIN])
    purged = apt_get("purge", PACKAGE)
    assert "deleting /var/lib/se-appliance" in purged.stdout + purged.stderr
    assert package_state() == ""
    for left in (
        CONFIG.parent,
        DATA,
        VENV,
        Path("/usr/share/se-appliance"),
        Path("/etc/systemd/system/multi-user.target.wants/se-appliance.service"),
    ):
        assert not left.exists(), f"{left} is left after purge"
    assert not user_exists(PACKAGE) and not group_exists(PACKAGE)
    assert run(["debconf-show", PACKAGE], check=False).stdout.strip() == ""


def test_reinstall_keeps_everything_and_reconfigure_changes_only_the_domain(
    debs: dict[str, Path], host: Path
) -> None:
    preseed(DOMAIN)
    apt_get("install", str(debs["new"]))
    listen_on_loopback()  # an admin's edit
    before = CONFIG.read_text()
    kept = digest(CONFIG, CERT, KEY)

    apt_get("install", "--reinstall", str(debs["new"]))
    assert digest(CONFIG, CERT, KEY) == kept, "a reinstall changes nothing"

    said = reconfigure_domain("other.test")
    assert "every account needs a new password" in said.stderr
    after = CONFIG.read_text()
    assert after == before.replace(f'domain = "{DOMAIN}"', 'domain = "other.test"'), (
        "only the domain line changed"
    )
    assert certificate_names(CERT) == [
        "other.test",
        "conference.other.test",
        "upload.other.test",
    ], "a new self-signed certificate for the new domain"

    # an installation the admin broke is reported, not made worse
    CONFIG.write_text(after + "\nunknown_key = 1\n")
    said = reconfigure_domain("other.test")
    assert "unknown_key: unknown key" in said.stderr
    assert "will not start until" in said.stderr


def test_invalid_preseeded_domain_stops_the_installation(debs: dict[str, Path], host: Path) -> None:
    preseed("not a domain")
    failed = subprocess.run(
        ["apt-get", "-y", "-q", "install", str(debs["new"])],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0
    assert "is not a domain name" in failed.stdout + failed.stderr
    assert not CONFIG.exists()
    preseed(DOMAIN)
    run(["dpkg", "--configure", PACKAGE])  # the admin corrects the answer and finishes
    assert installed_version() == deb_version(debs["new"])


@pytest.mark.skipif(
    os.environ.get("SE_PACKAGE_SYSTEMD") != "1",
    reason="boots Debian 12 with systemd in a container: SE_PACKAGE_SYSTEMD=1",
)
def test_service_under_systemd_in_a_container(debs: dict[str, Path], tmp_path: Path) -> None:
    """What this machine cannot show without systemd: the unit itself, with its sandbox,
    Type=notify, reload and restart on upgrade (in_container.sh). Needs systemd-container and
    mmdebstrap; the first run downloads Debian 12 (about 100 MB)."""
    if not BOOKWORM.exists():
        BOOKWORM.parent.mkdir(parents=True, exist_ok=True)
        include = "systemd,systemd-sysv,dbus,python3.11,procps,passwd"
        partial = BOOKWORM.with_suffix(".partial.tar")
        run(["mmdebstrap", "--variant=important", f"--include={include}", "bookworm", str(partial)])
        partial.rename(BOOKWORM)
    root = tmp_path / "root"
    root.mkdir()
    try:
        run(["tar", "-xf", str(BOOKWORM), "-C", str(root)])
        shutil.copy(debs["new"], root / "root" / "se-appliance.deb")
        script = root / "root" / "in_container.sh"
        shutil.copy(Path(__file__).with_name("in_container.sh"), script)
        script.chmod(0o755)
        units = root / "etc" / "systemd" / "system"
        (units / "se-deb-test.service").write_text(
            "[Unit]\nAfter=multi-user.target\nSuccessAction=poweroff\nFailureAction=poweroff\n"
            "[Service]\nType=oneshot\nExecStart=/root/in_container.sh\n"
        )
        (units / "multi-user.target.wants").mkdir(exist_ok=True)
        (units / "multi-user.target.wants" / "se-deb-test.service").symlink_to(
            "/etc/systemd/system/se-deb-test.service"
        )
        boot = ["systemd-nspawn", "--quiet", "--boot", "--directory", str(root)]
        run([*boot, "--register=no", "--keep-unit", "--private-network"], check=False)
        said = {
            name: path.read_text(errors="replace") if path.exists() else f"(no {name})"
            for name, path in (
                ("results", root / "root" / "results"),
                ("transcript", root / "root" / "transcript"),
            )
        }
        results, transcript = said["results"], said["transcript"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(results)
    failed = [line for line in results.splitlines() if line.startswith("fail")]
    assert "done" in results.splitlines() and not failed, f"{results}\n{transcript[-6000:]}"
    exposure = re.search(r"^exposure ([0-9.]+)$", results, re.M)
    assert exposure and float(exposure.group(1)) <= 2.0, results
