#!/usr/bin/env bash
# Embeds build information into the package (jobscheduler/_buildinfo.json), read by
# `jobscheduler version` / `version-full`. The container build passes the same values as
# build args (VERSION, COMMIT, DIRTY, BUILD_DATE) because it has no .git to ask.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${VERSION:-$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo unknown)}"
commit="${COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}"
dirty="${DIRTY:-$([[ "$version" == *-dirty ]] && echo true || echo false)}"
build_date="${BUILD_DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
printf '{"version": "%s", "commit": "%s", "dirty": %s, "build_date": "%s"}\n' \
  "${version%-dirty}" "$commit" "$dirty" "$build_date" >"$ROOT/jobscheduler/_buildinfo.json"
cat "$ROOT/jobscheduler/_buildinfo.json"
