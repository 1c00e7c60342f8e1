#!/usr/bin/env bash
# Build the test bed's control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) from the Go module proxy into a git-ignored cache.
# A warm build (binaries present and newer than the pinned go.mod files) does nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${TESTBED_CACHE:-$here/../.cache/testbed}
mkdir -p "$cache/bin"
cache=$(cd "$cache" && pwd)
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$cache/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$cache/go/build}
export GOTOOLCHAIN=local

k8s_version=v1.36.3
ldflags_k8s="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }
log() { printf '[testbed build %6s] %s\n' "$(elapsed)" "$*"; }

command -v go >/dev/null || { echo "go is not installed; the test bed is built from Go modules" >&2; exit 1; }

# build NAME MODULE_DIR PACKAGE [extra go flags...]
build() {
  local name=$1 dir=$2 pkg=$3; shift 3
  local out="$cache/bin/$name"
  local fresh=1 src
  for src in "$here/go/$dir"/go.mod "$here/go/$dir"/go.sum "$here/go/$dir"/*.go; do
    [ -e "$src" ] && ! [ "$out" -nt "$src" ] && fresh=0
  done
  if [ -x "$out" ] && [ "$fresh" = 1 ]; then
    log "$name: up to date"
    return 0
  fi
  log "$name: building $pkg (a cold build takes several minutes)"
  # Print a heartbeat while the compiler works, so a long cold build is visibly alive.
  ( while sleep 30; do log "$name: still building"; done ) &
  local beat=$!
  local rc=0
  (cd "$here/go/$dir" && go build -trimpath -tags selinux,notest "$@" -o "$out.tmp" "$pkg") || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    log "$name: BUILD FAILED (exit $rc)"
    return "$rc"
  fi
  mv "$out.tmp" "$out"
  log "$name: built"
}

log "downloading modules (cached after the first run)"
for d in etcd kubernetes kwok cert-manager; do (cd "$here/go/$d" && go mod download); done

build etcd etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver -ldflags "$ldflags_k8s"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager -ldflags "$ldflags_k8s"
build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler -ldflags "$ldflags_k8s"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w"
# cert-manager's own controllers (issuers, CA signer, certificate controllers) wired in
# testbed/go/cert-manager/main.go: its cmd/controller is not a published module.
build cert-manager-controller cert-manager . -ldflags "-s -w"
log "all binaries in $cache/bin"
