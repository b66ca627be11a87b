#!/usr/bin/env bash
# Install fairseq-srupp and what it needs into a virtual environment.
#
#   usage: bash scripts/setup_env.sh     (uses $VIRTUAL_ENV if one is active, else ./.venv)
#          source scripts/setup_env.sh   (the same, and leaves $PY set to that python)
#   env:   SRUPP_VENV=DIR   where to create the environment when none is active
#          SRUPP_EXTRAS=test   pip extras to install with the package ("" for none)
#
# torch: an importable torch (CPU or CUDA build) is kept; only where none is importable is
# torch==2.13.0 installed. fairseq-fixed's sdist wants torch at build time, so it is built
# without build isolation (a plain pip install would pull a second torch into pip's build
# environment). A second run finds everything installed and takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

EXTRAS="${SRUPP_EXTRAS-test}"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  VENV="${SRUPP_VENV:-$ROOT/.venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] no torch found: installing torch==2.13.0"
  pip_install torch==2.13.0
fi
if ! "$PY" -c "import fairseq" 2>/dev/null; then
  echo "[setup] installing fairseq (a few minutes the first time; pip caches the wheel)"
  pip_install cython numpy setuptools wheel
  if "$PY" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
    pip_install --no-build-isolation fairseq-fixed==0.12.3.1
  else
    pip_install --no-build-isolation fairseq
  fi
fi
spec="$ROOT"
[ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
echo "[setup] installing fairseq-srupp (editable)${EXTRAS:+ with extras [$EXTRAS]}"
pip_install --no-build-isolation -e "$spec"
echo "[setup] ready: $PY ($("$PY" -c 'import torch, fairseq; print("torch", torch.__version__, "| fairseq", fairseq.__version__)'))"
