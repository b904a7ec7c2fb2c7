#!/usr/bin/env bash
# `mme teardown` for shell users; every option is mme's (see `scripts/teardown.sh --help`).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/mme.sh" teardown "$@"
