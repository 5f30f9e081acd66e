#!/usr/bin/env bash
# The Debian package, tested the way a DBA meets it (issue 15): built by deploy/package.sh,
# then installed on this machine and purged again. ./run-tests runs it (as root, on a
# throwaway CI machine whose PID 1 is not systemd). Each check says what it checks; the
# first failure stops the script with a message naming the file or field.
#  1. contents: every promised file, the conffile, Depends covering what dpkg-shlibdeps finds
#     in the binary, maintainer scripts that neither enable nor start the unit, restart it on
#     upgrade (try-restart) and stop it only on removal;
#  2. lintian: no errors (warnings and infos printed, see README "The Debian package");
#  3. dpkg -i: the tdsvip user and group, /etc/tdsvip root:tdsvip 0750 and its config 0640,
#     `systemd-analyze verify` of the installed unit, `man -l` of every page without a
#     warning, `tdsvip --version`, check-config on the installed conffile (as the unit's
#     user) failing with the one line that says to fill in an [[ag]], and the same file with
#     its [[ag]] table uncommented accepted but for the secret only systemd provides;
#  4. the upgrade: agent/tests/package_upgrade.rs (dpkg -i again under a running owner, the
#     restart systemd would do, clients connecting through the overlay IP throughout);
#  5. dpkg --purge: no file of the package, no /etc/tdsvip, no tdsvip user or group left.
# Refuses to start when tdsvip is already installed here, or a tdsvip user or /etc/tdsvip
# exists (this test would remove them); once it has installed the package it purges it on
# every exit, failed checks included.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tdsvip/target}
export TDSVIP_REQUIRE_EBPF=${TDSVIP_REQUIRE_EBPF:-1}
say() { printf 'package-test: %s\n' "$*"; }
fail() { say "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i, network namespaces)"
if dpkg-query -W -f='${Status}' tdsvip 2>/dev/null | grep -q installed ||
  getent passwd tdsvip >/dev/null || getent group tdsvip >/dev/null || [ -e /etc/tdsvip ]; then
  fail "tdsvip (package, user, group or /etc/tdsvip) already exists on this machine; this test installs and purges it, so it will not run here"
fi

started=$SECONDS
deb=$(deploy/package.sh | tail -1)
say "built $deb in $((SECONDS - started)) s"
work=$(mktemp -d)
installed=0
cleanup() {
  if [ "$installed" = 1 ]; then
    dpkg --purge tdsvip >/dev/null 2>&1 || say "cleanup: dpkg --purge tdsvip failed" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say "1. contents"
dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's#^\./#/#' >"$work/contents"
for f in /usr/bin/tdsvip /usr/lib/systemd/system/tdsvip.service /etc/tdsvip/tdsvip.toml \
  /usr/share/man/man8/tdsvip.8.gz /usr/share/man/man8/tdsvip-run.8.gz \
  /usr/share/man/man8/tdsvip-check-config.8.gz /usr/share/man/man8/tdsvip-probe.8.gz \
  /usr/share/man/man8/tdsvip-status.8.gz /usr/share/man/man8/tdsvip-routes.8.gz \
  /usr/share/man/man8/tdsvip-switchover.8.gz \
  /usr/share/bash-completion/completions/tdsvip /usr/share/zsh/vendor-completions/_tdsvip \
  /usr/share/fish/vendor_completions.d/tdsvip.fish \
  /usr/share/tdsvip/dashboards/tdsvip.json /usr/share/tdsvip/dashboards/alerts.yml \
  /usr/share/doc/tdsvip/README.md /usr/share/doc/tdsvip/iam-policy.json \
  /usr/share/doc/tdsvip/examples/tdsvip-aws.toml /usr/share/doc/tdsvip/copyright \
  /usr/share/doc/tdsvip/changelog.gz; do
  grep -qx "$f" "$work/contents" || fail "$deb lacks $f"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/tdsvip/tdsvip.toml "$work/control/conffiles" || fail "conffiles: $(cat "$work/control/conffiles")"
depends=$(dpkg-deb -f "$deb" Depends)
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$work/shlibs/debian" && touch "$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$work/root/usr/bin/tdsvip" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
IFS=',' read -ra needed <<<"$shlibs"
for d in "${needed[@]}"; do
  d=$(echo "$d" | xargs)
  [[ ", $depends," == *", $d,"* ]] || fail "Depends ($depends) lacks '$d' (dpkg-shlibdeps)"
done
[ -z "$(dpkg-deb -f "$deb" Recommends)" ] || fail "Recommends: $(dpkg-deb -f "$deb" Recommends)"
# cargo-deb's fragments: "dont-enable" (enable only what the admin had enabled), restart
# only on upgrade ($2 set) and only a running unit, stop only on removal.
postinst=$work/control/postinst
[ "$(grep -c 'deb-systemd-helper debian-installed tdsvip.service' "$postinst")" = 1 ] || fail "postinst: not cargo-deb's one dont-enable fragment"
grep -A1 'if \[ -n "$2" \]; then' "$postinst" | grep -q 'deb-systemd-invoke try-restart tdsvip.service' || fail "postinst does not try-restart the unit on upgrade"
! grep -Eq 'new installations run enable|_dh_action|deb-systemd-invoke (start|restart) ' "$postinst" || fail "postinst enables or starts the unit"
grep -q '^if \[ -d /run/systemd/system \] && \[ "$1" = remove \]; then' "$work/control/prerm" || fail "prerm stops the unit on upgrade too"
"$work/root/usr/bin/tdsvip" --version | grep -q 'eBPF programs embedded' || fail "the packaged binary has no eBPF programs"

say "2. lintian (no errors allowed)"
lintian --pedantic --display-info --display-experimental "$deb" 2>&1 | grep -v '^running with root privileges' | tee "$work/lintian" || true
! grep -q '^E: ' "$work/lintian" || fail "lintian reports errors (E: lines above)"

say "3. dpkg -i"
installed=1
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i $deb: $(cat "$work/dpkg.log")"
getent passwd tdsvip | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "user tdsvip: $(getent passwd tdsvip)"
getent group tdsvip >/dev/null || fail "no group tdsvip"
! ls /etc/systemd/system/*.wants/tdsvip.service 2>/dev/null || fail "the package enabled the unit"
[ "$(stat -c '%U:%G %a' /etc/tdsvip)" = "root:tdsvip 750" ] || fail "/etc/tdsvip is $(stat -c '%U:%G %a' /etc/tdsvip)"
[ "$(stat -c '%U:%G %a' /etc/tdsvip/tdsvip.toml)" = "root:tdsvip 640" ] || fail "tdsvip.toml is $(stat -c '%U:%G %a' /etc/tdsvip/tdsvip.toml)"
verify=$(systemd-analyze verify /usr/lib/systemd/system/tdsvip.service 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
grep -q '^ExecStart=/usr/bin/tdsvip run --config /etc/tdsvip/tdsvip.toml$' /usr/lib/systemd/system/tdsvip.service || fail "unit's ExecStart"
for page in /usr/share/man/man8/tdsvip*.8.gz; do
  name=$(basename "$page" .8.gz)
  MANWIDTH=80 man --warnings -l "$page" >"$work/page" 2>"$work/page.err" || fail "man -l $page: $(cat "$work/page.err")"
  [ ! -s "$work/page.err" ] || fail "man -l $page warns: $(cat "$work/page.err")"
  grep -q "^NAME" "$work/page" && grep -q "$name" "$work/page" || fail "man -l $page rendered no NAME for $name"
done
say "   $(ls /usr/share/man/man8/tdsvip*.8.gz | wc -l) man pages render; $(tdsvip --version)"
# As the unit's ExecStartPre runs it: user tdsvip must read the config through /etc/tdsvip.
set +e
said=$(setpriv --reuid=tdsvip --regid=tdsvip --init-groups \
  tdsvip check-config --config /etc/tdsvip/tdsvip.toml 2>&1)
code=$?
set -e
[ "$code" = 2 ] && [ "$said" = "ag: at least one [[ag]] table is required" ] ||
  fail "check-config on the installed example (exit $code) said: $said"
say "   check-config on the installed example: exit 2, '$said'"
awk '/^# \[\[ag\]\]$/ { on = 1 } on && /^$/ { on = 0 } on && /^# (\[\[ag\]\]$|[a-z_]+ = )/ { sub(/^# /, "") } { print }' \
  /etc/tdsvip/tdsvip.toml >"$work/filled.toml"
set +e
said=$(tdsvip check-config --config "$work/filled.toml" 2>&1)
code=$?
set -e
[ "$code" = 2 ] && [[ "$said" == "sql.password_file: cannot read password file /run/credentials/tdsvip.service/sql-password"* ]] &&
  [ "$(wc -l <<<"$said")" = 1 ] || fail "check-config with [[ag]] filled in (exit $code) said: $said"

say "4. upgrade under a running owner (agent/tests/package_upgrade.rs)"
TDSVIP_PACKAGE_DEB=$deb cargo test --workspace --locked --test package_upgrade -- --ignored --nocapture

say "5. dpkg --purge"
dpkg --purge tdsvip >"$work/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$work/dpkg.log")"
installed=0
while read -r f; do
  [ "$f" = / ] || [ -d "$f" ] || [ ! -e "$f" ] || fail "$f left after purge"
done <"$work/contents"
for d in /etc/tdsvip /usr/share/tdsvip /usr/share/doc/tdsvip; do
  [ ! -e "$d" ] || fail "$d left after purge"
done
! getent passwd tdsvip >/dev/null || fail "user tdsvip left after purge"
! getent group tdsvip >/dev/null || fail "group tdsvip left after purge"
say "passed in $((SECONDS - started)) s"
