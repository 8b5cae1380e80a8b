#!/usr/bin/env bash
# Build the agent image with buildah (chroot isolation: no container runtime needed).
#
# Usage: scripts/build-image.sh [--tag TAG] [--base IMAGE] [--debootstrap-base] [--refresh-base]
#   --tag TAG           image name (default localhost/ip-masq-agent:latest)
#   --base IMAGE        base image passed as BASE_IMAGE (default: the Dockerfile's,
#                       debian:bookworm-slim, pulled from a registry)
#   --debootstrap-base  make the base locally with `debootstrap --variant=minbase bookworm`
#                       and use it as localhost/debian:bookworm-slim (what CI does: it needs
#                       only a Debian mirror, no image registry)
#   --refresh-base      rebuild that base even if a cached one exists
# Environment: BASE_CACHE (default /var/cache/ip-masq-agent-ci), BASE_MAX_AGE_DAYS (7),
#   DEBIAN_MIRROR (default http://deb.debian.org/debian), PIP_CA_BUNDLE (a CA bundle the
#   build's pip trusts, for TLS-intercepting proxies; default: the host's bundle if present).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=localhost/ip-masq-agent:latest
BASE=""
debootstrap_base=0
refresh=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --debootstrap-base) debootstrap_base=1; shift ;;
        --refresh-base) refresh=1; shift ;;
        *) echo "build-image.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

BASE_CACHE="${BASE_CACHE:-/var/cache/ip-masq-agent-ci}"
BASE_MAX_AGE_DAYS="${BASE_MAX_AGE_DAYS:-7}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LOCAL_BASE=localhost/debian:bookworm-slim

now() { date +%s; }

# A debootstrapped bookworm root, tarred into the cache and imported into buildah's storage.
# The tarball is reused while younger than BASE_MAX_AGE_DAYS; the image is re-imported whenever
# its label does not name the tarball's checksum (a fresh tarball, or storage wiped).
ensure_local_base() {
    local tarball="$BASE_CACHE/bookworm-minbase.tar" t0 sum have ctr mnt
    mkdir -p "$BASE_CACHE"
    if [ "$refresh" = 1 ] || [ ! -s "$tarball" ] \
        || [ -n "$(find "$tarball" -mtime "+$BASE_MAX_AGE_DAYS" 2>/dev/null)" ]; then
        t0=$(now)
        local dir
        dir="$(mktemp -d "$BASE_CACHE/rootfs.XXXXXX")"
        debootstrap --variant=minbase bookworm "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1 || {
            tail -20 "$dir.log" >&2
            rm -rf "$dir" "$dir.log"
            return 1
        }
        tar -C "$dir" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$dir" "$dir.log"
        echo "build-image: debootstrap of the base took $(($(now) - t0))s"
    else
        echo "build-image: reusing cached base $tarball"
    fi
    sum="$(sha256sum "$tarball" | cut -c1-16)"
    have="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.ip-masq-agent.rootfs"}}' \
        "$LOCAL_BASE" 2>/dev/null || true)"
    if [ "$have" != "$sum" ]; then
        t0=$(now)
        local old_base
        old_base="$(buildah inspect --type image --format '{{.FromImageID}}' "$LOCAL_BASE" 2>/dev/null || true)"
        ctr="$(buildah from scratch)"
        mnt="$(buildah mount "$ctr")"
        tar -C "$mnt" -xf "$tarball"
        buildah umount "$ctr" >/dev/null
        buildah config --cmd '["bash"]' --label "io.ip-masq-agent.rootfs=$sum" \
            --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
        buildah commit -q --rm "$ctr" "$LOCAL_BASE" >/dev/null
        if [ -n "$old_base" ]; then
            buildah rmi "$old_base" >/dev/null 2>&1 || true
        fi
        echo "build-image: imported the base as $LOCAL_BASE in $(($(now) - t0))s"
    fi
    BASE="$LOCAL_BASE"
}

if [ "$debootstrap_base" = 1 ]; then
    ensure_local_base
fi

args=(bud --isolation chroot --layers -t "$TAG" -f "$ROOT/Dockerfile")
if [ -n "$BASE" ]; then
    args+=(--build-arg "BASE_IMAGE=$BASE")
fi
ca="${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -s "$ca" ]; then
    args+=(--secret "id=pip-ca,src=$ca")
fi
previous="$(buildah inspect --type image --format '{{.FromImageID}}' "$TAG" 2>/dev/null || true)"
t0=$(now)
buildah "${args[@]}" "$ROOT"
echo "build-image: built $TAG in $(($(now) - t0))s"
# The image this tag named before is now unnamed: drop it so repeated CI runs do not pile up
# images (its layers stay while the build cache or the new image still uses them).
current="$(buildah inspect --type image --format '{{.FromImageID}}' "$TAG")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
fi
