#!/bin/sh
# daemon_unit.sh: proves the systemd unit: `systemd-analyze verify` passes on it (with
# ExecStart pointing at the fusiond just built, and man:fusiond(8) resolved from man/),
# it is Type=notify with the hardening the README promises, and `systemd-analyze security`
# rates its exposure below 2.0.  Skips (77) when systemd-analyze is not installed.
set -eu
src=${top_srcdir:-.}
build=${top_builddir:-.}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze not installed (Debian package systemd)"
    exit 77
fi
[ -x "$build/fusiond" ] || { echo "FAIL: $build/fusiond not built"; exit 1; }
tmp=$(mktemp -d /tmp/fd_unit_test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
sbindir=$(cd "$build" && pwd)
sed -e "s|@sbindir@|$sbindir|g" -e "s|@sysconfdir@|$(cd "$src" && pwd)/etc|g" \
    "$src/systemd/fusiond.service.in" > "$tmp/fusiond.service"
mkdir -p "$tmp/man/man8"
cp "$src/man/fusiond.8" "$tmp/man/man8/"

# verify runs man(1) for every man: page the unit documents; a minimal system without man-db
# cannot, so there the man: references are checked for their files only.
if ! command -v man >/dev/null 2>&1; then
    echo "note: man(1) not installed: checking the unit's man: pages exist instead of running man"
    for page in $(sed -n 's/^Documentation=//p' "$tmp/fusiond.service" | tr ' ' '\n' | sed -n 's/^man:\(.*\)(\([0-9]\))$/\1.\2/p'); do
        [ -f "$src/man/$page" ] || { echo "FAIL: the unit documents man page $page, not in man/"; exit 1; }
    done
    sed -i 's/^Documentation=.*$/Documentation=https:\/\/example.invalid\/fusiond/' "$tmp/fusiond.service"
fi

# verify prints problems on stderr and may exit 0 anyway: both must be clean.
if ! MANPATH="$tmp/man" systemd-analyze verify "$tmp/fusiond.service" >"$tmp/out" 2>&1 ||
   [ -s "$tmp/out" ]; then
    echo "FAIL: systemd-analyze verify:"; cat "$tmp/out"; exit 1
fi
echo "systemd-analyze verify: clean"

for want in Type=notify NotifyAccess=main Restart=on-failure RestartPreventExitStatus=78 \
            DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
            PrivateTmp=yes PrivateDevices=yes MemoryDenyWriteExecute=yes \
            SystemCallFilter=@system-service \
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" TimeoutStartSec=15min; do
    grep -qx "$want" "$tmp/fusiond.service" || { echo "FAIL: the unit lacks $want"; exit 1; }
done

if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
    systemd-analyze security --offline=yes "$tmp/fusiond.service" >"$tmp/sec" 2>&1 || true
    score=$(sed -n 's/.*Overall exposure level for fusiond.service: \([0-9.]*\).*/\1/p' "$tmp/sec")
    [ -n "$score" ] || { echo "FAIL: no exposure score:"; cat "$tmp/sec"; exit 1; }
    echo "systemd-analyze security: exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s < 2.0) }' || { echo "FAIL: exposure $score >= 2.0"; exit 1; }
fi
echo "PASS: daemon_unit"
