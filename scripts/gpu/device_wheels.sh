#!/usr/bin/env bash
# Fetch, on this machine, the Python 3.12 wheels that fairseq needs on the GPU device, into .whl/.
#
#   bash scripts/gpu/device_wheels.sh          # then: run scripts/gpu/gpu_check.sh there with carry [".whl"]
#
# The device (Python 3.12, torch 2.11, CuPy, no internet) lacks fairseq and five of its needs:
# hydra-core, omegaconf, antlr4-python3-runtime, bitarray, cffi (+ pycparser). PyPI has cp312 manylinux
# wheels of fairseq-fixed, bitarray and cffi; antlr4-python3-runtime 4.9.3 (hydra-core's pin) is an
# sdist only, built here into a pure-Python wheel. About 21 MB; needs pip and PyPI, not Python 3.12.
# gpu_check.sh installs the wheels into /tmp/fairseq_site there when fairseq is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DEST=.whl
grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
mkdir -p "$DEST"
rm -f "$DEST"/*.whl

quiet() { grep -v "^WARNING: Location" || true; }
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" fairseq-fixed==0.12.3.1 hydra-core==1.3.2 omegaconf==2.3.0 bitarray cffi \
    pycparser 2>&1 | quiet
"$PY" -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3 2>&1 | quiet

"$PY" - "$DEST" <<'EOF'
import pathlib, sys, zipfile
dest = pathlib.Path(sys.argv[1])
wheels = sorted(p.name for p in dest.glob("*.whl"))
need = ["fairseq_fixed-", "hydra_core-", "omegaconf-", "antlr4_python3_runtime-", "bitarray-", "cffi-",
        "pycparser-"]
missing = [n for n in need if not any(w.startswith(n) for w in wheels)]
if missing:
    sys.exit(f"device_wheels.sh: no wheel for {missing} in {dest}")
fairseq = next(dest.glob("fairseq_fixed-*.whl"))
built = [n for n in zipfile.ZipFile(fairseq).namelist() if n.endswith(".so")]
for ext in ("fairseq/data/data_utils_fast", "fairseq/data/token_block_utils_fast"):
    if not any(b.startswith(ext) for b in built):
        sys.exit(f"device_wheels.sh: {fairseq.name} lacks {ext}")
print("\n".join(wheels))
EOF
du -ch "$DEST"/*.whl | tail -1
