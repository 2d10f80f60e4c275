#!/usr/bin/env bash
# Build the worker and operator images with buildah, skipping an image whose inputs
# are unchanged: the sha256 of everything that goes into it (Dockerfile, ignore
# file, package sources, wheelhouse, base image ids, labels) is stored in the image
# as the label io.w5xde.inputs, and compared before building.
#
# Environment (set by mk/images.mk): BUILDAH (command with storage flags), BASE_IMAGE,
# BUILD_IMAGE, WORKER_IMAGE, OPERATOR_IMAGE, VERSION, SOURCE, WHEELHOUSE, and
# IMAGES_FROM: empty builds the work tree as it is; a git revision (e.g. HEAD)
# builds exactly that commit from a `git archive` of it, for release builds.
set -euo pipefail
read -r -a buildah <<<"$BUILDAH"

if [[ -n "${IMAGES_FROM:-}" ]]; then
    commit=$(git rev-parse --verify "${IMAGES_FROM}^{commit}")
    snapshot=$(mktemp -d)
    trap 'rm -rf "$snapshot"' EXIT
    git archive "$commit" | tar -x -C "$snapshot"
    mkdir -p "$snapshot/$(dirname "$WHEELHOUSE")"
    cp -a "$WHEELHOUSE" "$snapshot/$WHEELHOUSE"
    cd "$snapshot"
fi

inputs=(pyproject.toml README.md .dockerignore src worker operator)

# The revision of the last commit that touched the image inputs, so a commit
# elsewhere in the tree neither rebuilds the images nor makes their label lie.
revision() {
    if [[ -n "${commit:-}" ]]; then
        echo "$commit"
        return
    fi
    local rev
    rev=$(git log -1 --format=%H -- "${inputs[@]}" Dockerfile.worker Dockerfile.operator 2>/dev/null || true)
    rev=${rev:-unknown}
    if [[ -n "$(git status --porcelain -- "${inputs[@]}" Dockerfile.worker Dockerfile.operator 2>/dev/null)" ]]; then
        rev="$rev-dirty"
    fi
    echo "$rev"
}

inputs_hash() {
    local dockerfile=$1 revision=$2
    {
        find "${inputs[@]}" "$WHEELHOUSE" "$dockerfile" -type f \
            -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -not -name '*.pyc' -print0 \
            | sort -z | xargs -0 sha256sum
        "${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE"
        "${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$BUILD_IMAGE"
        echo "$VERSION $revision $SOURCE"
    } | sha256sum | cut -c1-32
}

build() {
    local dockerfile=$1 image=$2
    local revision hash current
    revision=$(revision)
    hash=$(inputs_hash "$dockerfile" "$revision")
    current=$("${buildah[@]}" inspect --type image --format '{{index .ImageAnnotations "io.w5xde.inputs"}}{{index .OCIv1.Config.Labels "io.w5xde.inputs"}}' "$image" 2>/dev/null || true)
    if [[ "$current" == "$hash" ]]; then
        echo "images: $image is up to date (inputs $hash)"
        return
    fi
    echo "images: building $image from $dockerfile (inputs $hash)"
    local log
    log=$(mktemp)
    local start=$SECONDS
    if ! "${buildah[@]}" build --isolation chroot --layers --pull=never \
        --file "$dockerfile" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg BUILD_IMAGE="$BUILD_IMAGE" \
        --build-arg WHEELHOUSE="$WHEELHOUSE" \
        --build-arg VERSION="$VERSION" \
        --build-arg REVISION="$revision" \
        --build-arg SOURCE="$SOURCE" \
        --label io.w5xde.inputs="$hash" \
        --tag "$image" . >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        echo "images: building $image failed" >&2
        exit 1
    fi
    rm -f "$log"
    echo "images: built $image in $((SECONDS - start)) s"
}

build Dockerfile.worker "$WORKER_IMAGE"
build Dockerfile.operator "$OPERATOR_IMAGE"
