#!/usr/bin/env bash
# Quickstart, as root on a Debian 12 machine: install what is missing, then run the agent once
# on its built-in defaults inside throwaway network namespaces, show the rules it wrote and
# send two packets through them.  The machine's own network namespace and its iptables rules
# are never touched; the namespaces are deleted on exit, whatever happens.
#
# Usage: scripts/quickstart.sh [--dataplane=iptables|nftables]
#   --dataplane=nftables  the agent writes its nftables table instead of the iptables chain;
#                         the script prints that table (nft list table) and, after the packets,
#                         its sets' per-element counters.
#
#     pod (10.244.1.2) --veth-- node (the agent runs here) --veth-- dest (192.168.100.2)
#                                                                    + 172.20.0.10 (RFC 1918)
#                                                                    + 203.0.113.10 (elsewhere)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

dataplane=iptables
for arg in "$@"; do
    case "$arg" in
        --dataplane=iptables|--dataplane=nftables) dataplane="${arg#--dataplane=}" ;;
        *) echo "quickstart.sh: unknown argument: $arg (see the header)" >&2; exit 2 ;;
    esac
done
# The agent's nftables table (IPv4 only: family ip) and its sets (masquerade-v4, ...).
TABLE="ip ip-masq-agent"

if [ "$(id -u)" != 0 ]; then
    echo "quickstart.sh: run as root (it creates network namespaces)" >&2
    exit 1
fi

"$ROOT/scripts/setup.sh"
PY="$VENV/bin/python"
AGENT="$VENV/bin/ip-masq-agent"

POD="qs-pod-$$"
NODE="qs-node-$$"
DEST="qs-dest-$$"
work="$(mktemp -d /tmp/ip-masq-agent-quickstart.XXXXXX)"

cleanup() {
    for ns in "$POD" "$NODE" "$DEST"; do
        ip netns delete "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

for ns in "$POD" "$NODE" "$DEST"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip link add vpod netns "$NODE" type veth peer name eth0 netns "$POD"
ip link add vup netns "$NODE" type veth peer name eth0 netns "$DEST"
ip -n "$POD" addr add 10.244.1.2/24 dev eth0
ip -n "$POD" link set eth0 up
ip -n "$POD" route add default via 10.244.1.1
ip -n "$NODE" addr add 10.244.1.1/24 dev vpod
ip -n "$NODE" addr add 192.168.100.1/24 dev vup
ip -n "$NODE" link set vpod up
ip -n "$NODE" link set vup up
ip -n "$NODE" route add default via 192.168.100.2
in_ns "$NODE" sysctl -qw net.ipv4.ip_forward=1
ip -n "$DEST" addr add 192.168.100.2/24 dev eth0
ip -n "$DEST" addr add 172.20.0.10/32 dev lo
ip -n "$DEST" addr add 203.0.113.10/32 dev lo
ip -n "$DEST" link set eth0 up
# Unmasqueraded replies go back to the pod network through the node.
ip -n "$DEST" route add 10.244.1.0/24 via 192.168.100.1

# An empty config directory: the agent runs on its built-in defaults (RFC 1918 stays unmasqueraded).
mkdir "$work/config"
echo
echo "### ip-masq-agent --once --dataplane=$dataplane in namespace $NODE (built-in defaults)"
in_ns "$NODE" "$AGENT" --once --dataplane="$dataplane" --config-dir "$work/config" \
    --metrics-bind-address 0

echo
if [ "$dataplane" = nftables ]; then
    echo "### the agent's table (nft list table $TABLE)"
    in_ns "$NODE" nft list table $TABLE
else
    echo "### the node's nat table (iptables-save -t nat)"
    in_ns "$NODE" iptables-save -t nat
    if ! in_ns "$NODE" iptables-save -t nat | grep -q '^:IP-MASQ-AGENT'; then
        echo "### (the agent chose the legacy backend: iptables-legacy-save -t nat)"
        in_ns "$NODE" iptables-legacy-save -t nat
    fi
fi

listener='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(5)
print("ready", flush=True)
try:
    print(s.recvfrom(2048)[1][0], flush=True)
except OSError:
    print("nothing", flush=True)
'
sender='
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
'

# probe DEST_IP PORT: send UDP datagrams from the pod, print the source address dest saw.
probe() {
    local out="$work/probe-$2"
    in_ns "$DEST" "$PY" -c "$listener" "$2" >"$out" &
    local pid=$!
    for _ in $(seq 50); do
        grep -qs ready "$out" && break
        sleep 0.1
    done
    in_ns "$POD" "$PY" -c "$sender" "$1" "$2"
    wait "$pid" || true
    tail -n 1 "$out"
}

echo
echo "### packet test: UDP from the pod (10.244.1.2), source address as the destination saw it"
status=0
check() {
    local dst="$1" port="$2" want="$3" meaning="$4" seen verdict=ok
    seen="$(probe "$dst" "$port")"
    if [ "$seen" != "$want" ]; then
        verdict="UNEXPECTED (wanted $want)"
        status=1
    fi
    printf '  to %-14s seen from %-14s %-38s %s\n' "$dst" "$seen" "$meaning" "$verdict"
}
check 172.20.0.10 40001 10.244.1.2 "(RFC 1918: pod address kept)"
check 203.0.113.10 40002 192.168.100.1 "(elsewhere: masqueraded to the node)"

echo
if [ "$dataplane" = nftables ]; then
    echo "### per-element counters of the agent's sets (nft list set $TABLE SET)"
    for set in $(in_ns "$NODE" nft list table $TABLE | awk '$1 == "set" { print $2 }'); do
        echo "  set $set:"
        in_ns "$NODE" nft list set $TABLE "$set" | sed -n '/elements = /,/}/p' | grep . \
            || echo "    (no elements)"
    done
    echo
    echo "### rule counters (link-local return, catch-all)"
    in_ns "$NODE" nft list chain $TABLE postrouting | grep counter
else
    echo "### per-rule packet counters"
    in_ns "$NODE" iptables -t nat -L IP-MASQ-AGENT -v -n 2>/dev/null \
        || in_ns "$NODE" iptables-legacy -t nat -L IP-MASQ-AGENT -v -n
fi
echo
if [ "$status" = 0 ]; then
    echo "quickstart: OK (namespaces are being deleted)"
else
    echo "quickstart: the packet test did not see what it expected" >&2
fi
exit "$status"
