#!/usr/bin/env bash
# Regenerates the Python protobuf/gRPC modules (and their .pyi stubs) from proto/.
#   hack/protogen.sh           write them into the package (jobscheduler/api/)
#   hack/protogen.sh --check   fail if the committed ones differ from a fresh generation
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$ROOT"
if [[ "${1:-}" == "--check" ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
cd "$ROOT/proto"
mapfile -t protos < <(find . -name '*.proto' | sed 's|^\./||' | sort)
PATH="$(dirname "$PY"):$PATH" "$PY" -m grpc_tools.protoc -I . \
  --python_out="$OUT" --mypy_out="$OUT" --grpc_python_out="$OUT" --mypy_grpc_out="$OUT" \
  "${protos[@]}"
if [[ "${1:-}" == "--check" ]]; then
  for f in $(cd "$OUT" && find . -name '*_pb2*' | sort); do
    if ! cmp -s "$OUT/$f" "$ROOT/$f"; then
      echo "generated code is stale: ${f#./} differs from proto/ (run hack/protogen.sh and commit)" >&2
      exit 1
    fi
  done
  echo "generated protobuf code is up to date" >&2
fi
