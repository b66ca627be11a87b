"""Stopping and resuming fairseq-train with the srupp_stream_lm task (docs/robustness.md).

Checkpoints hold no recurrent state, so a resumed run restarts its streams from zero state at the
resumed position. At an epoch boundary the uninterrupted run starts from zero state too, and the
resume is exact (dropout included: fairseq reseeds every update with --seed + update number).
Mid-epoch, the first resumed segment differs; the runs stay close and meet again at the next
epoch's reset. The runs are in-process (fairseq_cli.train.main), with every training step's exact
loss recorded through the task.
"""
import contextlib
import math
from typing import NamedTuple

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils
from fairseq_cli import train

from conftest import USER_DIR
from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMConfig, SRUppStreamLMTask, _unwrap
from fairseq_srupp.tasks.stream_dataset import StreamBatches

TINY = ("--arch", "srupp_lm", "--hidden-dim", "32", "--proj-dim", "8", "--num-layers", "2",
        "--mem-len", "16")
BATCH, SEGMENT = 8, 128  # streams, tokens per segment


def train_in_process(*argv) -> None:
    """fairseq-train with these arguments, in this process."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(a) for a in argv])
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), train.main)


class Step(NamedTuple):
    update: int  # fairseq's update number (0-based)
    segment: int  # segment_index: the position in the streams
    loss: float  # per target token, in nats
    zero_start: bool  # the segment started from zero state


@contextlib.contextmanager
def recorded_train_steps():
    """Yields a list that gets a Step for every training step of srupp_stream_lm."""
    steps = []
    train_step = SRUppStreamLMTask.train_step

    def recording(self, sample, model, criterion, optimizer, update_num, *args, **kwargs):
        loss, sample_size, logging_output = train_step(self, sample, model, criterion, optimizer,
                                                       update_num, *args, **kwargs)
        slot = _unwrap(model).decoder.stream_slots["train"]
        steps.append(Step(update_num, sample["net_input"]["segment_index"],
                          loss.item() / sample_size, slot.state_in is None))
        return loss, sample_size, logging_output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SRUppStreamLMTask, "train_step", recording)
        yield steps


@contextlib.contextmanager
def one_thread():
    """One intra-op thread, as conftest's per-test fixture sets, for module-scoped fixtures (they
    run before it); tiny tensors on a busy machine are many times slower with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def updates_per_epoch(data, batch_size, segment_len, world_size=1) -> int:
    """Training batches per epoch of srupp_stream_lm (one update each with --update-freq 1)."""
    task = SRUppStreamLMTask.setup_task(
        SRUppStreamLMConfig(data=str(data), tokens_per_sample=segment_len))
    task.load_dataset("train")
    dictionary = task.dictionary
    return len(StreamBatches(task.dataset("train"), batch_size, segment_len, dictionary.pad(),
                             dictionary.eos(), world_size, 0))


def train_args(data, save_dir, max_update):
    return (data, "--user-dir", USER_DIR, "--task", "srupp_stream_lm", *TINY,
            "--dropout", "0.1", "--tokens-per-sample", SEGMENT, "--batch-size", BATCH,
            "--optimizer", "adam", "--lr", "0.01", "--max-update", max_update, "--cpu",
            "--num-workers", "0", "--seed", "3", "--save-dir", save_dir, "--no-epoch-checkpoints",
            "--log-format", "simple", "--log-interval", "100")


@pytest.fixture(scope="module")
def runs(char_data, tmp_path_factory):
    """Steps of: two epochs in one go; one epoch, then resumed to two; a bit over half an epoch,
    then resumed to two. Each run's checkpoint folder comes along, and the mid-epoch checkpoint."""
    n = updates_per_epoch(char_data, BATCH, SEGMENT)
    assert n >= 4
    mid = n // 2 + 1
    out = {"n": n, "mid_update": mid}
    with one_thread():
        for name, stops in (("whole", [2 * n]), ("epoch", [n, 2 * n]), ("mid", [mid, 2 * n])):
            save = tmp_path_factory.mktemp(name)
            with recorded_train_steps() as steps:
                for stop in stops:
                    train_in_process(*train_args(char_data, save, stop))
                    if stop == mid:
                        out["mid_checkpoint"] = torch.load(save / "checkpoint_last.pt")
            out[name] = (steps, save)
    return out


def test_resume_at_an_epoch_boundary_is_exact(runs):
    n = runs["n"]
    whole, whole_dir = runs["whole"]
    resumed, resumed_dir = runs["epoch"]
    assert [s.update for s in whole] == [s.update for s in resumed] == list(range(2 * n))
    for a, b in zip(whole[n:], resumed[n:]):
        assert (a.segment, a.zero_start) == (b.segment, b.zero_start)
        assert abs(a.loss - b.loss) <= 1e-6, (a, b)
    assert resumed[n].segment == 0 and resumed[n].zero_start  # epoch 2 starts from zeros
    final = [torch.load(d / "checkpoint_last.pt")["model"] for d in (whole_dir, resumed_dir)]
    for name, value in final[0].items():
        torch.testing.assert_close(final[1][name], value, rtol=0, atol=1e-6)


def test_mid_epoch_resume_restarts_the_streams_from_zero_state(runs):
    n, mid = runs["n"], runs["mid_update"]
    whole, _ = runs["whole"]
    resumed, _ = runs["mid"]
    position = [(s.update, s.segment) for s in whole]
    assert position == [(s.update, s.segment) for s in resumed]  # stream position is kept
    first = resumed[mid]
    assert first.segment == mid and first.zero_start, "the resumed segment starts from zeros"
    assert not whole[mid].zero_start, "where the uninterrupted run carries its state"
    assert abs(first.loss - whole[mid].loss) > 1e-6, "so the first resumed loss differs"
    gaps = [abs(a.loss - b.loss) for a, b in zip(whole[mid:], resumed[mid:])]
    print(f"epoch = {n} updates, resumed at {mid}: |loss gaps| {[f'{g:.1e}' for g in gaps]}")
    assert all(math.isfinite(s.loss) for s in resumed)
    assert max(gaps) < 0.02, gaps  # the runs stay close (losses here are about 2-3 nats)
    assert resumed[n].zero_start and whole[n].zero_start  # both restart at the next epoch


def test_checkpoints_hold_no_stream_state(runs, char_data, tmp_path):
    state = runs["mid_checkpoint"]  # saved mid-epoch, while the streams carried state
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(a) for a in train_args(char_data, tmp_path, 1)])
    cfg = convert_namespace_to_omegaconf(args)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    assert set(state["model"]) == set(model.state_dict())  # parameters and buffers only
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] == runs["mid_update"]
