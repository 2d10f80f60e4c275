#!/usr/bin/env bash
# Build the local base images once: no registry is reachable from here, so the
# Dockerfiles' BASE_IMAGE / BUILD_IMAGE point at images made from a Debian
# bookworm debootstrap (python3 3.11, like the official python:3.11-slim).
#
#   localhost/w5xde-base:bookworm   runtime base: python3 only
#   localhost/w5xde-build:bookworm  build base: python3 + venv/ensurepip (pip)
#
# Both come from ONE debootstrap: the build rootfs is tarred first, then the venv
# packages are purged in a chroot for the runtime rootfs, so the two bases share
# exactly the same python3 and the runtime never carries pip or setuptools.
# Tarballs are cached under $W5XDE_CACHE/images; a warm run only checks they exist.
set -euo pipefail

CACHE="${W5XDE_CACHE:-$HOME/.cache/w5xde}/images"
SUITE=bookworm
BASE_IMAGE="${BASE_IMAGE:-localhost/w5xde-base:$SUITE}"
BUILD_IMAGE="${BUILD_IMAGE:-localhost/w5xde-build:$SUITE}"
# --log-level=error: podman warns about its unused CNI config on every call.
PODMAN=(podman --log-level=error --root "$CACHE/storage" --runroot /run/w5xde-containers --storage-driver overlay)
RUNTIME_TAR="$CACHE/rootfs-$SUITE-runtime.tar"
BUILD_TAR="$CACHE/rootfs-$SUITE-build.tar"
BUILD_ONLY_PACKAGES=(python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl)

# The mirror apt already uses here: debootstrap must not guess another one.
apt_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null \
            | grep -v -- '-security' | awk '{print $2}' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# A debootstrap that fails half-way can leave /proc or /sys mounted in the target.
unmount_below() {
    findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r mount; do
        umount -l "$mount" || true
    done
}

slim_rootfs() {
    local root=$1
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/tmp/* "$root"/root/.cache
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
}

make_rootfs_tarballs() {
    local work
    work=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    trap 'unmount_below "$work"; rm -rf "$work"' EXIT
    local mirror
    mirror=$(apt_mirror)
    echo "debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$work/rootfs" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log"; exit 1; }
    slim_rootfs "$work/rootfs"
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/build.tar" .
    DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" \
        apt-get purge -y -q --auto-remove "${BUILD_ONLY_PACKAGES[@]}" >"$work/purge.log" 2>&1 \
        || { tail -n 30 "$work/purge.log"; exit 1; }
    slim_rootfs "$work/rootfs"
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/runtime.tar" .
    mv "$work/build.tar" "$BUILD_TAR"
    mv "$work/runtime.tar" "$RUNTIME_TAR"
    rm -rf "$work"
    trap - EXIT
}

import_image() {
    local tarball=$1 name=$2
    if "${PODMAN[@]}" image exists "$name" \
        && [[ "$("${PODMAN[@]}" image inspect --format '{{index .Labels "io.w5xde.rootfs-mtime"}}' "$name")" \
            == "$(stat -c %Y "$tarball")" ]]; then
        return
    fi
    echo "importing $tarball as $name"
    "${PODMAN[@]}" import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL io.w5xde.rootfs-mtime=$(stat -c %Y "$tarball")" \
        --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase with python3 (w5xde local base)" \
        "$tarball" "$name" >/dev/null
}

mkdir -p "$CACHE"
if [[ ! -s "$RUNTIME_TAR" || ! -s "$BUILD_TAR" ]]; then
    make_rootfs_tarballs
fi
import_image "$RUNTIME_TAR" "$BASE_IMAGE"
import_image "$BUILD_TAR" "$BUILD_IMAGE"
