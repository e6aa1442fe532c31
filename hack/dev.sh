#!/usr/bin/env bash
# The project's entry points for people and CI, so that a fresh machine with Python >= 3.11
# and Go needs nothing else:
#   hack/dev.sh test      build/reuse tools, make the venv, start the dev cluster, run every
#                         check and test, stop the cluster (also on failure)
#   hack/dev.sh run       build/reuse tools, make the venv, start the dev cluster and serve the
#                         gRPC API on :50054 against it (Ctrl-C stops the service; the cluster
#                         keeps running until `hack/devcluster.py down`)
#   hack/dev.sh setup     only the tools and the venv
#   hack/dev.sh check     lint, format, types, layers, generated code and docs (no cluster)
#   hack/dev.sh bench [--quick]   the benchmark (bench/README.md); starts the dev cluster if
#                         it is not running, and stops it afterwards only in that case
#   hack/dev.sh test-realnode   only the real-node suite (tests/realnode): image, real pods
#   hack/dev.sh matrix [--write]  the integration suite on every Kubernetes minor of the matrix
#                         (hack/matrix.py; --write rewrites docs/compatibility.md)
#
# KUBERNETES_VERSION=1.37.2 (one of KUBERNETES_MATRIX in hack/versions.env) makes test, run,
# bench and setup build and start that version instead of the default.
#
# `test` runs the dev cluster with its real node (containerd, kubelet, kube-proxy; root and
# Debian packages, installed by hack/packages.sh) and builds the container image first;
# JOBSCHEDULER_REAL_NODE=0 leaves both out (the real-node tests are then skipped).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

log() { printf '[dev %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

setup_venv() {
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { log "ERROR: Python >= 3.11 is required; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11"; exit 1; }
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  [[ -f "$stamp" ]] && return
  log "creating the virtualenv in $VENV"
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
}

setup() {
  if [[ "${JOBSCHEDULER_REAL_NODE:-0}" == 1 ]]; then
    bash "$ROOT/hack/packages.sh"
  fi
  if [[ "${JOBSCHEDULER_JAEGER:-1}" == 1 ]]; then
    JOBSCHEDULER_JAEGER=0 bash "$ROOT/hack/tools.sh" build
    build_jaeger_in_background
  else
    bash "$ROOT/hack/tools.sh" build
  fi
  setup_venv
  bash hack/buildinfo.sh >/dev/null
  if [[ "${JOBSCHEDULER_REAL_NODE:-0}" == 1 ]]; then
    local start=$SECONDS
    log "container image (hack/image.sh build): $(bash "$ROOT/hack/image.sh" build) in $((SECONDS - start)) s"
  fi
  export PATH="$(bash "$ROOT/hack/tools.sh" path):$VENV/bin:$PATH"
}

# Jaeger (the tracing tests' OTLP receiver) takes about 10 min to build cold and nothing but
# those tests and the tracing benchmark needs it: it builds while the rest is set up and tested.
# hack/jaeger.py asks hack/tools.sh for it again, which waits for this build (a lock) and links it.
build_jaeger_in_background() {
  bash "$ROOT/hack/tools.sh" jaeger-ready && return
  local logfile="${TMPDIR:-/tmp}/jobscheduler-jaeger-build.log"
  log "building Jaeger in the background (log: $logfile); the tracing tests wait for it"
  bash "$ROOT/hack/tools.sh" jaeger >"$logfile" 2>&1 &
}

check() {
  log "ruff check"; "$VENV/bin/ruff" check .
  log "ruff format --check"; "$VENV/bin/ruff" format --check .
  log "mypy --strict"; "$VENV/bin/mypy"
  log "import-linter (layers)"; "$VENV/bin/lint-imports" --no-cache
  log "hadolint Dockerfile"; "$VENV/bin/hadolint" Dockerfile
  log "generated protobuf code is fresh"; PY="$VENV/bin/python" bash hack/protogen.sh --check
  log "docs/api.md is fresh"; "$VENV/bin/python" hack/apidoc.py --check
  log "docs/configuration.md is fresh"; "$VENV/bin/python" hack/configdoc.py --check
  log "docs/performance.md is fresh"; "$VENV/bin/python" -m bench.report --check
  log "docs/compatibility.md is fresh"; "$VENV/bin/python" hack/matrix.py --check
}

run_tests() {
  local was_running=0
  # Running at all (with or without a real node): then it is not ours to stop (the real-node
  # tests add the node to it, and remove it again, if it has none).
  "$VENV/bin/python" hack/devcluster.py running >/dev/null 2>&1 && was_running=1
  if [[ $was_running == 0 ]]; then
    trap '"$VENV/bin/python" hack/devcluster.py down' EXIT
    if [[ "${JOBSCHEDULER_REAL_NODE:-0}" == 1 ]]; then
      "$VENV/bin/python" hack/devcluster.py up --real-node
    else
      "$VENV/bin/python" hack/devcluster.py up
    fi
  fi
  log "pytest $*"
  "$VENV/bin/python" -m pytest "$@"
}

run_bench() {
  local started=0
  if ! "$VENV/bin/python" hack/devcluster.py status >/dev/null 2>&1; then
    # Stopped afterwards only if this creates it: existing state is someone's cluster, perhaps
    # with a component restarting (fault tests), not a stopped one.
    [[ -e "${JOBSCHEDULER_DEVCLUSTER_DIR:-$ROOT/.devcluster}/kubeconfig" ]] || started=1
    if [[ $started == 1 ]]; then trap '"$VENV/bin/python" hack/devcluster.py down' EXIT; fi
    "$VENV/bin/python" hack/devcluster.py up
  fi
  log "benchmark: python -m bench.run $*"
  "$VENV/bin/python" -m bench.run "$@"
}

run_local() {
  "$VENV/bin/python" hack/devcluster.py up
  log "serving on :${GRPC_PORT:-50054} against the dev cluster (Ctrl-C to stop)"
  log "try: grpcurl -plaintext -d '{}' localhost:${GRPC_PORT:-50054} jobscheduler.JobScheduler/ListJobs"
  IN_CLUSTER=false KUBECONFIG="$ROOT/.devcluster/kubeconfig" LOG_FORMAT="${LOG_FORMAT:-console}" \
    METRICS_PORT="${METRICS_PORT:-8080}" exec "$VENV/bin/jobscheduler" serve
}

case "${1:-}" in
  setup) setup ;;
  run) setup; run_local ;;
  check) setup_venv; check ;;
  test) shift; export JOBSCHEDULER_REAL_NODE="${JOBSCHEDULER_REAL_NODE:-1}"; setup; check; run_tests "$@" ;;
  test-realnode) shift; export JOBSCHEDULER_REAL_NODE=1; setup; run_tests -m realnode tests/realnode "$@" ;;
  bench) shift; setup; run_bench "$@" ;;
  matrix) shift; setup_venv; "$VENV/bin/python" hack/matrix.py "$@" ;;
  *) echo "usage: $0 setup|run|check|test|test-realnode [pytest args]|bench [--quick]|matrix [--write]" >&2; exit 2 ;;
esac
