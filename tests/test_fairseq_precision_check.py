"""scripts/gpu/fairseq_precision_check.py on CPU: the plumbing its GPU run relies on (fairseq-train in
process in float32 and with --memory-efficient-fp16, every step recorded, the carried state's dtype read
back, the table and the JSON)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu" / "fairseq_precision_check.py"


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, timeout=600)


@pytest.mark.e2e
def test_cpu_runs_record_steps_and_state(tmp_path):
    out = tmp_path / "precision.json"
    proc = run("--device", "cpu", "--updates", "4", "--work", tmp_path / "work", "--json", out)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = {r["precision"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp32", "memory-efficient-fp16"}
    for row in rows.values():
        assert row["backend"] == "ref" and row["steps"] == 4 and row["finite"] and row["ok"], row
        assert row["state_dtype"] == "float32"  # the carried c, read back from the decoder
        assert row["final_loss"] < row["first_loss"]  # 4 Adam steps on the Markov stream
    assert rows["fp32"]["gap"] == 0.0
    assert 0.0 < rows["memory-efficient-fp16"]["gap"] < 0.05  # float16 parameters, same data
    assert "ref  memory-efficient-fp16" in proc.stdout


@pytest.mark.parametrize("flags, message", [
    (["--device", "cpu", "--precisions", "amp"], "'amp' is not one of fp32, amp"),
    (["--device", "cpu", "--backends", "cuda"], "'cuda' is not one of cuda (GPU only), ref"),
    (["--device", "cpu", "--precisions", "fp64"], "(on CPU: fp32, memory-efficient-fp16)"),
])
def test_bad_options_are_named(flags, message):
    proc = run(*flags)
    assert proc.returncode == 2 and message in proc.stdout, proc.stdout
