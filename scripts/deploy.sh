#!/usr/bin/env bash
# `mme deploy` for shell users; every option is mme's (see `scripts/deploy.sh --help`).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/mme.sh" deploy "$@"
