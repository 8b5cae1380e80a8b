#!/usr/bin/env bash
# The whole test suite, as root: unit and property tests with the heavy hypothesis profile (the
# fuzz runs), then the network-namespace integration tests, then the randomized fault soak (one
# run per dataplane and iptables backend: iptables-nft, iptables-legacy, nftables; and the
# two-agents scenario for 15 s per dataplane), then the container image test.
# README's second quickstart command and .ci/run both call this script.
#
# It fails when any stage fails, when a stage runs no test at all, when fewer than MIN_PASSED
# tests pass in total, or when fewer than three files under tests/properties/ ran passing tests.
#
# Environment:
#   HYPOTHESIS_PROFILE  default "ci" (1,000 examples a property; see tests/conftest.py)
#   HYPOTHESIS_SEED     default: random, printed so a failure can be replayed with it
#   STAGES              default "unit integration soak container"
#   MIN_PASSED          default 150 (checked when the unit, integration and container stages run)
#   SOAK_SECONDS        default 120: the storm's length in each of the three soak runs
#   SOAK_SEED           default: the hypothesis seed (so one seed replays everything)
#   VENV                default <repo>/.venv (created by scripts/setup.sh if missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
STAGES="${STAGES:-unit integration soak container}"
MIN_PASSED="${MIN_PASSED:-150}"
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
SEED="${HYPOTHESIS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
export SOAK_SEED="${SOAK_SEED:-$SEED}"
export SOAK_SECONDS="${SOAK_SECONDS:-120}"

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: run as root: the integration and container tests create network namespaces" >&2
    exit 1
fi

setup_args=()
case " $STAGES " in *" unit "*) setup_args+=(--promtool) ;; esac
case " $STAGES " in *" container "*) setup_args+=(--container) ;; esac
"$ROOT/scripts/setup.sh" "${setup_args[@]}"

reports="$(mktemp -d /tmp/ip-masq-agent-tests.XXXXXX)"
trap 'rm -rf "$reports"' EXIT

echo "hypothesis: profile=$HYPOTHESIS_PROFILE seed=$SEED (replay: HYPOTHESIS_SEED=$SEED scripts/test.sh)"
echo "soak: seed=$SOAK_SEED seconds=$SOAK_SECONDS per run (replay one: python -m tests.soak --seed $SOAK_SEED --seconds $SOAK_SECONDS --dataplane iptables --backend nft|legacy, or --dataplane nftables)"

failed=()
timings=()
for stage in $STAGES; do
    case "$stage" in
        unit) marks="not integration and not container and not soak"; extra=(--timeout=900) ;;
        integration) marks="integration and not container"; extra=(--timeout=600) ;;
        soak) marks="soak"; extra=(--timeout=$((SOAK_SECONDS + 600)) -s) ;;
        container) marks="container"; extra=(--timeout=2400 -s) ;;
        *) echo "test.sh: unknown stage $stage" >&2; exit 2 ;;
    esac
    echo
    echo "=== test stage: $stage (-m '$marks')"
    start=$(date +%s)
    rc=0
    "$VENV/bin/python" -m pytest tests -m "$marks" -p no:cacheprovider \
        --hypothesis-seed="$SEED" --junitxml="$reports/$stage.xml" "${extra[@]}" || rc=$?
    took=$(($(date +%s) - start))
    timings+=("$(printf '%-12s %5ss  pytest exit %s' "$stage" "$took" "$rc")")
    # Exit 5 is "no tests collected": a stage that tests nothing is a failure too.
    if [ "$rc" != 0 ]; then
        failed+=("$stage")
    fi
done

echo
echo "=== test stage timings"
printf '%s\n' "${timings[@]}"

# Count from the JUnit reports rather than the console, so the numbers cannot be misread.
count_rc=0
"$VENV/bin/python" - "$reports" "$MIN_PASSED" "$STAGES" <<'EOF' || count_rc=$?
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

reports, min_passed, stages = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split()
total = 0
property_files: set[str] = set()
ok = True
for stage in stages:
    path = reports / f"{stage}.xml"
    if not path.exists():
        print(f"{stage:12s} no report")
        ok = False
        continue
    passed = failed = skipped = 0
    for case in ET.parse(path).iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failed += 1
        elif "skipped" in outcome:
            skipped += 1
        else:
            passed += 1
            module = case.get("classname", "")
            if module.startswith("tests.properties."):
                property_files.add(module.split(".")[2])
    total += passed
    print(f"{stage:12s} passed {passed:4d}  failed/errors {failed:3d}  skipped {skipped:3d}")
    if passed == 0:
        print(f"{stage}: no test passed")
        ok = False
print(f"total passed {total}; property test files with passing tests: {len(property_files)}")
if {"unit", "integration", "container"} <= set(stages):
    if total < min_passed:
        print(f"FAIL: fewer than {min_passed} tests passed")
        ok = False
    if len(property_files) < 3:
        print("FAIL: property tests passed in fewer than three files under tests/properties/")
        ok = False
sys.exit(0 if ok else 1)
EOF

if [ "${#failed[@]}" -gt 0 ] || [ "$count_rc" != 0 ]; then
    echo "FAILED stages: ${failed[*]:-none}; counts check exit $count_rc"
    exit 1
fi
echo "all test stages passed"
