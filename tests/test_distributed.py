"""Data-parallel training of srupp_stream_lm on CPU: 2 ranks x B streams == 1 process x 2B streams.

The ranks are hand-launched fairseq-train processes (gloo, --ddp-backend legacy_ddp,
--distributed-no-spawn): fairseq's own spawning and torchrun need GPUs (FAIRSEQ_NOTES.md 5).
With R = 2B rows, rank r owns rows [rB, (r + 1)B) of every batch, exactly the rows of batch i of
the single process; legacy_ddp sums the ranks' gradients and fairseq divides by the global
number of target tokens, so both runs make the same updates up to float32 summation order.
"""
import json
import math
import os
import socket
import subprocess
import sys

import torch

from conftest import USER_DIR
from test_resume import TINY, one_thread, recorded_train_steps, train_in_process, updates_per_epoch
from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMConfig, SRUppStreamLMTask

B, SEGMENT = 4, 128  # streams per rank, tokens per segment
# A rank: fairseq-train, after a test-only hook that prints the rows each StreamBatches (one per
# split and epoch) gives this process.
RANK = r"""
import sys
from fairseq_cli.train import cli_main  # first: it sets up fairseq's logging
from fairseq_srupp.tasks import stream_dataset

init = stream_dataset.StreamBatches.__init__

def traced(self, stream, *args, **kwargs):
    init(self, stream, *args, **kwargs)
    print(f"ROWS {self.first_row} {self.first_row + self.batch_size} {self.num_rows} {len(stream)}",
          file=sys.stderr, flush=True)

stream_dataset.StreamBatches.__init__ = traced
sys.argv[0] = "fairseq-train"
cli_main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_args(data, save_dir, batch_size, max_update):
    return [str(a) for a in (
        data, "--user-dir", USER_DIR, "--task", "srupp_stream_lm", *TINY, "--dropout", "0",
        "--attention-dropout", "0", "--embed-dropout", "0", "--tokens-per-sample", SEGMENT,
        "--batch-size", batch_size, "--optimizer", "adam", "--lr", "0.01",
        "--max-update", max_update, "--cpu", "--num-workers", "0", "--seed", "1",
        "--ddp-backend", "legacy_ddp", "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--disable-validation", "--log-format", "json", "--log-interval", "1")]


def run_two_ranks(args, timeout=300):
    """Output (stdout + stderr) of each rank of a 2-process gloo run of fairseq-train `args`."""
    port = free_port()
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(
        [sys.executable, "-c", RANK, *args, "--distributed-world-size", "2",
         "--distributed-rank", str(rank), "--distributed-no-spawn", "--distributed-backend",
         "gloo", "--distributed-init-method", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for rank in range(2)]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:  # one rank failing leaves the other waiting for it
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed ({p.returncode}):\n{out[-4000:]}"
    return outputs


def test_two_ranks_match_one_process_with_the_global_batch(char_data, tmp_path):
    n = updates_per_epoch(char_data, B, SEGMENT, world_size=2)
    updates = n + 2  # crosses an epoch boundary (both runs restart their streams there)
    outputs = run_two_ranks(common_args(char_data, tmp_path / "ddp", B, updates))
    with one_thread(), recorded_train_steps() as steps:
        train_in_process(*common_args(char_data, tmp_path / "single", 2 * B, updates))

    # each rank reads only its own rows: rank r gets rows [rB, (r + 1)B) of 2B, every epoch
    for rank, out in enumerate(outputs):
        rows = {tuple(int(v) for v in line.split()[1:4])
                for line in out.splitlines() if line.startswith("ROWS")}
        assert rows == {(rank * B, (rank + 1) * B, 2 * B)}, (rank, rows)

    logged = [json.loads(line[line.index("{"):]) for line in outputs[0].splitlines()
              if "| train_inner |" in line]
    assert [int(r["num_updates"]) for r in logged] == list(range(1, updates + 1))
    assert all(int(r["bsz"]) == 2 * B for r in logged)  # global number of streams
    exact = [s.loss / math.log(2) for s in steps]  # fairseq logs base 2, 3 decimals
    assert len(exact) == updates
    for record, value in zip(logged, exact):
        assert abs(float(record["loss"]) - value) <= 5e-4 + 1e-6, (record, value)

    ddp, single = (torch.load(tmp_path / d / "checkpoint_last.pt")["model"]
                   for d in ("ddp", "single"))
    gaps = {name: (ddp[name] - value).abs().max().item() for name, value in single.items()}
    print(f"{updates} updates: max |parameter gap| {max(gaps.values()):.1e}")
    for name, value in single.items():  # float32 summation order only
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_shards_are_the_rows_of_the_global_batch(char_data):
    """Batch i of shard r (B streams) is rows [rB, (r + 1)B) of batch i of one shard of 2B."""
    task = SRUppStreamLMTask.setup_task(SRUppStreamLMConfig(data=str(char_data),
                                                            tokens_per_sample=SEGMENT))
    task.load_dataset("train")

    def batches(batch_size, num_shards, shard_id):
        itr = task.get_batch_iterator(task.dataset("train"), max_sentences=batch_size,
                                      num_shards=num_shards, shard_id=shard_id)
        return list(itr.next_epoch_itr(shuffle=False))

    whole = batches(2 * B, 1, 0)
    shards = [batches(B, 2, r) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole)
    for i, batch in enumerate(whole):
        for r, shard in enumerate(shards):
            part = shard[i]
            rows = slice(r * B, (r + 1) * B)
            assert part["net_input"]["segment_index"] == i
            assert torch.equal(part["net_input"]["src_tokens"],
                               batch["net_input"]["src_tokens"][rows])
            assert torch.equal(part["target"], batch["target"][rows])
            assert torch.equal(part["id"], batch["id"][rows])
        assert shards[0][i]["ntokens"] + shards[1][i]["ntokens"] == batch["ntokens"]
