#!/bin/sh
# Run inside a booted Debian 12 container (systemd-nspawn -b) by test_deb.py: the package under
# real systemd. One line per check on /root/results: "ok NAME" or "fail NAME: what happened".
# The container powers off when this ends (se-deb-test.service: SuccessAction/FailureAction).
exec >/root/transcript 2>&1
set -x
results=/root/results
: >"$results"
ok() { echo "ok $1" >>"$results"; }
fail() { echo "fail $1: $2" >>"$results"; }
check() {  # NAME COMMAND...: ok when the command succeeds
    name=$1
    shift
    if "$@"; then ok "$name"; else fail "$name" "$* exited $?"; fi
}
wait_active() {
    for _ in $(seq 50); do
        [ "$(systemctl is-active se-appliance)" = active ] && return 0
        sleep 0.2
    done
    return 1
}

echo "se-appliance se-appliance/domain string example.test" | debconf-set-selections
check install env DEBIAN_FRONTEND=noninteractive dpkg -i /root/se-appliance.deb
check started wait_active
status=$(systemctl show -p StatusText --value se-appliance)
[ "$status" = "serving example.test" ] && ok notify-ready || fail notify-ready "StatusText=$status"

check se-ctl-root se-ctl status
useradd --create-home --groups se-appliance admin1
check se-ctl-group-member runuser -u admin1 -- se-ctl status
useradd --create-home outsider
if runuser -u outsider -- se-ctl status; then fail se-ctl-outsider "allowed"; else ok se-ctl-outsider; fi

check tls python3.11 -c "
import socket, ssl
ctx = ssl.create_default_context(cafile='/var/lib/se-appliance/cert.pem')
with ctx.wrap_socket(socket.create_connection(('127.0.0.1', 5223)), server_hostname='example.test') as s:
    assert s.version() in ('TLSv1.2', 'TLSv1.3')
"

check reload systemctl reload se-appliance
sleep 1
journalctl -u se-appliance --no-pager | grep -q "reload: done" && ok reload-logged \
    || fail reload-logged "no 'reload: done' in the journal"

pid=$(systemctl show -p MainPID --value se-appliance)
grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$pid/status" && ok no-capabilities \
    || fail no-capabilities "$(grep CapEff "/proc/$pid/status")"
grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$pid/status" && ok no-new-privileges \
    || fail no-new-privileges "not set"

# an upgrade restarts the service (the same build again takes the same path)
check upgrade env DEBIAN_FRONTEND=noninteractive dpkg -i /root/se-appliance.deb
check restarted wait_active
[ "$(systemctl show -p MainPID --value se-appliance)" != "$pid" ] && ok new-process \
    || fail new-process "the service was not restarted"

exposure=$(systemd-analyze security se-appliance | sed -n 's/.*exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "exposure $exposure" >>"$results"

if journalctl -u se-appliance --no-pager | grep -q Traceback; then
    fail no-traceback "$(journalctl -u se-appliance --no-pager | grep -A5 Traceback | head -20)"
else
    ok no-traceback
fi

userdel -r admin1
check purge env DEBIAN_FRONTEND=noninteractive apt-get purge -y se-appliance
left=$(ls -d /etc/se-appliance /var/lib/se-appliance /opt/venvs/se-appliance 2>/dev/null)
[ -z "$left" ] && ok nothing-left || fail nothing-left "$left"
getent passwd se-appliance && fail user-gone "still there" || ok user-gone
echo done >>"$results"
