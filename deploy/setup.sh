#!/usr/bin/env bash
# Installs what tdsvip's build, tests and lab need on a fresh Debian machine, idempotently.
#
# Usage: deploy/setup.sh [tests|lab|fuzz|all]   (default: all)
# Every step says what it checks and installs only what is missing, so running it again is
# cheap. It must run as root (apt-get, network namespaces); CI runs it on every fresh clone.
set -euo pipefail

what=${1:-all}
say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (apt-get installs, network namespaces, eBPF)" >&2
  exit 1
fi

apt_updated=0
need_apt() {
  # $1... : Debian package names
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "apt: $* already installed"
    return
  fi
  if [ $apt_updated -eq 0 ]; then
    say "apt: updating package lists"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_pip() {
  # $1: python module to import, $2: pip requirement
  if python3 -c "import $1" 2>/dev/null; then
    say "pip: $2 already installed"
  else
    say "pip: installing $2"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$2"
  fi
}

need_rust_component() {
  # $1: toolchain, $2...: components
  local tc=$1; shift
  for c in "$@"; do
    if rustup component list --toolchain "$tc" --installed 2>/dev/null | grep -q "^$c"; then
      say "rustup: $c ($tc) already installed"
    else
      say "rustup: adding $c to $tc"
      rustup component add --toolchain "$tc" "$c"
    fi
  done
}

need_cargo_tool() {
  # $1: binary name, $2: crate@version, $3...: extra cargo install flags
  local bin=$1 spec=$2; shift 2
  if command -v "$bin" >/dev/null 2>&1; then
    say "cargo: $bin already installed"
  else
    say "cargo: installing $spec (a few minutes, once per machine)"
    cargo install --locked "$@" "$spec"
  fi
}

need_npm_dir() {
  # $1: directory, $2...: package@version, installed there (not globally)
  local dir=$1; shift
  command -v npm >/dev/null || { say "missing npm (Debian nodejs/npm): needed for $*" >&2; exit 1; }
  mkdir -p "$dir"
  if (cd "$dir" && npm ls --depth=0 "$@" >/dev/null 2>&1); then
    say "npm: $* already installed in $dir"
  else
    say "npm: installing $* in $dir"
    (cd "$dir" && { [ -f package.json ] || echo '{"private": true}' >package.json; } &&
      npm install -s --no-audit --no-fund "$@" >/dev/null)
  fi
}

for tool in cargo rustup python3; do
  command -v "$tool" >/dev/null || { say "missing $tool: this script expects the machine's Rust and Python toolchains" >&2; exit 1; }
done

case "$what" in
  tests|lab|fuzz|all) ;;
  *) say "unknown target '$what' (expected tests, lab, fuzz or all)" >&2; exit 2 ;;
esac

# Build basics and the formatters CI checks with.
need_apt build-essential pkg-config ca-certificates iproute2 procps curl jq
need_rust_component 1.95.0 rustfmt clippy

# Independent TDS clients that check tds-sim: FreeTDS tsql and python-tds.
need_apt freetds-bin
need_pip pytds python-tds
# python-tds does TLS (tds-sim's tests/tls.rs: cafile=, validate_host=) through pyOpenSSL.
need_pip OpenSSL pyOpenSSL
# moto's EC2 server stands in for the AWS API in the cloud tests and benchmarks.
need_pip moto.server 'moto[server]>=5.2,<6'
# promtool (Debian's prometheus package) checks the agent's /metrics text and dashboards/ rules.
need_apt prometheus
# systemd-analyze checks deploy/tdsvip.service offline (verify, security) in agent/tests/deploy.rs.
need_apt systemd
# The Grafana dashboard is validated against Grafana's own schema (shared/TOOLCHAIN.md):
# @grafana/schema's Dashboard type, turned into JSON Schema, checked with ajv (agent/tests/dashboards.rs).
need_npm_dir "${TDSVIP_GRAFANA_SCHEMA_DIR:-$HOME/.cache/tdsvip/grafana-schema}" \
  @grafana/schema@13.2.3 ts-json-schema-generator@2.4.0 ajv-cli@5.0.0

# >>> Java and Node TDS drivers (tds-sim, issue 11) >>>
# tds-sim's tests also log in with jTDS (Java; javac compiles a small client at test time) and
# tedious (Node), installed in a cache dir outside the clone (tests/tds-sim/tests/drivers.rs reads
# TDSVIP_TEDIOUS_DIR, default $HOME/.cache/tdsvip/tedious). Both send @@-variables in their
# session setup and sp_executesql/sp_prepexec with positional parameters (shared/TOOLCHAIN.md).
if [ "$what" = tests ] || [ "$what" = all ]; then
  need_apt libjtds-java default-jdk-headless
  need_npm_dir "${TDSVIP_TEDIOUS_DIR:-$HOME/.cache/tdsvip/tedious}" tedious@18.6.1
fi
# <<< Java and Node TDS drivers <<<

if [ "$what" = fuzz ] || [ "$what" = all ] || [ "$what" = tests ]; then
  # Fuzzing: cargo-fuzz drives libFuzzer on the nightly toolchain already on the machine.
  need_cargo_tool cargo-fuzz cargo-fuzz@0.13.2
fi

# >>> eBPF toolchain (node data plane, issue 3) >>>
# The kernel programs in ebpf/ are built by node/build.rs with the nightly toolchain
# (-Z build-std=core needs rust-src) and bpf-linker 0.10.4, the last release that loads the
# nightly compiler's own LLVM instead of wanting a system libLLVM (shared/TOOLCHAIN.md).
# The tests of tdsvip-node run in network namespaces and use iproute2, arping, tcpdump,
# ethtool, bpftool, nftables and capsh (libcap2-bin) to build and inspect the test bed.
if [ "$what" = tests ] || [ "$what" = lab ] || [ "$what" = all ]; then
  if rustup toolchain list | grep -q '^nightly'; then
    need_rust_component nightly rust-src
  else
    say "rustup: no nightly toolchain: eBPF programs will not build (build warning, not an error)" >&2
  fi
  need_cargo_tool bpf-linker bpf-linker@0.10.4
  need_apt iproute2 arping tcpdump ethtool bpftool nftables libcap2-bin
fi
# <<< eBPF toolchain <<<

# >>> The Debian package (issue 15) >>>
# deploy/package-test.sh (a step of ./run-tests) builds the package with cargo-deb 3.8.0
# (deploy/package.sh; the last release that builds with rustc 1.95), checks it with lintian,
# renders its man pages with man-db, compares its Depends with dpkg-shlibdeps (dpkg-dev)
# and installs it (its postinst makes the user with adduser).
if [ "$what" = tests ] || [ "$what" = all ]; then
  if [ "$(cargo-deb --version 2>/dev/null)" = "cargo-deb 3.8.0" ]; then
    say "cargo: cargo-deb 3.8.0 already installed"
  else
    say "cargo: installing cargo-deb 3.8.0 (about 2 minutes, once per machine; found: $(cargo-deb --version 2>/dev/null || echo none))"
    cargo install --locked cargo-deb --version 3.8.0
  fi
  need_apt lintian man-db dpkg-dev adduser
fi
# <<< The Debian package <<<

# The failover lab (tests/lab, ./run-lab and its tests): keepalived is the peer tdsvip is
# measured against (--impl keepalived and the benchmark); nft and arping come from the block above.
if [ "$what" = tests ] || [ "$what" = lab ] || [ "$what" = all ]; then
  need_apt keepalived
fi

# >>> etcd (manage mode, the tdsvip-etcd crate) >>>
# etcd/tests/ start Debian's etcd 3.4 themselves on loopback (free ports, data on /dev/shm), and
# the crate etcd-client compiles etcd's .proto files with protoc at build time
# (shared/TOOLCHAIN.md). libprotobuf-dev brings the google/protobuf/*.proto those import: it is
# only recommended by protobuf-compiler, and need_apt installs no recommends. The package's own
# etcd service cannot start here (no systemd as PID 1); the tests never use ports 2379/2380.
if [ "$what" = tests ] || [ "$what" = lab ] || [ "$what" = all ]; then
  need_apt etcd-server protobuf-compiler libprotobuf-dev
fi
# <<< etcd <<<

say "done ($what)"
