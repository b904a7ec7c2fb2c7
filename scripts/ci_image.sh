#!/usr/bin/env bash
# Build the container image in CI, with podman standing in for Docker (no Docker engine here).
#
#   1. apt-get install podman, runc and debootstrap (if any is missing)
#   2. build the local base image localhost/debian:bookworm-slim with debootstrap (once per machine)
#   3. build our image from the Dockerfile, taking pip's CA bundle and local wheel folders from
#      `pip config list`, and tag it (default mme:test)
#
# Idempotent: run it again and only step 3 does real work (podman's layer cache makes it quick).
# Options: --base-only (stop after step 2), -h/--help.
# Environment: MME_TEST_IMAGE (tag, default mme:test), BASE_IMAGE (default
# localhost/debian:bookworm-slim), DEBIAN_MIRROR (default: the one apt uses here).
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

BASE_ONLY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base-only) BASE_ONLY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "ci_image.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${MME_TEST_IMAGE:-mme:test}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm-slim}"
SUITE="bookworm"
# crun fails on this machine's cgroups, and podman's default ulimits exceed the machine's limits.
ENGINE_FLAGS=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=8192:8192)

log() { printf '[ci_image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[ci_image] error: %s\n' "$*" >&2; exit 1; }

# Run a step and print how long it took.
timed() {
    local name="$1"
    shift
    local start=$SECONDS
    log "step: ${name}"
    "$@"
    log "step: ${name} took $((SECONDS - start)) s"
}

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || missing+=(runc)
    command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "podman, runc and debootstrap are installed"
        return
    fi
    [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman runc debootstrap
}

# The Debian mirror that apt on this machine uses (deb822 or one-line sources).
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$(grep -h -E '^\s*URIs:\s*\S+/debian/?\s*$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | head -n 1 || true)"
    if [[ -z "$uri" ]]; then
        uri="$(grep -h -E '^\s*deb\s+\S+/debian/?\s+bookworm\s' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | head -n 1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image ${BASE_IMAGE} exists: skipping debootstrap"
        return
    fi
    [[ $EUID -eq 0 ]] || die "need root to run debootstrap"
    local mirror rootfs
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/mme-rootfs.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
    trap "rm -rf '${rootfs}'" EXIT
    log "debootstrap ${SUITE} from ${mirror} into ${rootfs}"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"${rootfs}.log" 2>&1 \
        || { tail -n 30 "${rootfs}.log" >&2; die "debootstrap failed (log: ${rootfs}.log)"; }
    rm -f "${rootfs}.log"
    # What a slim image leaves out: downloaded packages, apt lists, docs and man pages.
    rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/lib/apt/lists/"* \
        "${rootfs}/usr/share/doc/"* "${rootfs}/usr/share/man/"*
    tar -C "$rootfs" -c . | podman import \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "base image ${BASE_IMAGE}: $(podman image inspect "$BASE_IMAGE" --format '{{.Size}}') bytes"
}

# One value of pip's configuration: the PIP_* environment variable first, then pip config.
pip_setting() {
    local env_name="$1" key="$2" value
    value="${!env_name:-}"
    if [[ -z "$value" ]]; then
        value="$(python3 -m pip config get "global.${key}" 2>/dev/null || true)"
    fi
    echo "$value"
}

build_image() {
    [[ -f "${REPO_ROOT}/Dockerfile" ]] || die "no Dockerfile in ${REPO_ROOT}"
    local build_args=() mounts=() cert find_links extra_index dir index_root mounted=" "
    cert="$(pip_setting PIP_CERT cert)"
    if [[ -n "$cert" && -f "$cert" ]]; then
        mounts+=(-v "${cert}:/run/host-ca.crt:ro")
        build_args+=(--build-arg PIP_CERT=/run/host-ca.crt)
    else
        log "no pip CA bundle configured: pip in the build uses the image's own CAs"
    fi
    # Local wheel folders are mounted at the same paths, so the pip settings work unchanged.
    find_links="$(pip_setting PIP_FIND_LINKS find-links)"
    local kept_links=()
    for dir in $find_links; do
        dir="${dir#file://}"
        [[ -d "$dir" ]] || continue
        kept_links+=("$dir")
        if [[ "$mounted" != *" ${dir} "* ]]; then
            mounts+=(-v "${dir}:${dir}:ro")
            mounted+="${dir} "
        fi
    done
    if [[ ${#kept_links[@]} -gt 0 ]]; then
        build_args+=(--build-arg "PIP_FIND_LINKS=${kept_links[*]}")
    fi
    extra_index="$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url)"
    local kept_indexes=()
    for dir in $extra_index; do
        [[ "$dir" == file://* ]] || continue # remote indexes need no mount
        dir="${dir#file://}"
        dir="${dir%/}"
        [[ -d "$dir" ]] || continue
        # A PEP 503 folder (".../simple") links to its files relative to its parent: mount that.
        index_root="$dir"
        [[ "$(basename "$dir")" == simple ]] && index_root="$(dirname "$dir")"
        kept_indexes+=("file://${dir}")
        if [[ "$mounted" != *" ${index_root} "* ]]; then
            mounts+=(-v "${index_root}:${index_root}:ro")
            mounted+="${index_root} "
        fi
    done
    if [[ ${#kept_indexes[@]} -gt 0 ]]; then
        build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${kept_indexes[*]}")
    fi
    # The local wheels replace download.pytorch.org, which CI cannot reach.
    build_args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}" --build-arg "TORCH_INDEX_URL=")
    local previous
    previous="$(podman image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)"
    log "podman build -t ${IMAGE} ${build_args[*]} ${mounts[*]}"
    podman build "${ENGINE_FLAGS[@]}" --format docker --network host "${mounts[@]}" \
        "${build_args[@]}" \
        -t "$IMAGE" -f "${REPO_ROOT}/Dockerfile" "$REPO_ROOT"
    log "image ${IMAGE}: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
    # A rebuild leaves the old image untagged: remove it, or reruns fill the disk (~6.5 GB each).
    if [[ -n "$previous" && "$previous" != "$(podman image inspect "$IMAGE" --format '{{.Id}}')" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || log "kept the previous image ${previous:0:12} (in use)"
    fi
}

total_start=$SECONDS
timed "install podman, runc, debootstrap" install_tools
timed "base image ${BASE_IMAGE}" build_base
if [[ $BASE_ONLY -eq 0 ]]; then
    timed "image ${IMAGE}" build_image
fi
log "done in $((SECONDS - total_start)) s"
