#!/usr/bin/env bash
# Runs every benchmark and writes its figures under benchmarks/results/ (not a test: these
# machines are shared and noisy, so figures are recorded, never asserted).
#   benchmarks/run.sh           core (pure: merge + plan of 10,000 CIDRs) and agent (as root,
#                               in its own network namespaces: processes per sync, 50k-rule
#                               ratio, config-change latency, idle CPU)
#   benchmarks/run.sh core      only the pure-core benchmark (both codecs at 10,000 and 50,000)
#   benchmarks/run.sh rebuild   iptables chain edits vs whole-chain rebuild (root)
#   benchmarks/run.sh nft-edits nft set element edits vs set reload (root)
#   benchmarks/run.sh incremental
#                               a one-CIDR config edit at 50,000 and 100,000 CIDRs in the
#                               pure core (merge, desired table, plan) and its peak RSS
#   benchmarks/run.sh netlink   set elements over netlink vs nft: dump, one add (root)
#   benchmarks/run.sh connections [ARGS]
#                               only the per-new-connection cost of each dataplane at 0 to
#                               100,000 CIDRs (as root, real packets through namespaces; about
#                               15 minutes; ARGS go to bench_connections.py, e.g. --prefixes
#                               24,32); not part of "all" because of its length
#   benchmarks/run.sh scale [ARGS]
#                               each dataplane at 0 to 100,000 CIDRs: first sync, steady
#                               --once, idle daemon, one-CIDR change, with and without a
#                               foreign nft writer (root; about 40 minutes; ARGS go to
#                               bench_scale.py, e.g. --only nftables:50000)
#   benchmarks/run.sh steady    the idle cost on an empty node, default config (root)
#   benchmarks/run.sh scrape    /metrics scrape cost at 64 to 50,000 CIDRs (root)
#   benchmarks/run.sh controlplane [ARGS]
#                               issue 17's target table: nftables at 50,000 and 100,000
#                               CIDRs, with and without IPv6: idle resyncs quiet and beside
#                               a foreign writer, a refreshing scrape, one-CIDR changes and
#                               a foreign element deletion judged by packets, first sync,
#                               peak RSS (root; about 15 minutes; ARGS go to
#                               bench_controlplane.py, e.g. --cases 2000 for a quick check)
# Heavy phases hold /tmp/masq-heavy.lock (flock), so other jobs' benchmarks do not overlap.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
LOCK=/tmp/masq-heavy.lock
export BENCH_COMMAND="benchmarks/run.sh $*"
cd "$ROOT"
what="${1:-all}"
needs_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "benchmarks/run.sh: the $1 benchmark needs root (network namespaces)" >&2
        exit 1
    fi
}
case "$what" in
    connections)
        needs_root connections
        shift
        # it takes the lock itself around each measuring phase
        PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_connections.py "$@"
        exit 0 ;;
    rebuild) PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_rebuild.py; exit 0 ;;
    nft-edits) PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_nft_edits.py; exit 0 ;;
    incremental)
        flock "$LOCK" env PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_incremental.py
        exit 0 ;;
    netlink) needs_root netlink; PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_netlink.py; exit 0 ;;
    scale|steady|scrape|controlplane)
        needs_root "$what"
        shift
        # each takes the lock itself around every measuring phase
        PYTHONPATH="$ROOT:$ROOT/tests" "$PY" "benchmarks/bench_$what.py" "$@"
        exit 0 ;;
esac
flock "$LOCK" env PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_core.py
cat benchmarks/results/core.txt
if [ "$what" = all ]; then
    needs_root agent
    flock "$LOCK" env PYTHONPATH="$ROOT:$ROOT/tests" "$PY" benchmarks/bench_agent.py
    cat benchmarks/results/agent.txt
fi
