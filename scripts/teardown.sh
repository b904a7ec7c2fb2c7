#!/usr/bin/env bash
# `mme teardown` for shell users; every option is mme's (see `scripts/teardown.sh --help`).
set -euo pipefail
exec mme teardown "$@"
