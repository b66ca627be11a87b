"""How a recipe's streams are spread over GPUs and nodes, read from the environment.

The task cuts the training split into (streams per GPU) x (GPUs) contiguous streams, so with G
GPUs each GPU gets (the authors' streams) / G of them with --update-freq 1: the authors' streams,
segments and data order, whatever G. UPDATE_FREQ=k gives each GPU k times fewer streams and
accumulates k batches: not the authors' training (docs/reproducing.md, "Fewer than 8 GPUs").

Environment: NGPUS (GPUs per node; default: all that torch sees, 8 in a dry run), NNODES (default
1; with more, also NODE_RANK, MASTER_ADDR, MASTER_PORT (29500) and LAUNCHER: torchrun | fairseq),
UPDATE_FREQ (default 1), BATCH_SIZE (streams per GPU; default: streams / (GPUs x UPDATE_FREQ)).
"""
import subprocess
from dataclasses import dataclass
from typing import Callable, List, Mapping


class RecipeError(ValueError):
    """A problem with the recipe's inputs; the message names the argument or variable to fix."""


@dataclass
class Parallel:
    world: int  # GPUs over all nodes
    batch: int  # --batch-size: streams per GPU
    valid_batch: int  # --batch-size-valid
    update_freq: int
    launch: List[str]  # the command prefix that runs fairseq_cli.train
    dist: List[str]  # the --distributed-* options
    summary: str  # one line for the log


def read_uint(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if value == "":
        return default
    if not value.isdigit():
        raise RecipeError(f"{name} must be a non-negative integer, got '{value}'")
    return int(value)


def torch_gpu_count(python: str) -> int:
    """The number of CUDA GPUs that `python` (the training interpreter) sees."""
    out = subprocess.run([python, "-c", "import torch; print(torch.cuda.device_count())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def gpus_per_node(env: Mapping[str, str], dry_run: bool,
                  count: Callable[[str], int] = torch_gpu_count) -> int:
    if env.get("NGPUS", "") != "":
        return read_uint(env, "NGPUS", 0)
    return 8 if dry_run else count(env.get("PYTHON", "") or "python3")


def plan_parallel(global_streams: int, valid_streams: int, env: Mapping[str, str],
                  dry_run: bool, log: Callable[[str], None],
                  count: Callable[[str], int] = torch_gpu_count) -> Parallel:
    """Batch sizes and the launcher for `global_streams` streams per update (the authors')."""
    python = env.get("PYTHON", "") or "python3"
    gpus = gpus_per_node(env, dry_run, count)
    if gpus < 1:
        raise RecipeError("no CUDA GPU visible: these recipes train on GPUs (set NGPUS, or DRY_RUN=1 "
                          "to print the command)")
    nnodes = read_uint(env, "NNODES", 1)
    if nnodes < 1:
        raise RecipeError("NNODES must be >= 1")
    world = gpus * nnodes
    update_freq = read_uint(env, "UPDATE_FREQ", 1)
    if update_freq < 1:
        raise RecipeError("UPDATE_FREQ must be >= 1")
    if env.get("BATCH_SIZE", "") != "":
        batch = read_uint(env, "BATCH_SIZE", 0)
    else:
        if global_streams % (world * update_freq):
            raise RecipeError(f"the authors' {global_streams} streams do not split evenly over {world} "
                              f"GPUs x UPDATE_FREQ={update_freq}; set BATCH_SIZE (streams per GPU) "
                              f"yourself")
        batch = global_streams // (world * update_freq)
    if batch < 1:
        raise RecipeError("BATCH_SIZE must be >= 1")
    if batch * world * update_freq != global_streams:
        log(f"warning: {batch} streams x {world} GPUs x update-freq {update_freq} != the authors' "
            f"{global_streams} streams per update")
    valid_batch = max(valid_streams // world, 1)
    dist = ["--distributed-world-size", str(world)]
    launch = [python, "-m", "fairseq_cli.train"]
    if nnodes > 1:
        master = env.get("MASTER_ADDR", "")
        if not master:
            raise RecipeError(f"NNODES={nnodes} needs MASTER_ADDR (the address of node 0)")
        if env.get("NODE_RANK", "") == "":
            raise RecipeError(f"NNODES={nnodes} needs NODE_RANK (0..{nnodes - 1} on each node)")
        rank = read_uint(env, "NODE_RANK", 0)
        if rank >= nnodes:
            raise RecipeError(f"NODE_RANK must be below NNODES={nnodes}")
        port = env.get("MASTER_PORT", "") or "29500"
        launcher = env.get("LAUNCHER", "") or "torchrun"
        if launcher == "torchrun":
            launch = [python, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
                      "--nproc_per_node", str(gpus), "--node_rank", str(rank),
                      "--master_addr", master, "--master_port", port, "-m", "fairseq_cli.train"]
        elif launcher == "fairseq":
            dist += ["--distributed-init-method", f"tcp://{master}:{port}",
                     "--distributed-rank", str(rank * gpus)]
        else:
            raise RecipeError(f"LAUNCHER must be torchrun or fairseq, got '{launcher}'")
    summary = (f"{world} GPU(s) ({nnodes} node(s) x {gpus}): --batch-size {batch} --update-freq "
               f"{update_freq} ({batch * world * update_freq} streams per update; the authors: "
               f"{global_streams}), --batch-size-valid {valid_batch}")
    return Parallel(world, batch, valid_batch, update_freq, launch, dist, summary)
