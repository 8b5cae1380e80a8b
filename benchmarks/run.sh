#!/usr/bin/env bash
# Runs every benchmark and writes its figures under benchmarks/results/ (not a test: these
# machines are shared and noisy, so figures are recorded, never asserted).
#   benchmarks/run.sh           core (pure: merge + plan of 10,000 CIDRs) and agent (as root,
#                               in its own network namespaces: processes per sync, 50k-rule
#                               ratio, config-change latency, idle CPU)
#   benchmarks/run.sh core      only the pure-core benchmark
#   benchmarks/run.sh rebuild   iptables chain edits vs whole-chain rebuild (root)
#   benchmarks/run.sh nft-edits nft set element edits vs set reload (root)
#   benchmarks/run.sh connections [ARGS]
#                               only the per-new-connection cost of each dataplane at 0 to
#                               100,000 CIDRs (as root, real packets through namespaces; about
#                               15 minutes; ARGS go to bench_connections.py, e.g. --prefixes
#                               24,32); not part of "all" because of its length
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"
what="${1:-all}"
case "$what" in
    rebuild) PYTHONPATH="$ROOT" "$PY" benchmarks/bench_rebuild.py; exit 0 ;;
    nft-edits) PYTHONPATH="$ROOT" "$PY" benchmarks/bench_nft_edits.py; exit 0 ;;
esac
if [ "$what" = connections ]; then
    shift
    if [ "$(id -u)" != 0 ]; then
        echo "benchmarks/run.sh: the connections benchmark needs root (network namespaces)" >&2
        exit 1
    fi
    # it takes /tmp/masq-heavy.lock itself around each measuring phase
    PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_connections.py "$@"
    exit 0
fi
PYTHONPATH="$ROOT" "$PY" benchmarks/bench_core.py
cat benchmarks/results/core.txt
if [ "$what" = all ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "benchmarks/run.sh: the agent benchmark needs root (network namespaces)" >&2
        exit 1
    fi
    PYTHONPATH="$ROOT" "$PY" benchmarks/bench_agent.py
    cat benchmarks/results/agent.txt
fi
