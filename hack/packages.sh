#!/usr/bin/env bash
# Installs the Debian packages the container image build and the dev cluster's real node need
# (podman/buildah with runc, mmdebstrap for the stand-in base image, catatonit for the sandbox
# image, CNI plugins, iptables and conntrack for kube-proxy). Idempotent: only what is missing
# is installed, and `apt-get update` runs only when something is.
#   hack/packages.sh            install what is missing (root, Debian/Ubuntu)
#   hack/packages.sh --check    exit 1 and name what is missing, install nothing
set -euo pipefail

PACKAGES=(podman buildah runc mmdebstrap catatonit containernetworking-plugins iptables conntrack)

log() { printf '[packages %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "${1:-}" == "--check" ]]; then
  log "missing Debian packages: ${missing[*]}"
  exit 1
fi
command -v apt-get >/dev/null || { log "ERROR: need Debian packages ${missing[*]} and there is no apt-get here"; exit 1; }
[[ $(id -u) == 0 ]] || { log "ERROR: installing ${missing[*]} needs root (sudo $0)"; exit 1; }
start=$SECONDS
log "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${#missing[@]} packages in $((SECONDS - start)) s"
