#!/usr/bin/env bash
# Build the container image and push it to Amazon ECR.
#
# Usage: scripts/build_and_push.sh [--region REGION] [--repository NAME] [--tag TAG]
#                                  [-- EXTRA BUILD ARGS...]
#
#   --region      AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, or `aws configure`)
#   --repository  ECR repository, created if missing (default: sagemaker-mme-pytorch)
#   --tag         image tag (default: latest)
#   -h, --help    show this help
#
# Anything after `--` goes to the build, e.g. `-- --build-arg TORCH_INDEX_URL=`.
# The engine is $CONTAINER_ENGINE (default: docker; podman works too).
# Needs the AWS CLI and credentials allowed to call sts:GetCallerIdentity and ECR.
# Prints the pushed image URI on the last line (for CreateModel's PrimaryContainer.Image).
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    printf 'build_and_push.sh: %s\n' "$*" >&2
    exit 1
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE="${CONTAINER_ENGINE:-docker}"
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
REPOSITORY="sagemaker-mme-pytorch"
TAG="latest"
BUILD_EXTRA=()

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (try --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --region) need_value "$@"; REGION="$2"; shift 2 ;;
        --repository) need_value "$@"; REPOSITORY="$2"; shift 2 ;;
        --tag) need_value "$@"; TAG="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; BUILD_EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

[[ "$REPOSITORY" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] \
    || die "'$REPOSITORY' is not a valid ECR repository name (lowercase letters, digits, . _ - /)"
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$TAG' is not a valid image tag"

command -v aws >/dev/null 2>&1 \
    || die "the AWS CLI ('aws') is not installed or not on PATH: install it (https://aws.amazon.com/cli/) and run 'aws configure'"
command -v "$ENGINE" >/dev/null 2>&1 \
    || die "container engine '$ENGINE' not found: install Docker, or set CONTAINER_ENGINE (e.g. podman)"

if [[ -z "$REGION" ]]; then
    REGION="$(aws configure get region 2>/dev/null || true)"
fi
[[ -n "$REGION" ]] || die "no AWS region: pass --region, or set AWS_REGION, or run 'aws configure'"

ERR_FILE="$(mktemp)"
trap 'rm -f "$ERR_FILE"' EXIT
if ! ACCOUNT="$(aws sts get-caller-identity --region "$REGION" --query Account --output text 2>"$ERR_FILE")"; then
    die "cannot get the AWS account: no valid AWS credentials? (aws sts get-caller-identity: $(tr '\n' ' ' <"$ERR_FILE"))"
fi
[[ "$ACCOUNT" =~ ^[0-9]{12}$ ]] || die "unexpected account id from aws sts get-caller-identity: '$ACCOUNT'"

DOMAIN="amazonaws.com"
[[ "$REGION" == cn-* ]] && DOMAIN="amazonaws.com.cn"
REGISTRY="${ACCOUNT}.dkr.ecr.${REGION}.${DOMAIN}"
IMAGE_URI="${REGISTRY}/${REPOSITORY}:${TAG}"

echo "==> ECR repository ${REPOSITORY} in ${REGION} (account ${ACCOUNT})"
if ! aws ecr describe-repositories --region "$REGION" --repository-names "$REPOSITORY" \
    >/dev/null 2>&1; then
    echo "    creating it"
    aws ecr create-repository --region "$REGION" --repository-name "$REPOSITORY" \
        --image-scanning-configuration scanOnPush=true >/dev/null \
        || die "cannot create ECR repository '$REPOSITORY' in $REGION"
fi

echo "==> logging ${ENGINE} in to ${REGISTRY}"
aws ecr get-login-password --region "$REGION" \
    | "$ENGINE" login --username AWS --password-stdin "$REGISTRY" \
    || die "'$ENGINE login' to $REGISTRY failed"

echo "==> building ${REPOSITORY}:${TAG}"
"$ENGINE" build -t "${REPOSITORY}:${TAG}" "${BUILD_EXTRA[@]}" "$REPO_ROOT"
"$ENGINE" tag "${REPOSITORY}:${TAG}" "$IMAGE_URI"

echo "==> pushing ${IMAGE_URI}"
"$ENGINE" push "$IMAGE_URI"
echo "$IMAGE_URI"
