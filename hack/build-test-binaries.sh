#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy into bin/ (no release downloads are
# reachable here): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
# kwok, and Gitea (a real forge for the pull-request tests). Skips what is already built.
# Measured on a fresh clone on 2 cores: Kubernetes about 8 minutes cold, module downloads
# included; Gitea about 2.5-3 minutes after it. The script prints the time of each binary it
# builds and the total, so that these figures can be checked on every cold run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$root/bin}
mkdir -p "$bin"
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
KUBE_VERSION=v1.37.2

log() { printf '==> %s\n' "$*"; }

# duration formats seconds as 2m05s.
duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# heartbeat prints elapsed time while a long build runs, so nobody stares at a silent terminal.
heartbeat() {
  local what=$1 start=$SECONDS
  while sleep 30; do
    printf '    ... still building %s (%s elapsed)\n' "$what" "$(duration $((SECONDS - start)))"
  done
}

run_with_heartbeat() {
  local what=$1; shift
  heartbeat "$what" &
  local hb=$!
  local rc=0
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  return $rc
}

# timed runs one build with the heartbeat and reports how long it took, measured here rather
# than quoted, so that the times in the README can be checked against every cold build.
total_start=$SECONDS
built=()
timed() {
  local what=$1; shift
  local start=$SECONDS
  run_with_heartbeat "$what" "$@" || return
  local took
  took=$(duration $((SECONDS - start)))
  log "Built $what in $took"
  built+=("$what ($took)")
}

missing() {
  local f
  for f in "$@"; do [ -x "$bin/$f" ] || return 0; done
  return 1
}

if missing kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  log "Building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
  log "The first build takes about 8 minutes on 2 cores, module downloads included; later runs reuse bin/ and Go's build cache."
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  timed Kubernetes \
    go -C "$root/hack/tools/kube" build -trimpath -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl
fi

if missing etcd; then
  log "Building etcd"
  timed etcd go -C "$root/hack/tools/etcd" build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
fi

if missing kwok; then
  log "Building kwok $KWOK_VERSION"
  timed kwok env GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi

# Gitea v1.27+ moved its module path to a host the Go proxy refuses; v1.26.0 is on it. Without
# the bindata tag it reads its options and templates from disk: they are copied from the
# module source into bin/gitea-assets, which internal/testgitea points Gitea at. Only the
# tests need it (WITH_GITEA=1, set by make test); the demo does not.
if [ "${WITH_GITEA:-0}" = 1 ] && { missing gitea || [ ! -d "$bin/gitea-assets/templates" ]; }; then
  log "Building Gitea v1.26.0 (about 2.5-3 minutes on 2 cores once Kubernetes is built)"
  timed Gitea \
    go -C "$root/hack/tools/gitea" build -trimpath -tags "sqlite sqlite_unlock_notify" -ldflags "-s -w -X main.Version=1.26.0" -o "$bin/gitea" code.gitea.io/gitea
  src=$(go -C "$root/hack/tools/gitea" list -m -f '{{.Dir}}' code.gitea.io/gitea)
  rm -rf "$bin/gitea-assets"
  mkdir -p "$bin/gitea-assets"
  cp -R "$src/options" "$src/templates" "$bin/gitea-assets/"
  chmod -R u+w "$bin/gitea-assets"
fi

if [ ${#built[@]} -eq 0 ]; then
  log "Nothing to build: the local control plane binaries are in $bin"
else
  summary=$(printf '%s, ' "${built[@]}")
  log "Built ${summary%, }: $(duration $((SECONDS - total_start))) in total; the binaries are in $bin"
fi
