#!/usr/bin/env bash
# Builds the external tools the project needs (Kubernetes control plane, etcd, kwok, grpcurl,
# ghz, vegeta, task, and for the dev cluster's real node kubelet, kube-proxy and containerd) from Go
# modules, once per pinned version, into a cache outside the work tree.
# A warm cache makes this a no-op; `hack/tools.sh path` prints the bin dir to put on PATH.
#   hack/tools.sh build     everything (JOBSCHEDULER_REAL_NODE=0 leaves out the node's parts)
#   hack/tools.sh node      only the real node's parts
#   hack/tools.sh matrix    the control plane of every Kubernetes version of the matrix
#   hack/tools.sh kueue     only Kueue (JOBSCHEDULER_KUEUE=0 leaves it out of build)
#   hack/tools.sh jaeger    only Jaeger (the OTLP receiver of the tracing tests and bench;
#                           JOBSCHEDULER_JAEGER=0 leaves it out of build; hack/dev.sh builds
#                           it in the background instead)
#   hack/tools.sh jaeger-ready   exit 0 when Jaeger is built (and linked), else 1
# KUBERNETES_VERSION=1.37.2 selects another version of the matrix (hack/versions.env): its
# Kubernetes binaries and etcd, with the version-independent tools, in a bin dir of its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# KUBERNETES_VERSION, ETCD_VERSION (for that minor), the other pins, BIN: resolved in one place.
resolved="$(python3 "$ROOT/hack/toolversions.py" shell)" || exit 1
eval "$resolved"

CACHE="${JOBSCHEDULER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobscheduler}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" GOTOOLCHAIN=local

log() { printf '[tools %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# One directory per tool and version; the symlinks in $BIN point at the pinned ones.
tool_dir() { echo "$CACHE/tools/$1-$2"; }

stamp_ok() { [[ -f "$(tool_dir "$1" "$2")/.done" ]]; }

finish() { # name version binaries...
  local name=$1 version=$2 dir; shift 2
  dir="$(tool_dir "$name" "$version")"
  mkdir -p "$BIN"
  for b in "$@"; do
    [[ -x "$dir/bin/$b" ]] || { log "ERROR: $name $version did not produce $b"; exit 1; }
    ln -sfn "$dir/bin/$b" "$BIN/$b"
  done
  touch "$dir/.done"
}

go_install() { # name version module-path binaries...
  local name=$1 version=$2 pkg=$3; shift 3
  stamp_ok "$name" "$version" && { relink "$name" "$version" "$@"; return; }
  local dir start=$SECONDS
  dir="$(tool_dir "$name" "$version")"
  log "building $name $version ($pkg)"
  mkdir -p "$dir/bin"
  for b in "$@"; do
    GOBIN="$dir/bin" go install "$pkg/$b@$version"
  done
  finish "$name" "$version" "$@"
  log "built $name $version in $((SECONDS - start)) s"
}

# For a module whose main package is its root (no cmd/ directory): the binary is named by Go
# after the module path without its major-version suffix.
go_install_module() { # name version module-path binary
  local name=$1 version=$2 module=$3 binary=$4
  stamp_ok "$name" "$version" && { relink "$name" "$version" "$binary"; return; }
  local dir start=$SECONDS
  dir="$(tool_dir "$name" "$version")"
  log "building $name $version ($module)"
  mkdir -p "$dir/bin"
  GOBIN="$dir/bin" go install "$module@$version"
  finish "$name" "$version" "$binary"
  log "built $name $version in $((SECONDS - start)) s"
}

relink() { # name version binaries...: warm path, just (re)point the symlinks
  local dir; dir="$(tool_dir "$1" "$2")"; shift 2
  mkdir -p "$BIN"
  for b in "$@"; do
    [[ "$(readlink "$BIN/$b" 2>/dev/null)" == "$dir/bin/$b" ]] || ln -sfn "$dir/bin/$b" "$BIN/$b"
  done
}

build_etcd() {
  local v=$ETCD_VERSION
  stamp_ok etcd "$v" && { relink etcd "$v" etcd; return; }
  local dir start=$SECONDS
  dir="$(tool_dir etcd "$v")"
  log "building etcd $v (wrapper module: etcd's own go.mod has replace lines)"
  rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/bin"
  (
    cd "$dir/src"
    go mod init jobscheduler.local/etcd-build >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go get "go.etcd.io/etcd/server/v3@$v"
    go mod tidy
    go build -o "$dir/bin/etcd" \
      -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${v}" go.etcd.io/etcd/server/v3
  )
  finish etcd "$v" etcd
  log "built etcd $v in $((SECONDS - start)) s"
}

build_kubernetes() {
  build_kubernetes_bins kubernetes "6-12 min" kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# The node's binaries get a wrapper module (and cache directory) of their own, so adding them
# leaves the control plane's cached build untouched; the shared packages come from Go's build
# cache, which makes this a minute or two once the control plane is built.
build_kubernetes_node() {
  build_kubernetes_bins kubernetes-node "1-3 min after the control plane" kubelet kube-proxy
}

build_kubernetes_bins() { # cache-name expected-time binaries...
  local name=$1 expect=$2; shift 2
  local v=$KUBERNETES_VERSION
  local bins=("$@")
  stamp_ok "$name" "$v" && { relink "$name" "$v" "${bins[@]}"; return; }
  local dir start=$SECONDS staging_v major minor gomod
  dir="$(tool_dir "$name" "$v")"
  staging_v="v0.${v#v1.}"
  major=1 minor="$(cut -d. -f2 <<<"$v")"
  log "building Kubernetes $v: ${bins[*]} (cold build: expect $expect on 2 cores)"
  rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/bin"
  (
    cd "$dir/src"
    go mod init jobscheduler.local/kubernetes-build >/dev/null 2>&1
    # k8s.io/kubernetes replaces every staging module with ./staging/...; mirror that list
    # from the release's own go.mod, pointing each at its published module instead.
    gomod="$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    go mod edit -require "k8s.io/kubernetes@$v"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      go mod edit -replace "$m=$m@$staging_v"
    done
    log "  $(grep -c '=> k8s.io' go.mod) staging modules replaced by their $staging_v releases"
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${bins[@]}"
      printf ')\n'
    } >tools.go
    log "  resolving dependencies (go mod tidy)"
    go mod tidy
    local ver="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
    ver+=" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    ver+=" -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for b in "${bins[@]}"; do
      log "  compiling $b"
      go build -o "$dir/bin/$b" -ldflags "-s -w $ver" "k8s.io/kubernetes/cmd/$b"
    done
  )
  finish "$name" "$v" "${bins[@]}"
  log "built Kubernetes $v ${bins[*]} in $((SECONDS - start)) s"
}

# containerd v2 with its runc shim and ctr. btrfs needs cgo headers; the docs tag drops a
# man-page generator dependency. runc itself and the CNI plugins are Debian packages
# (hack/packages.sh).
build_containerd() {
  GOFLAGS="$GOFLAGS -tags=no_btrfs,urfave_cli_no_docs" \
    go_install containerd "$CONTAINERD_VERSION" github.com/containerd/containerd/v2/cmd \
    containerd containerd-shim-runc-v2 ctr
}

# Kueue (queues, quotas, priorities, admission): its manager, and beside it the module's
# config/components tree (CRDs and their conversion-webhook patches, webhook configurations,
# visibility APIServices, RBAC) from which hack/devcluster.py installs Kueue.
# The stamp .done-components marks both; a cache dir from before it (binary only, stamp .done)
# is completed by the copy without compiling again.
build_kueue() {
  local v=$KUEUE_VERSION dir start=$SECONDS moddir done_what=completed
  dir="$(tool_dir kueue "$v")"
  [[ -f "$dir/.done-components" ]] && { relink kueue "$v" kueue; return; }
  if stamp_ok kueue "$v" && [[ -x "$dir/bin/kueue" ]]; then
    log "completing Kueue $v: copying its config/components beside the cached binary"
  else
    log "building Kueue $v (sigs.k8s.io/kueue/cmd/kueue; cold build: expect ~3 min on 2 cores)"
    rm -rf "$dir" && mkdir -p "$dir/bin"
    done_what=built
    GOBIN="$dir/bin" go install -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$v" \
      "sigs.k8s.io/kueue/cmd/kueue@$v"
  fi
  moddir="$(go mod download -json "sigs.k8s.io/kueue@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  # The module cache is read-only; the copy is made writable so it can be replaced or removed.
  rm -rf "$dir/crd" "$dir/config" && mkdir -p "$dir/config"
  cp -R "$moddir/config/components" "$dir/config/"
  chmod -R u+w "$dir/config"
  finish kueue "$v" kueue
  touch "$dir/.done-components"
  log "$done_what Kueue $v in $((SECONDS - start)) s"
}

# Jaeger v2 (all-in-one, built on the OpenTelemetry collector; in-memory storage by default):
# the real OTLP receiver of the tracing tests and bench/tracing.py.
build_jaeger() {
  local v=$JAEGER_VERSION dir moddir start=$SECONDS
  stamp_ok jaeger "$v" && { relink jaeger "$v" jaeger; return; }
  # One build at a time: hack/dev.sh starts this in the background and the tracing tests
  # (hack/jaeger.py) ask for it again; the second waits here for the first, then finds it built.
  mkdir -p "$CACHE/tools"
  exec 9>"$CACHE/tools/jaeger-$v.lock"
  if ! flock -n 9; then
    log "waiting for another build of Jaeger $v to finish"
    flock 9
  fi
  stamp_ok jaeger "$v" && { relink jaeger "$v" jaeger; return; }
  dir="$(tool_dir jaeger "$v")"
  log "building Jaeger $v (github.com/jaegertracing/jaeger/cmd/jaeger; cold build: expect ~8 min on 2 cores)"
  rm -rf "$dir" && mkdir -p "$dir/bin"
  # `go install module@version` refuses a go.mod with replace directives (Jaeger's has one), so
  # the module is downloaded through the Go proxy and its cmd/jaeger built inside it.
  moddir="$(go mod download -json "github.com/jaegertracing/jaeger@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  (cd "$moddir" && go build -ldflags "-s -w" -o "$dir/bin/jaeger" ./cmd/jaeger)
  finish jaeger "$v" jaeger
  log "built Jaeger $v in $((SECONDS - start)) s"
}

build_node() {
  build_kubernetes_node
  build_containerd
}

build_all() {
  command -v go >/dev/null || { log "ERROR: Go is required (https://go.dev/doc/install); none found on PATH"; exit 1; }
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd kwok kwokctl
  go_install grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl/cmd grpcurl
  go_install ghz "$GHZ_VERSION" github.com/bojand/ghz/cmd ghz
  go_install_module vegeta "$VEGETA_VERSION" github.com/tsenart/vegeta/v12 vegeta
  go_install task "$TASK_VERSION" github.com/go-task/task/v3/cmd task
  build_etcd
  build_kubernetes
  [[ "${JOBSCHEDULER_KUEUE:-1}" == 0 ]] || build_kueue
  [[ "${JOBSCHEDULER_JAEGER:-1}" == 0 ]] || build_jaeger
  [[ "${JOBSCHEDULER_REAL_NODE:-1}" == 0 ]] || build_node
}

# Every version of the matrix, one after the other, each by this script with its
# KUBERNETES_VERSION (the node's parts only where asked for, as in build).
build_matrix() {
  local v start
  for v in $KUBERNETES_MATRIX; do
    start=$SECONDS
    KUBERNETES_VERSION=$v bash "$ROOT/hack/tools.sh" build
    log "Kubernetes $v: tools ready in $((SECONDS - start)) s"
  done
}

case "${1:-build}" in
  build) build_all; log "all tools ready in $BIN (Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION)" ;;
  matrix) build_matrix ;;
  node) build_node; log "real node tools ready in $BIN" ;;
  containerd) build_containerd ;;
  kueue) build_kueue; log "Kueue ready in $BIN" ;;
  jaeger) build_jaeger; log "Jaeger ready in $BIN" ;;
  jaeger-ready) stamp_ok jaeger "$JAEGER_VERSION" && relink jaeger "$JAEGER_VERSION" jaeger ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 [build|node|matrix|kueue|jaeger|jaeger-ready|path]" >&2; exit 2 ;;
esac
