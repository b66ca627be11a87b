#!/usr/bin/env bash
# One command for a GPU machine: versions, the CUDA tests, the recurrence and layer benchmarks, a summary.
#
#   bash scripts/gpu_check.sh
#
# Needs torch with CUDA and CuPy (cupy-cuda12x or cupy-cuda13x); fairseq is not needed. Runs from the
# repository root with PYTHONPATH=. (no install). Logs and JSON go to $OUT when it is set, else to
# ./gpu_check_out. When pytest is not importable, wheels in $SRUPP_WHEELS (default .gpu_wheels/: pytest,
# pluggy, iniconfig, packaging, pygments as py3-none-any wheels) are put on PYTHONPATH; without them the
# tests are skipped with a loud message, and bench_recurrence.py's error column is the only kernel check.
# Takes about 3 minutes on one H100 (the first run compiles the kernels with NVRTC; CuPy caches them).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu_check_out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START ))s"; }

echo "== versions" | tee "$OUT_DIR/versions.txt"
$PY - <<'EOF' 2>&1 | tee -a "$OUT_DIR/versions.txt"
import platform, sys
import torch
print(f"python {platform.python_version()} | torch {torch.__version__} (CUDA {torch.version.cuda})")
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
try:
    import cupy
    from cupy.cuda import nvrtc
    print(f"cupy {cupy.__version__} | NVRTC {nvrtc.getVersion()} | driver {cupy.cuda.runtime.driverGetVersion()}")
except Exception as error:
    print("cupy: NOT USABLE:", error)
try:
    import pytest
    print("pytest", pytest.__version__)
except ImportError:
    print("pytest: not installed")
try:
    import fairseq  # noqa: F401
    print("fairseq: installed (not needed)")
except ImportError:
    print("fairseq: not installed (not needed)")
EOF
nvidia-smi -L 2>/dev/null | tee -a "$OUT_DIR/versions.txt"

echo "== CUDA tests ($(elapsed))"
if ! $PY -c "import pytest" 2>/dev/null; then
    WHEELS="${SRUPP_WHEELS:-.gpu_wheels}"
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "pytest is not installed; using the wheels in $WHEELS"
        export PYTHONPATH="$PYTHONPATH:$(ls "$WHEELS"/*.whl | tr '\n' ':')"
    fi
fi
TEST_STATUS="not run"
if $PY -c "import pytest" 2>/dev/null; then
    # every test file with the cuda marker; files that need fairseq fail to collect here and are reported
    # as collection errors while the rest still runs
    GPU_TESTS=$(grep -l "pytest.mark.cuda" tests/test_*.py)
    timeout 300 $PY -m pytest -m cuda -q -rfEsP -p no:cacheprovider --continue-on-collection-errors \
        --junitxml="$OUT_DIR/pytest.xml" $GPU_TESTS >"$OUT_DIR/pytest.log" 2>&1
    TEST_RC=$?
    grep -E "^(FAILED|ERROR)" "$OUT_DIR/pytest.log" | head -40
    TEST_STATUS="$(tail -n 1 "$OUT_DIR/pytest.log") (exit $TEST_RC; full log with every printed error: pytest.log)"
    echo "$TEST_STATUS"
else
    TEST_STATUS="NOT RUN: pytest is not installed on this machine and no wheels were found"
    echo "!!!!!! $TEST_STATUS"
fi

echo "== bench_recurrence.py ($(elapsed))"
timeout 240 $PY scripts/bench_recurrence.py --sweep-depth --ref-repeat 2 --json "$OUT_DIR/bench_recurrence.json" \
    2>&1 | tee "$OUT_DIR/bench_recurrence.log"

echo "== bench_layer.py ($(elapsed))"
timeout 150 $PY scripts/bench_layer.py --json "$OUT_DIR/bench_layer.json" 2>&1 | tee "$OUT_DIR/bench_layer.log"

echo "== summary ($(elapsed))"
TEST_STATUS="$TEST_STATUS" OUT_DIR="$OUT_DIR" $PY - <<'EOF' 2>&1 | tee "$OUT_DIR/summary.txt"
import json, os
out = os.environ["OUT_DIR"]
print("tests:", os.environ["TEST_STATUS"])
try:
    rec = json.load(open(os.path.join(out, "bench_recurrence.json")))
except (OSError, ValueError) as error:
    rec = None
    print("bench_recurrence: no results", error)
if rec:
    print(f"{rec['device']} | copy {rec['copy_gbs']:.0f} GB/s | host {rec['host_overhead_us']:.0f} us/call | ring depths fwd {rec['forward_depth']} bwd {rec['backward_depth']}")
    targets = {(1024, 8, 3072): 0.70}
    by_shape = {}
    for r in rec["rows"]:
        by_shape.setdefault((r["T"], r["B"], r["d"]), {})[r["dtype"]] = r
    print(f"{'T,B,d':>15} | {'fp32 f+b ms':>11} {'%copy':>6} {'target':>6} | {'bf16/fp32':>9} {'fp16/fp32':>9} | {'speedup fp32':>12} | {'max rel err':>11}")
    for shape, rows in by_shape.items():
        f32 = rows.get("float32")
        if not f32:
            continue
        ratio = lambda name: f"{rows[name]['fwd_bwd_ms'] / f32['fwd_bwd_ms']:9.2f}" if name in rows else f"{'-':>9}"
        target = targets.get(shape, 0.60)
        ok = "ok" if f32["fwd_bwd_copy_share"] >= target else "BELOW"
        speedup = f"{f32['speedup']:11.0f}x" if "speedup" in f32 else f"{'-':>12}"
        err = max(r.get("max_rel_err", 0.0) for r in rows.values())
        print(f"{','.join(map(str, shape)):>15} | {f32['fwd_bwd_ms']:11.3f} {100 * f32['fwd_bwd_copy_share']:5.0f}% "
              f"{int(100 * target):4d}%{ok:>3} | {ratio('bfloat16')} {ratio('float16')} | {speedup} | {err:11.1e}")
try:
    layer = json.load(open(os.path.join(out, "bench_layer.json")))
    for r in layer["rows"]:
        print(f"layer {r['layer']:26s} {r['dtype']:>15} {r['params'] / 1e6:6.2f}M {r['fwd_bwd_ms']:8.2f} ms")
except (OSError, ValueError) as error:
    print("bench_layer: no results", error)
EOF
echo "done in $(elapsed); logs and JSON in $OUT_DIR"
