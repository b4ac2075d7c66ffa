"""SIP transactions per second: our server against Kamailio, driven by the same sipp scenarios.

Four scenarios, each a sipp "call" from one of U users (digest MD5 with qop=auth on every
request, as a real client meets it):

    register   REGISTER -> 401 -> REGISTER with credentials -> 200
    message    MESSAGE -> 407 -> MESSAGE with credentials -> relayed to a registered contact
               (a second sipp answering 200) -> 200
    subscribe  SUBSCRIBE (Expires: 0, a fetch) -> 407 -> SUBSCRIBE with credentials -> 200,
               then the NOTIFY -> 200
    publish    PUBLISH (PIDF) -> 407 -> with credentials -> 200 + SIP-ETag, then the removal
               (SIP-If-Match, Expires: 0) -> 407 -> with credentials -> 200

Both servers run on this machine, on loopback UDP: ours (`se-appliance --config FILE`, its
own temp data dir) and Debian's Kamailio, configured here with one worker (children=1), the
sanity module on, usrloc in memory, auth from a fixed password (pv_www_authenticate), and
presence + presence_xml over db_text (force_active, so no XCAP rules). Runs are interleaved
(ours, Kamailio, Kamailio, ours, ...), each bounded by --seconds; the median of --rounds runs
is reported as completed calls per second, with our/Kamailio ratios, and so is the CPU time
each server (its process and their children, read from /proc) spent per completed call,
counted from the start of a run to the end of the quiet after it: on a shared machine
a steadier measure of cost than the rate.

    python benchmarks/sip_transactions.py --users 20 --seconds 5 --rounds 3

Where the time goes: with SE_BENCH_PROFILE=cprofile (or =py-spy when py-spy is installed),
one more run per --profile scenario (REGISTER by default) against a separate, profiled instance
of our server follows the measured ones, and the top functions by own time and by cumulative
time are printed (SE_BENCH_PROFILE_KEEP=DIR keeps the cProfile files there). Profiling slows
the server; that run's rate is not part of the figures.
--scenarios limits the measured scenarios (all four by default).

Needs sipp (Debian sip-tester) and kamailio + kamailio-presence-modules. Stops by itself;
kills only the processes it started.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from xmpp_sessions import DOMAIN, PASSWORD, executable, free_port

KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
KAMAILIO_DBTEXT = Path("/usr/share/kamailio/dbtext/kamailio")
SCENARIOS = ("register", "message", "subscribe", "publish")

# -- sipp scenarios -------------------------------------------------------------------------

HEAD = """Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:[field0]@[field2]>;tag=[pid]x[call_number]
Call-ID: [call_id]
Max-Forwards: 70"""


def challenged(request: str, cseq: int, code: int, extra: str = "", body: str = "") -> str:
    """A request sent twice: without credentials, then answering the 401/407 challenge."""
    length = "Content-Length: [len]"
    first = f"{request}\n{HEAD}\nCSeq: {cseq} {request.split()[0]}\n{extra}{length}\n\n{body}"
    second = (
        f"{request}\n{HEAD}\nCSeq: {cseq + 1} {request.split()[0]}\n[field1]\n{extra}{length}\n\n"
        f"{body}"
    )
    return (
        f'  <send retrans="500"><![CDATA[\n{first}\n]]></send>\n'
        f'  <recv response="{code}" auth="true"/>\n'
        f'  <send retrans="500"><![CDATA[\n{second}\n]]></send>\n'
    )


def scenario(name: str, body: str) -> str:
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="{name}">\n{body}</scenario>\n'


PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:[field0]@[field2]">'
    '<tuple id="t1"><status><basic>open</basic></status></tuple></presence>'
)

# injection fields: 0 user, 1 [authentication ...], 2 domain, 3 contact host:port, 4 target
SIPP_XML = {
    "register": scenario(
        "register",
        challenged(
            "REGISTER sip:[field2] SIP/2.0",
            1,
            401,
            "To: <sip:[field0]@[field2]>\nContact: <sip:[field0]@[field3]>\nExpires: 3600\n",
        )
        + '  <recv response="200"/>\n',
    ),
    "message": scenario(
        "message",
        challenged(
            "MESSAGE sip:[field4]@[field2] SIP/2.0",
            1,
            407,
            "To: <sip:[field4]@[field2]>\nContent-Type: text/plain\n",
            "a line of text for the benchmark",
        )
        + '  <recv response="200"/>\n',
    ),
    "subscribe": scenario(
        "subscribe",
        challenged(
            "SUBSCRIBE sip:[field4]@[field2] SIP/2.0",
            1,
            407,
            "To: <sip:[field4]@[field2]>\nContact: <sip:[field0]@[field3]>\nEvent: presence\n"
            "Accept: application/pidf+xml\nExpires: 0\n",
        )
        + '  <recv response="200"/>\n'
        + '  <recv request="NOTIFY"/>\n'
        + "  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n"
        "[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n",
    ),
    "publish": scenario(
        "publish",
        challenged(
            "PUBLISH sip:[field0]@[field2] SIP/2.0",
            1,
            407,
            "To: <sip:[field0]@[field2]>\nEvent: presence\nExpires: 3600\n"
            "Content-Type: application/pidf+xml\n",
            PIDF,
        )
        + '  <recv response="200">\n    <action>\n'
        '      <ereg regexp=".*" search_in="hdr" header="SIP-ETag:" assign_to="etag"/>\n'
        "    </action>\n  </recv>\n"
        + challenged(
            "PUBLISH sip:[field0]@[field2] SIP/2.0",
            3,
            407,
            "To: <sip:[field0]@[field2]>\nEvent: presence\nExpires: 0\nSIP-If-Match: [$etag]\n",
        )
        + '  <recv response="200"/>\n',
    ),
    # the registered contact that MESSAGEs are relayed to
    "uas": scenario(
        "uas",
        '  <recv request="MESSAGE"/>\n'
        "  <send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]u\n"
        "[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n",
    ),
}

# -- Kamailio --------------------------------------------------------------------------------

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{domain}"
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("usrloc", "db_mode", 0)
modparam("auth", "qop", "auth")
modparam("presence", "db_url", "text://{db}")
modparam("presence", "server_address", "sip:127.0.0.1:{port}")
modparam("presence", "subs_db_mode", 0)
modparam("presence_xml", "db_url", "text://{db}")
modparam("presence_xml", "force_active", 1)

request_route {{
    if (!sanity_check("17895", "7")) {{ exit; }}
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "{password}", "0")) {{ www_challenge("$td", "1"); exit; }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (!pv_proxy_authenticate("$fd", "{password}", "0")) {{ proxy_challenge("$fd", "1"); exit; }}
    if (is_method("PUBLISH|SUBSCRIBE")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        if (is_method("PUBLISH")) {{ handle_publish(); }} else {{ handle_subscribe(); }}
        t_release();
        exit;
    }}
    if (is_method("MESSAGE")) {{
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


@dataclass
class Target:
    name: str
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for p in [*self.extra, self.proc]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def start_ours(root: Path, users: list[str], profile_to: Path | None = None) -> Target:
    root.mkdir(parents=True, exist_ok=True)
    t = Target("ours", root, free_port())
    cfg = root / "config.toml"
    cfg.write_text(
        f'domain = "{DOMAIN}"\ndata_dir = "{root / "data"}"\n[listen]\n'
        f'c2s = ["127.0.0.1:{free_port()}"]\nc2s_tls = []\n'
        f'sip = ["127.0.0.1:{t.port}"]\nsip_tls = []\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "SE_CONFIG"}
    if profile_to is None:
        cmd = [executable("se-appliance"), "--config", str(cfg)]
    else:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_to)]
        cmd += ["-m", "standard_edition.main", "--config", str(cfg)]
    log = (root / "server.log").open("ab")
    t.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [executable("se-ctl"), "--config", str(cfg), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    end = time.monotonic() + 60
    while ctl("status").returncode != 0:
        if t.proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"our server did not start: {(root / 'server.log').read_text()}")
        time.sleep(0.2)
    pw = root / "pw"
    pw.write_text(PASSWORD + "\n")
    for u in users:
        if ctl("user", "show", f"{u}@{DOMAIN}").returncode != 0:
            r = ctl("user", "add", f"{u}@{DOMAIN}", "--password-file", str(pw))
            if r.returncode != 0:
                raise RuntimeError(f"se-ctl user add {u}: {r.stderr.strip()}")
    return t


def start_kamailio(root: Path) -> Target:
    root.mkdir(parents=True, exist_ok=True)
    t = Target("kamailio", root, free_port())
    db = root / "dbtext"
    shutil.copytree(KAMAILIO_DBTEXT, db, dirs_exist_ok=True)
    cfg = root / "kamailio.cfg"
    cfg.write_text(
        KAMAILIO_CFG.format(
            port=t.port, domain=DOMAIN, modules=KAMAILIO_MODULES, db=db, password=PASSWORD
        )
    )
    log = (root / "kamailio.log").open("ab")
    t.proc = subprocess.Popen(
        ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "256", "-M", "16", "-Y", str(root)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.5)
    if t.proc.poll() is not None:
        raise RuntimeError(f"kamailio did not start: {(root / 'kamailio.log').read_text()[-3000:]}")
    return t


# -- sipp ------------------------------------------------------------------------------------


def sipp(
    target: Target,
    work: Path,
    name: str,
    rows: list[str],
    *,
    seconds: float,
    calls: int | None = None,
    limit: int = 64,
    port: int = 0,
) -> tuple[int, int, float]:
    """Run one scenario against `target`; (successful, failed, elapsed seconds)."""
    work.mkdir(parents=True, exist_ok=True)
    xml = work / f"{name}.xml"
    xml.write_text(SIPP_XML[name])
    inf = work / f"{name}.csv"
    inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    stat = work / f"{name}-{target.name}-{time.monotonic_ns()}.csv"
    cmd = ["sipp", f"127.0.0.1:{target.port}", "-sf", str(xml), "-inf", str(inf)]
    cmd += ["-t", "u1", "-i", "127.0.0.1", "-p", str(port), "-nostdin"]
    cmd += ["-r", "100000", "-l", str(limit), "-max_retrans", "5", "-recv_timeout", "5s"]
    cmd += ["-m", str(calls or 10_000_000), "-timeout", f"{seconds:g}s"]
    cmd += ["-trace_stat", "-stf", str(stat), "-fd", "1"]
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=work, capture_output=True, timeout=seconds + 30)
    elapsed = time.monotonic() - t0
    ok, failed = _stat_totals(stat)
    return ok, failed, elapsed


def _stat_totals(path: Path) -> tuple[int, int]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    if len(lines) < 2:
        return 0, 0
    head = lines[0].split(";")
    last = lines[-1].split(";")
    row = dict(zip(head, last, strict=False))
    return int(row.get("SuccessfulCall(C)", 0) or 0), int(row.get("FailedCall(C)", 0) or 0)


def rows_for(users: list[str], contact: str, target: str) -> list[str]:
    auth = f"[authentication username={{u}} password={PASSWORD}]"
    return [f"{u};{auth.format(u=u)};{DOMAIN};{contact};{target}" for u in users]


def prepare_sink(target: Target, work: Path, uas_port: int, sink: str) -> None:
    """A registered contact that answers MESSAGEs: sipp as UAS, registered as `sink`."""
    uas = work / "uas.xml"
    work.mkdir(parents=True, exist_ok=True)
    uas.write_text(SIPP_XML["uas"])
    p = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(uas),
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            str(uas_port),
            "-nostdin",
            "-timeout",
            "3600s",
            "-l",
            "100000",  # as a UAS, sipp's default limit of open calls would drop MESSAGEs
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target.extra.append(p)
    rows = rows_for([sink], f"127.0.0.1:{uas_port}", sink)
    ok, _, _ = sipp(target, work, "register", rows, seconds=10, calls=1, limit=1)
    if ok != 1:
        raise RuntimeError(f"{target.name}: the MESSAGE sink did not register")


def measure(args: argparse.Namespace, work: Path, users: list[str], sink: str) -> dict:
    ours = start_ours(work / "ours", [*users, sink])
    kam = start_kamailio(work / "kamailio")
    results: dict[str, dict[str, list[float]]] = {
        s: {"ours": [], "kamailio": []} for s in args.scenarios
    }
    cpu: dict[str, dict[str, list[float]]] = {
        s: {"ours": [], "kamailio": []} for s in args.scenarios
    }
    failures: dict[str, int] = {"ours": 0, "kamailio": 0}
    try:
        for t in (ours, kam):
            prepare_sink(t, work / f"sink-{t.name}", free_udp_port(), sink)
        client_port = free_udp_port()
        contact = f"127.0.0.1:{client_port}"
        for scen in args.scenarios:
            rows = rows_for(users, contact, sink)
            for rnd in range(args.rounds):
                order = (ours, kam) if rnd % 2 == 0 else (kam, ours)
                for t in order:
                    assert t.proc is not None
                    cpu0 = cpu_seconds(t.proc.pid)
                    ok, failed, elapsed = sipp(
                        t, work / "runs", scen, rows, seconds=args.seconds, port=client_port,
                        limit=args.limit,
                    )  # fmt: skip
                    time.sleep(args.pause)  # the run's leftover retransmissions die out
                    per_call = (cpu_seconds(t.proc.pid) - cpu0) / ok * 1e6 if ok else float("nan")
                    rate = ok / elapsed if elapsed else 0.0
                    results[scen][t.name].append(rate)
                    cpu[scen][t.name].append(per_call)
                    failures[t.name] += failed
                    print(
                        f"  {scen:9} round {rnd + 1} {t.name:8} {ok:7} calls "
                        f"{failed:5} failed {elapsed:5.1f}s  {rate:9.0f}/s  "
                        f"{per_call:7.0f} us CPU/call",
                        flush=True,
                    )
    finally:
        ours.stop()
        kam.stop()
    return {"results": results, "cpu": cpu, "failures": failures}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by `pid` and its descendants (Linux /proc)."""
    procs: dict[int, tuple[int, int]] = {}  # pid -> (parent, clock ticks used)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # after "pid (comm)": state ppid ... utime (12th) stime (13th)
        procs[int(d.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        total += procs.get(p, (0, 0))[1]
        todo.extend(c for c, (parent, _) in procs.items() if parent == p)
    return total / os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile(
    args: argparse.Namespace, work: Path, users: list[str], how: str, scen: str, sink: str
) -> None:
    """One run of `scen` against a profiled instance of our server; where the time goes."""
    root = work / f"profiled-{scen}"
    out = root / f"{scen}.prof"
    if how == "py-spy" and shutil.which("py-spy"):
        t = start_ours(root, [*users, sink])
        assert t.proc is not None
        if scen == "message":
            prepare_sink(t, root / "sink", free_udp_port(), sink)
        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(t.proc.pid),
                "--duration",
                f"{args.seconds:g}",
                "--format",
                "speedscope",
                "-o",
                str(root / f"{scen}.speedscope.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = free_udp_port()
        sipp(t, root / "run", scen, rows_for(users, f"127.0.0.1:{port}", sink),
             seconds=args.seconds, port=port, limit=args.limit)  # fmt: skip
        spy.wait(60)
        t.stop()
        print(f"py-spy profile: {root / f'{scen}.speedscope.json'} (open in speedscope.app)")
        return
    root.mkdir(parents=True, exist_ok=True)
    t = start_ours(root, [*users, sink], profile_to=out)
    if scen == "message":
        prepare_sink(t, root / "sink", free_udp_port(), sink)
    port = free_udp_port()
    ok, failed, elapsed = sipp(
        t, root / "run", scen, rows_for(users, f"127.0.0.1:{port}", sink),
        seconds=args.seconds, port=port, limit=args.limit,
    )  # fmt: skip
    t.stop()
    print(
        f"\nprofiled {scen.upper()} run (cProfile, slower): {ok / elapsed:.0f}/s, {failed} failed"
    )
    if not out.exists():
        print("no profile written (the server did not exit cleanly)")
        return
    keep = os.environ.get("SE_BENCH_PROFILE_KEEP")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)
        print(f"profile kept as {Path(keep) / out.name}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    p.add_argument("--rounds", type=int, default=3, help="runs per server and scenario")
    p.add_argument("--limit", type=int, default=64, help="calls in flight (sipp -l)")
    p.add_argument("--pause", type=float, default=3.0, help="seconds of quiet between runs")
    p.add_argument(
        "--scenarios", type=_scenarios, default=list(SCENARIOS), help="comma list to measure"
    )
    p.add_argument(
        "--profile",
        type=_scenarios,
        default=["register"],
        help="comma list of scenarios profiled when SE_BENCH_PROFILE is set",
    )
    args = p.parse_args(argv)
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install sip-tester kamailio "
                  "kamailio-presence-modules)", file=sys.stderr)  # fmt: skip
            return 1
    users = [f"bench{i}" for i in range(args.users)]
    sink = "sink"
    with tempfile.TemporaryDirectory(prefix="sip-bench-") as tmp:
        work = Path(tmp)
        print(
            f"sip_transactions: {args.users} users, {args.rounds} rounds of {args.seconds:g}s, "
            f"{args.limit} calls in flight, UDP loopback",
            flush=True,
        )
        m = measure(args, work, users, sink)
        print(
            "\nscenario    ours/s   kamailio/s   ours/kamailio   "
            "CPU us/call: ours  kamailio  ours/kamailio   (median of rounds)"
        )
        for scen in args.scenarios:
            o = statistics.median(m["results"][scen]["ours"])
            k = statistics.median(m["results"][scen]["kamailio"])
            oc = statistics.median(m["cpu"][scen]["ours"])
            kc = statistics.median(m["cpu"][scen]["kamailio"])
            print(
                f"{scen:9} {o:9.0f} {k:12.0f} {o / k if k else float('nan'):15.3f} "
                f"{oc:17.0f} {kc:9.0f} {oc / kc if kc else float('nan'):14.2f}"
            )
        print(f"failed calls: ours {m['failures']['ours']}, kamailio {m['failures']['kamailio']}")
        how = os.environ.get("SE_BENCH_PROFILE", "")
        if how:
            for scen in args.profile:
                profile(args, work, users, how, scen, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
