#!/usr/bin/env bash
# Builds the Debian package tdsvip_<version>_amd64.deb and prints its path as the last line
# (everything else goes to stderr), so that a DBA installs tdsvip as SQL Server itself is
# installed, without Rust, nightly or bpf-linker on the node (issue 15).
#
# A thin wrapper over cargo-deb; what goes where is [package.metadata.deb] in
# agent/Cargo.toml. The steps:
#  1. the release build of the agent, with the eBPF programs embedded as always
#     (TDSVIP_REQUIRE_EBPF=1: a missing eBPF toolchain fails the build instead of warning);
#  2. deploy/debian/generated/, what cargo-deb cannot take from the tree as it is:
#     - tdsvip.service: deploy/tdsvip.service with its Exec lines on /usr/bin/tdsvip;
#     - tdsvip.toml, the conffile: deploy/tdsvip.toml with the site's values commented out
#       (node, http.listen, [[ag]], [[peer]]: check-config refuses it until an [[ag]] is
#       filled in), the secrets read from the unit's credentials, and [shutdown] addresses
#       = "keep" so that the upgrade's restart is no outage; its header says all this;
#     - man/ and completions/: `tdsvip generate-docs` of the very binary being packaged;
#  3. cargo deb --no-build (nothing is compiled twice) --strip (no debug info in /usr/bin).
#
# Usage: deploy/package.sh [OUTPUT_DIR]   (default: $CARGO_TARGET_DIR/debian)
# Needs cargo-deb 3.8.0 (deploy/setup.sh tests installs it). The checks of the result
# (contents, lintian, install, purge) are deploy/package-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tdsvip/target}
export TDSVIP_REQUIRE_EBPF=${TDSVIP_REQUIRE_EBPF:-1}
out=${1:-$CARGO_TARGET_DIR/debian}
gen=deploy/debian/generated
bin=$CARGO_TARGET_DIR/release/tdsvip
say() { printf 'package: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

cargo deb --version 2>/dev/null | grep -qx 'cargo-deb 3.8.0' ||
  die "needs cargo-deb 3.8.0 (found: $(cargo deb --version 2>&1 | head -1)); deploy/setup.sh tests installs it"

started=$SECONDS
say "release build of the agent (cargo build --workspace --locked --release --bin tdsvip)"
# --workspace: the same features as every other build of this workspace, so the cached
# dependencies (aws-sdk-ec2 among them) are reused, not rebuilt for another feature set.
cargo build --workspace --locked --release --bin tdsvip >&2
version=$("$bin" -V | awk '{print $2}')
say "$("$bin" --version)"
"$bin" --version | grep -q 'eBPF programs embedded' ||
  die "the release binary has no eBPF programs; a package without them cannot fence"

rm -rf "$gen"
mkdir -p "$gen"

say "unit: deploy/tdsvip.service with /usr/bin paths"
sed -E '/^Exec/ s#/usr/local/bin/tdsvip( |$)#/usr/bin/tdsvip\1#' deploy/tdsvip.service >"$gen/tdsvip.service"
if [ "$(grep -c '^Exec[A-Za-z]*=/usr/bin/tdsvip ' "$gen/tdsvip.service")" -lt 2 ] ||
  grep '^Exec' "$gen/tdsvip.service" | grep -q /usr/local/; then
  die "deploy/tdsvip.service no longer runs /usr/local/bin/tdsvip in ExecStart and ExecStartPre"
fi

say "conffile: deploy/tdsvip.toml made into /etc/tdsvip/tdsvip.toml"
# Each change must apply exactly once (the tables at least once): an edit of the example
# that moves these lines fails here instead of shipping a file that silently differs.
awk '
  BEGIN {
    print "# /etc/tdsvip/tdsvip.toml as the tdsvip package installs it: deploy/tdsvip.toml, the"
    print "# documented example, with what a packaged node needs:"
    print "# - node, http.listen and the [[ag]] and [[peer]] tables are commented out: fill them in"
    print "#   for this node and cluster (`tdsvip check-config` refuses the file until an [[ag]] is"
    print "#   there; with [[peer]] set it wants http.listen on this node'\''s own address);"
    print "# - the SQL password and the HTTP token are read from the credentials systemd hands to"
    print "#   the service (tdsvip.service copies /etc/tdsvip/sql-password and /etc/tdsvip/http-token,"
    print "#   root:root 0600, with LoadCredential=);"
    print "# - [shutdown] addresses = \"keep\": a package upgrade restarts the agent and the new one"
    print "#   adopts the addresses, so an upgrade on the owner is no outage."
    print "# Step by step: /usr/share/doc/tdsvip/README.md, \"Install on a cluster\"."
    print ""
  }
  /^\[\[(ag|peer)\]\]$/ { table = 1; n["tables"]++; print "# " $0; next }
  /^\[/ { table = 0 }
  table && /^[a-z_]+ = / { print "# " $0; next }
  /^node = / { n["node"]++; print "# " $0; next }
  /^listen = / { n["listen"]++; print "# " $0; next }
  $0 == "password_file = \"/etc/tdsvip/sql-password\"" {
    n["password"]++; print "password_file = \"/run/credentials/tdsvip.service/sql-password\""; next
  }
  $0 == "token_file = \"/etc/tdsvip/http-token\"" {
    n["token"]++; print "token_file = \"/run/credentials/tdsvip.service/http-token\""; next
  }
  $0 == "addresses = \"release\"" { n["keep"]++; print "addresses = \"keep\""; next }
  { print }
  END {
    split("node listen password token keep", once, " ")
    for (i in once) if (n[once[i]] != 1) bad = bad " " once[i] "(" (n[once[i]] + 0) " times)"
    if (n["tables"] < 1) bad = bad " [[ag]]/[[peer]](none)"
    if (bad != "") {
      print "package: deploy/tdsvip.toml changed; not applied exactly once:" bad > "/dev/stderr"
      exit 1
    }
  }
' deploy/tdsvip.toml >"$gen/tdsvip.toml"

say "man pages and completions from the binary's own command-line definitions"
man_date=$(git log -1 --format=%cs HEAD 2>/dev/null || date -u +%F)
"$bin" generate-docs --out "$gen" --date "$man_date" >/dev/null

mkdir -p "$out"
deb=$out/tdsvip_${version}_amd64.deb
rm -f "$deb"
say "cargo deb --no-build --strip -> $deb"
cargo deb --manifest-path agent/Cargo.toml --locked --no-build --strip --output "$deb" >&2
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] ||
  die "$deb has version $(dpkg-deb -f "$deb" Version), the binary $version"
say "done in $((SECONDS - started)) s"
echo "$deb"
