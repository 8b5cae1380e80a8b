#!/usr/bin/env bash
# Install what the agent and its tests need on a Debian 12 machine: system packages, promtool,
# and a virtualenv with the project installed (editable) plus its test extra.  Idempotent:
# packages already present and an up-to-date venv are left alone, so every entry point
# (quickstart, scripts/test.sh, .ci/run) can call it.
#
# Usage: scripts/setup.sh [--container] [--promtool] [--update]
#   --container  also install buildah and debootstrap (the image test needs them)
#   --promtool   also install promtool if missing (the monitoring tests in the unit stage)
#   --update     always run `apt-get update` and the install (.ci/run on a fresh machine)
# Environment: VENV (default: <repo>/.venv), PYTHON (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

container=0
promtool=0
update=0
for arg in "$@"; do
    case "$arg" in
        --container) container=1 ;;
        --promtool) promtool=1 ;;
        --update) update=1 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# iptables ships both backends (iptables-legacy*, iptables-nft*) and ip6tables.
packages=(iptables iproute2 conntrack nftables python3 python3-venv ca-certificates)
if [ "$container" = 1 ]; then
    packages+=(buildah debootstrap)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

updated=0
if [ "$update" = 1 ] || [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: must run as root to install: ${missing[*]:-${packages[*]}}" >&2
        exit 1
    fi
    echo "setup: apt-get install ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confold "${packages[@]}" >/dev/null
    updated=1
fi

# promtool checks and unit-tests the example alerting rules (tests/test_monitoring.py); the
# quickstart does not need it. Debian ships it only inside the `prometheus` package, which also holds the server and its service:
# install it without recommends (they would add prometheus-node-exporter) and with a
# policy-rc.d that forbids starting services, so nothing is left running. An existing
# policy-rc.d (container images often have one) is put back afterwards. About 20 MB to
# download, 100 MB on disk with its dependencies.
if [ "$promtool" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: must run as root to install prometheus (for promtool)" >&2
        exit 1
    fi
    echo "setup: apt-get install --no-install-recommends prometheus (for promtool; service not started)"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$updated" != 1 ]; then
        apt-get update -qq
    fi
    policy=/usr/sbin/policy-rc.d
    saved_policy=""
    if [ -e "$policy" ]; then
        saved_policy="$(mktemp)"
        cp -p "$policy" "$saved_policy"
    fi
    restore_policy() {
        if [ -n "$saved_policy" ]; then
            mv -f "$saved_policy" "$policy"
        else
            rm -f "$policy"
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# scripts/setup.sh: start no service while installing prometheus\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
        prometheus >/dev/null
    restore_policy
    trap - EXIT
    command -v promtool >/dev/null
fi

# The venv is reinstalled only when pyproject.toml changed since the last install.
stamp="$VENV/.ip-masq-agent-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: venv $VENV is up to date"
else
    echo "setup: creating venv $VENV and installing the project with its test extra"
    "$PYTHON" -m venv "$VENV"
    log="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[test]" \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup.sh: pip install failed; full log in $log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
