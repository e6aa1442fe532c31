#!/usr/bin/env bash
set -uo pipefail
# The dev cluster's `up` and `down` times and idle resident memory, without and with the real
# node. Stops any dev cluster of this work tree first. Needs the tools, the venv and root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
P=.venv/bin/python
rss() { local total=0; for f in .devcluster/pids/*.pid .devcluster/node/pids/*.pid; do [[ -f $f ]] || continue; local pid=$(cat $f); local kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status); printf '  %-28s %6d MB\n' "$(basename $f .pid)" $((kb/1024)); total=$((total+kb)); done; echo "  total $((total/1024)) MB"; }
for mode in "" "--real-node"; do
  $P hack/devcluster.py down >/dev/null 2>&1
  s=$(date +%s.%N); $P hack/devcluster.py up $mode >/dev/null 2>&1; e=$(date +%s.%N)
  echo "up $mode: $(echo "$e - $s" | bc | cut -c1-5) s"
  sleep 30; echo "idle RSS after 30 s ($mode):"; rss
  s=$(date +%s.%N); $P hack/devcluster.py down >/dev/null 2>&1; e=$(date +%s.%N)
  echo "down $mode: $(echo "$e - $s" | bc | cut -c1-5) s"
done
