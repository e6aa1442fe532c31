#!/usr/bin/env bash
# Builds the service's container image from the Dockerfile, here and on machines like it.
#
#   hack/image.sh build      build (or reuse) the image; prints its reference on stdout
#   hack/image.sh ref        the reference the current sources would get (builds nothing)
#   hack/image.sh base       build (or reuse) the stand-in Python base image
#   hack/image.sh sandbox    build (or reuse) the real node's sandbox ("pause") image
#   hack/image.sh save REF FILE   write REF as a docker-archive (for `ctr images import`)
#
# With a Docker engine the Dockerfile is built as anywhere else, on the public python:slim
# base. Without one it is built with buildah (Debian package, runc runtime, chroot isolation),
# and, since no registry is reachable from these machines, on a stand-in base made from
# Debian's own packages with mmdebstrap and passed through the Dockerfile's PYTHON_IMAGE
# argument. PYTHON_IMAGE=... overrides the base either way (no pull is ever attempted for the
# stand-in).
#
# Caching: the base image is tagged by a hash of its recipe and built once; the app image is
# tagged by a hash of every file the build context admits (.dockerignore's allow list), the
# Dockerfile and the base, so an unchanged tree is a no-op. The commit and version are passed
# as build arguments but are not part of the key (else every commit would rebuild): a reused
# image reports the commit it was first built from.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The stand-in for python:3.11-slim-bookworm: Debian's own Python 3.11 plus what the service
# and its wheels need at run time (grpcio links libstdc++; netbase gives /etc/services).
BASE_SUITE=bookworm
BASE_PACKAGES=(python3 python3-venv python-is-python3 libstdc++6 ca-certificates netbase)
BASE_RECIPE_VERSION=1 # bump when the recipe below changes in a way the hash cannot see
BASE_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
SANDBOX_REPO=localhost/jobscheduler-sandbox

engine() {
  if [[ -n "${JOBSCHEDULER_IMAGE_ENGINE:-}" ]]; then
    echo "$JOBSCHEDULER_IMAGE_ENGINE"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  else
    echo buildah
  fi
}

sha() { sha256sum | cut -c1-"${1:-16}"; }

apt_sources() {
  # The machine's own Debian sources (and so its mirror), so the base gets the same Python
  # build, security updates included, as the host.
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    echo /etc/apt/sources.list.d/debian.sources
  else
    echo /etc/apt/sources.list
  fi
}

base_ref() {
  local key
  key="$({
    echo "$BASE_RECIPE_VERSION $BASE_SUITE ${BASE_PACKAGES[*]} ${BASE_ENV[*]}"
    dpkg-query -W -f='${Version}\n' python3.11 2>/dev/null || true
  } | sha 12)"
  echo "localhost/jobscheduler-python-base:3.11-$key"
}

exists() { podman image exists "$1" 2>/dev/null; }

build_base() {
  local ref tmp start=$SECONDS changes=()
  ref="$(base_ref)"
  if exists "$ref"; then
    log "base $ref is cached"
    echo "$ref"
    return
  fi
  command -v mmdebstrap >/dev/null || { log "ERROR: mmdebstrap is missing: run hack/packages.sh"; exit 1; }
  log "building the stand-in base $ref with mmdebstrap ($BASE_SUITE: ${BASE_PACKAGES[*]})"
  tmp="$(mktemp -d)"
  mmdebstrap --quiet --variant=essential --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$BASE_SUITE" "$tmp/rootfs.tar" "$(apt_sources)" >&2
  for e in "${BASE_ENV[@]}"; do changes+=(--change "ENV=$e"); done
  podman import --quiet "${changes[@]}" --change 'CMD=["python3"]' "$tmp/rootfs.tar" "$ref" >/dev/null
  rm -rf "$tmp"
  log "built base $ref in $((SECONDS - start)) s ($(size "$ref"))"
  echo "$ref"
}

build_sandbox() {
  # The pod sandbox only has to hold the pod's namespaces open and reap zombies: Debian's
  # static catatonit in pause mode does that, in an image of one file.
  local version ref tmp
  version="$(dpkg-query -W -f='${Version}' catatonit 2>/dev/null)" ||
    { log "ERROR: catatonit is missing: run hack/packages.sh"; exit 1; }
  ref="$SANDBOX_REPO:catatonit-${version//[^A-Za-z0-9_.-]/-}"
  if exists "$ref"; then
    echo "$ref"
    return
  fi
  tmp="$(mktemp -d)"
  install -m 0755 /usr/bin/catatonit "$tmp/catatonit"
  tar -C "$tmp" --owner=0 --group=0 -cf "$tmp/rootfs.tar" catatonit
  podman import --quiet --change 'ENTRYPOINT=["/catatonit","-P"]' --change 'USER=65535:65535' \
    "$tmp/rootfs.tar" "$ref" >/dev/null
  rm -rf "$tmp"
  log "built sandbox image $ref"
  echo "$ref"
}

# Every file the build context admits: the "!path" lines of .dockerignore (tracked or not,
# ignored files such as __pycache__ left out as .dockerignore does).
context_files() {
  local allowed=()
  while read -r line; do
    [[ "$line" == '!'* && "$line" != *'*'* ]] && allowed+=("${line#!}")
  done <.dockerignore
  git ls-files -co --exclude-standard -- "${allowed[@]}" | grep -v -e '__pycache__' -e '_buildinfo.json' | sort
}

build_args() { # base
  local version commit dirty
  version="$(git describe --tags --always --dirty 2>/dev/null || echo unknown)"
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  dirty="$(git diff --quiet 2>/dev/null && echo false || echo true)"
  printf '%s\n' "PYTHON_IMAGE=$1" "VERSION=$version" "COMMIT=$commit" "DIRTY=$dirty"
}

app_ref() { # base
  local key
  key="$({
    echo "$1"
    cat Dockerfile .dockerignore
    context_files | while read -r f; do
      printf '%s\n' "$f"
      cat "$f"
    done
  } | sha 16)"
  echo "localhost/jobscheduler:$key"
}

default_base() {
  if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    echo "$PYTHON_IMAGE"
  elif [[ "$(engine)" == docker ]]; then
    sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile
  else
    base_ref
  fi
}

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

build_app() {
  local base ref start args=()
  base="$(default_base)"
  if [[ "$(engine)" == buildah && -z "${PYTHON_IMAGE:-}" ]]; then
    base="$(build_base)"
  fi
  ref="$(app_ref "$base")"
  if [[ "$(engine)" == docker ]]; then
    docker image inspect "$ref" >/dev/null 2>&1 && { log "$ref is up to date"; echo "$ref"; return; }
  elif exists "$ref"; then
    log "$ref is up to date"
    echo "$ref"
    return
  fi
  while read -r a; do args+=(--build-arg "$a"); done < <(build_args "$base")
  args+=(--build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  start=$SECONDS
  log "building $ref with $(engine) on $base"
  if [[ "$(engine)" == docker ]]; then
    docker build --quiet "${args[@]}" -t "$ref" -t jobscheduler:dev . >&2
  else
    # pip inside the build must trust what the machine trusts (a TLS-inspecting proxy's CA
    # on some networks) and use its index settings: mount both read-only for the RUN steps;
    # nothing mounted is committed into a layer.
    local mounts=()
    [[ -f /etc/pip.conf ]] && mounts+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
      mounts+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    buildah bud --quiet --isolation chroot --runtime runc --pull=never --layers=false \
      "${mounts[@]}" "${args[@]}" -t "$ref" -t localhost/jobscheduler:dev -f Dockerfile . >&2
  fi
  log "built $ref in $((SECONDS - start)) s ($( [[ "$(engine)" == docker ]] && echo docker || size "$ref"))"
  [[ "$(engine)" == docker ]] || prune_old
  echo "$ref"
}

prune_old() { # keep the three newest app images; every source change adds one
  podman images --filter reference=localhost/jobscheduler --sort created --format '{{.Tag}}' |
    grep -v '^dev$' | tail -n +4 | while read -r tag; do
    podman rmi --force "localhost/jobscheduler:$tag" >/dev/null 2>&1 || true
  done
}

save() { # ref file: podman save refuses to overwrite, so write beside and rename
  local tmp="$2.tmp.$$"
  rm -f "$tmp"
  podman save --quiet --format docker-archive -o "$tmp" "$1"
  mv -f "$tmp" "$2"
}

case "${1:-build}" in
  build) build_app ;;
  ref) app_ref "$(default_base)" ;;
  base) build_base ;;
  sandbox) build_sandbox ;;
  save) save "$2" "$3" ;;
  *) echo "usage: $0 build|ref|base|sandbox|save REF FILE" >&2; exit 2 ;;
esac
