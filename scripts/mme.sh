#!/usr/bin/env bash
# Run `mme ARGS...` without the project's venv on PATH: scripts/mme.sh deploy ..., teardown ...
# Runs $MME if set, else this checkout's .venv/bin/mme (`make setup`), else `mme` on PATH.
set -euo pipefail
wanted="${MME:-$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/mme}"
if [[ -x $wanted ]]; then
  mme="$wanted"
elif ! mme="$(command -v mme)"; then
  echo "mme not found (not at ${wanted}, not on PATH): run \`make setup\` in the checkout, or set MME" >&2
  exit 127
fi
exec "$mme" "$@"
