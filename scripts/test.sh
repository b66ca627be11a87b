#!/usr/bin/env bash
# Install everything a fresh machine lacks (scripts/setup_env.sh), then run the test suite.
#   usage: bash scripts/test.sh [pytest arguments]
# GPU tests (marker `cuda`) skip without a GPU; scripts/gpu/gpu_check.sh runs them on one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
