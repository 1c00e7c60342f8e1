#!/usr/bin/env bash
# Build the test bed's control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, cert-manager's controllers) from the Go module proxy.
#
# Two caches:
# - per machine (TESTBED_MACHINE_CACHE, default ~/.cache/saasodoo-testbed): the Go module and
#   build caches and every binary built, filed under a digest of what it is built from (its
#   wrapper module's go.mod, go.sum and *.go, the Go version, the package and the flags).
#   A new clone on a machine that built the test bed once finds its binaries there and only
#   links them: no compiler runs.
# - per checkout (.cache/testbed/bin): links to those binaries; the test bed runs these.
# A truly cold machine builds, printing progress and the time each binary took.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${TESTBED_CACHE:-$here/../.cache/testbed}
mkdir -p "$cache/bin"
cache=$(cd "$cache" && pwd)
machine=${TESTBED_MACHINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/saasodoo-testbed}
mkdir -p "$machine/bin"
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$machine/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$machine/go/build}
export GOTOOLCHAIN=local

k8s_version=v1.36.3
ldflags_k8s="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }
log() { printf '[testbed build %6s] %s\n' "$(elapsed)" "$*"; }

command -v go >/dev/null || { echo "go is not installed; the test bed is built from Go modules" >&2; exit 1; }
go_version=$(go version)

# digest DIR PACKAGE [FLAGS...]: a key for what a binary is built from
digest() {
  local dir=$1; shift
  { cat "$here/go/$dir"/go.mod "$here/go/$dir"/go.sum "$here/go/$dir"/*.go; echo "$go_version"; echo "$*"; } \
    | sha256sum | cut -c1-16
}

# place SRC DEST: a hard link where the file system allows, else a copy
place() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

# The module cache also holds the CRDs testbed/kwok_logs.py and certmanager.py install, so the
# modules are downloaded (a quick check when cached) even when every binary is cached.
log "modules into $GOMODCACHE (downloaded once per machine)"
for d in etcd kubernetes kwok cert-manager; do (cd "$here/go/$d" && go mod download); done

# build NAME MODULE_DIR PACKAGE [extra go flags...]
build() {
  local name=$1 dir=$2 pkg=$3; shift 3
  local out="$cache/bin/$name"
  local key; key=$(digest "$dir" "$pkg" "$@")
  local kept="$machine/bin/$name-$key"
  if [ -x "$kept" ]; then
    if [ -x "$out" ] && cmp -s "$kept" "$out"; then
      log "$name: up to date"
    else
      place "$kept" "$out"
      log "$name: from the machine cache ($kept)"
    fi
    return 0
  fi
  local t0; t0=$(date +%s)
  log "$name: building $pkg (a cold build takes several minutes)"
  # Print a heartbeat while the compiler works, so a long cold build is visibly alive.
  ( while sleep 30; do log "$name: still building"; done ) &
  local beat=$!
  local rc=0
  (cd "$here/go/$dir" && go build -trimpath -tags selinux,notest "$@" -o "$kept.tmp" "$pkg") || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    rm -f "$kept.tmp"
    log "$name: BUILD FAILED (exit $rc)"
    return "$rc"
  fi
  mv "$kept.tmp" "$kept"
  place "$kept" "$out"
  log "$name: built in $(( $(date +%s) - t0 ))s"
}

build etcd etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver -ldflags "$ldflags_k8s"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager -ldflags "$ldflags_k8s"
build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler -ldflags "$ldflags_k8s"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w"
# cert-manager's own controllers (issuers, CA signer, certificate controllers) wired in
# testbed/go/cert-manager/main.go: its cmd/controller is not a published module.
build cert-manager-controller cert-manager . -ldflags "-s -w"
log "all binaries in $cache/bin (machine cache: $machine)"
