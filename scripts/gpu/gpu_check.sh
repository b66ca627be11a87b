#!/usr/bin/env bash
# One command for a GPU machine: versions, the CUDA tests, the recurrence and layer benchmarks, a summary.
#
#   bash scripts/gpu/gpu_check.sh
#
# Needs torch with CUDA and CuPy (cupy-cuda12x or cupy-cuda13x). fairseq is needed only for the
# fairseq-train precision check: when it is missing, the wheels that scripts/gpu/device_wheels.sh builds
# in .whl/ are installed into /tmp/fairseq_site. Runs from the repository root with PYTHONPATH=. (no
# install). Logs and JSON go to $OUT when it is set, else to ./gpu_check_out. When pytest is not
# importable, wheels in $SRUPP_WHEELS (default .gpu_wheels/: pytest, pluggy, iniconfig, packaging,
# pygments as py3-none-any wheels) are put on PYTHONPATH; without them the tests are skipped with a
# loud message, and bench_recurrence.py's error column is the only kernel check.
# Takes about 3 minutes on one H100 without the precision check, which adds 1-2 minutes (the tests
# compile every kernel configuration with NVRTC, ~40 kernels; CuPy caches them on disk, so the
# benchmarks reuse them).
set -u
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-gpu_check_out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START ))s"; }

# fairseq (for the fairseq-train precision check and the GPU tests in files that import it): on the
# device it comes as the wheels that scripts/gpu/device_wheels.sh builds here (carry [".whl"])
if ! $PY -c "import fairseq" 2>/dev/null && ls .whl/fairseq_fixed-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fairseq_site \
        .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/fairseq_site"
fi
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
    print("fairseq: installed")
except ImportError:
    print("fairseq: NOT INSTALLED (the fairseq-train precision check is skipped)")
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
timeout 240 $PY scripts/bench/bench_recurrence.py --sweep --ref-repeat 2 --json "$OUT_DIR/bench_recurrence.json" \
    2>&1 | tee "$OUT_DIR/bench_recurrence.log"

echo "== bench_layer.py ($(elapsed))"
# the SRU++ layer on the reference loop takes ~0.5 s per iteration: left out here (bench_recurrence.py times
# the reference recurrence); --profile lists the SRU++ layer's CUDA kernels by GPU time
timeout 150 $PY scripts/bench/bench_layer.py --no-reference --profile --json "$OUT_DIR/bench_layer.json" 2>&1 \
    | tee "$OUT_DIR/bench_layer.log"

# ---- further checks go here (before the summary), each writing its log/JSON into $OUT_DIR ----
echo "== gpu_amp_check.py ($(elapsed))"
timeout 150 $PY scripts/gpu/gpu_amp_check.py --json "$OUT_DIR/gpu_amp_check.json" 2>&1 | tee "$OUT_DIR/gpu_amp_check.log"
echo "== fairseq_precision_check.py ($(elapsed))"
if $PY -c "import fairseq" 2>/dev/null; then
    timeout 240 $PY scripts/gpu/fairseq_precision_check.py --json "$OUT_DIR/fairseq_precision.json" \
        >"$OUT_DIR/fairseq_precision.log" 2>&1
    tail -n 14 "$OUT_DIR/fairseq_precision.log"
else
    echo "!!!!!! NOT RUN: fairseq is not importable and .whl/ holds no fairseq wheel (scripts/gpu/device_wheels.sh)"
fi
# ---- end of further checks ----

echo "== summary ($(elapsed))"
TEST_STATUS="$TEST_STATUS" OUT_DIR="$OUT_DIR" $PY - <<'EOF' 2>&1 | tee "$OUT_DIR/summary.txt"
# Every section is independent: a missing or unexpected JSON file prints a line and the rest goes on.
import json, math, os
out = os.environ["OUT_DIR"]
print("tests:", os.environ.get("TEST_STATUS", "?"))


def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        print(f"{name}: no results ({error})")
        return None


def pct(v):
    return f"{100 * v:4.0f}%" if isinstance(v, (int, float)) and not math.isnan(v) else "    -"


NAN = float("nan")
rec = load("bench_recurrence.json")
if rec:
    try:
        host = rec.get("host_us", {})
        print(f"{rec.get('device')} | copy {rec.get('copy_gbs', NAN):.0f} GB/s | host per call: forward "
              f"{host.get('forward_us', rec.get('host_overhead_us', NAN)):.0f} us, launcher "
              f"{host.get('launcher_forward_us', NAN):.0f} us, fwd+bwd {host.get('forward_backward_us', NAN):.0f} us")
        targets = {(1024, 8, 3072): 0.70}
        by_shape = {}
        for r in rec.get("rows", []):
            by_shape.setdefault((r["T"], r["B"], r["d"]), {})[r["dtype"]] = r
        print(f"{'T,B,d':>15} | {'fp32 fwd':>8} {'f+b ms':>7} {'%copy':>5} {'target':>9} | {'bf16/fp32':>9} "
              f"{'fp16/fp32':>9} {'1col bf16':>9} | {'P x STAGES fwd/bwd fp32; bf16':>29} | {'speedup':>7} | "
              f"{'max rel err':>11}")
        for shape, rows in by_shape.items():
            f32 = rows.get("float32")
            if not f32:
                continue

            def ratio(name):
                return f"{rows[name]['fwd_bwd_ms'] / f32['fwd_bwd_ms']:9.2f}" if name in rows else f"{'-':>9}"

            def conf(r):
                return "/".join("x".join(map(str, r.get("configs", {}).get(k, []))) for k in ("forward", "backward"))

            target = targets.get(shape, 0.60)
            ok = "ok" if f32["fwd_bwd_copy_share"] >= target else "BELOW"
            configs = conf(f32) + ("; " + conf(rows["bfloat16"]) if "bfloat16" in rows else "")
            speedup = f"{f32['speedup']:6.0f}x" if "speedup" in f32 else f"{'-':>7}"
            err = max(r.get("max_rel_err", 0.0) for r in rows.values())
            print(f"{','.join(map(str, shape)):>15} | {pct(f32['fwd_copy_share']):>8} {f32['fwd_bwd_ms']:7.3f} "
                  f"{pct(f32['fwd_bwd_copy_share'])} {pct(target)} {ok:>3} | {ratio('bfloat16')} {ratio('float16')} "
                  f"{ratio('bfloat16/1col')} | "
                  f"{configs:>29} | {speedup} | {err:11.1e}")
        sweep = rec.get("config_sweep") or []
        if sweep:
            print("pipeline sweep, % of copy bandwidth: launcher's choice -> best (P x STAGES)")
            for r in sweep:
                cells = []
                for direction in ("forward", "backward"):
                    values = {k: v for k, v in r.get(direction, {}).items() if not math.isnan(v)}
                    chosen = "x".join(map(str, r.get("chosen", {}).get(direction, [])))
                    best = max(values, key=values.get) if values else "-"
                    cells.append(f"{direction[0]}wd {chosen:>4} {pct(values.get(chosen, NAN))} -> "
                                 f"{best:>4} {pct(values.get(best, NAN))}")
                cells.append(f"max carveout fwd {pct(r.get('forward_max_carveout', NAN))} "
                             f"bwd {pct(r.get('backward_max_carveout', NAN))}")
                print(f"{r['T']:>5},{r['B']:>3},{r['d']:>5} {r['dtype']:>8} | " + " | ".join(cells))
    except Exception as error:  # keep the rest of the summary
        print("bench_recurrence: summary failed:", repr(error))

layer = load("bench_layer.json")
if layer:
    try:
        for r in layer.get("rows", []):
            print(f"layer {r['layer']:26s} {r['dtype']:>15} {r['params'] / 1e6:6.2f}M {r['fwd_bwd_ms']:8.2f} ms GPU "
                  f"{r.get('host_ms', NAN):8.2f} ms host")
        prof = layer.get("profile")
        if prof:
            print(f"SRU++ layer kernels ({prof['dtype']}): {prof['launches']:.0f} launches, {prof['kernel_ms']:.2f} ms "
                  "of kernel time per iteration; top 6:")
            for k in prof["kernels"][:6]:
                print(f"    {k['us']:8.1f} us {k['calls']:4.1f}x  {k['name'][:90]}")
    except Exception as error:
        print("bench_layer: summary failed:", repr(error))

prec = load("fairseq_precision.json")
if prec:
    try:
        print(f"fairseq-train precision ({prec['updates']} updates, tolerance {prec['tolerance']} nats):")
        for r in prec["rows"]:
            print(f"    {r['backend']:>4} {r['precision']:>22}: final {r['final_loss']:.3f} gap {r['gap']:.4f} "
                  f"skipped {r['skipped']} c {r['state_dtype']} {'ok' if r['ok'] else 'FAIL'}")
    except Exception as error:
        print("fairseq_precision: summary failed:", repr(error))

known = {"bench_recurrence.json", "bench_layer.json", "fairseq_precision.json"}
others = sorted(n for n in os.listdir(out) if n.endswith(".json") and n not in known)
if others:
    print("other results in", out + ":", ", ".join(others))
EOF
echo "done in $(elapsed); logs and JSON in $OUT_DIR"
