"""The srupp_stream_lm task: stream layout, sharding, resets, options and prompts."""
import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.criterions.cross_entropy import CrossEntropyCriterion
from fairseq.data import indexed_dataset
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from torch import nn

from conftest import USER_DIR, make_dictionary
from fairseq_srupp.models.config import SRUppLMConfig
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel
from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMConfig, SRUppStreamLMTask
from fairseq_srupp.tasks.stream_dataset import TokenStream

V = 20



def write_split(folder, name, lines, dictionary):
    """Binarize `lines` (lists of token ids; </s> is appended) as fairseq-preprocess would."""
    builder = indexed_dataset.make_builder(str(folder / f"{name}.bin"), "mmap", len(dictionary))
    for line in lines:
        builder.add_item(torch.tensor(line + [dictionary.eos()], dtype=torch.int32))
    builder.finalize(str(folder / f"{name}.idx"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    dictionary = make_dictionary(V)
    dictionary.save(str(folder / "dict.txt"))
    rng = np.random.RandomState(0)
    for name, n in [("train", 30), ("valid", 6), ("tiny", 0)]:
        lines = [list(rng.randint(4, 4 + V, size=rng.randint(0, 10))) for _ in range(n)]
        write_split(folder, name, lines or [[5, 6], [7]], dictionary)  # tiny: 5 tokens
    return folder


def make_task(data_dir, tokens_per_sample=8, **options):
    cfg = SRUppStreamLMConfig(data=str(data_dir), tokens_per_sample=tokens_per_sample, **options)
    return SRUppStreamLMTask.setup_task(cfg)


def epoch_batches(task, split, batch_size, num_shards=1, shard_id=0):
    if split not in task.datasets:
        task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=batch_size,
                                  num_shards=num_shards, shard_id=shard_id)
    return list(itr.next_epoch_itr(shuffle=False))


def whole_stream(task, split):
    stream = task.dataset(split)
    return stream.read(0, len(stream))


@pytest.mark.parametrize("split,batch_size,num_shards,T", [
    ("train", 3, 1, 8),   # rows of unequal length (N % 3 != 0), short last segment
    ("train", 2, 2, 5),   # two shards
    ("train", 1, 1, 7),   # batch size 1 (the authors' final evaluation)
    ("tiny", 2, 2, 3),    # fewer tokens than rows: some rows are only pad
])
def test_rows_are_contiguous_streams_and_every_token_is_a_target_once(
        data_dir, split, batch_size, num_shards, T):
    task = make_task(data_dir, tokens_per_sample=T)
    pad, eos = task.dictionary.pad(), task.dictionary.eos()
    shards = [epoch_batches(task, split, batch_size, num_shards, s) for s in range(num_shards)]
    stream = whole_stream(task, split)
    widths = [[b["target"].shape[1] for b in batches] for batches in shards]
    assert all(w == widths[0] for w in widths), "every shard gets the same batches"
    assert all(w == T for w in widths[0][:-1]) and 1 <= widths[0][-1] <= T
    sources, targets, ids = [], [], []
    for batches in shards:
        for i, batch in enumerate(batches):
            assert batch["net_input"]["segment_index"] == i
            assert batch["ntokens"] == int(batch["target"].ne(pad).sum())
            assert batch["target"].shape[0] == batch_size and batch["nsentences"] == batch_size
            ids += batch["id"].tolist()
        for r in range(batch_size):  # row r of batch i + 1 continues row r of batch i
            src = torch.cat([b["net_input"]["src_tokens"][r] for b in batches])
            tgt = torch.cat([b["target"][r] for b in batches])
            real = tgt.ne(pad)
            assert torch.equal(real, src.ne(pad)), "input and target pad at the same places"
            n = int(real.sum())
            assert real[:n].all() and not real[n:].any(), "pad only after a row's end"
            sources.append(src[:n])
            targets.append(tgt[:n])
    lengths = [len(t) for t in targets]
    assert max(lengths) - min(lengths) <= 1 and max(lengths) == sum(widths[0])
    torch.testing.assert_close(torch.cat(targets), stream, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(sources), torch.cat([torch.tensor([eos]), stream[:-1]]),
                               rtol=0, atol=0)
    assert len(set(ids)) == len(ids)


def test_shards_own_disjoint_rows(data_dir):
    task = make_task(data_dir, tokens_per_sample=6)
    first, second = (epoch_batches(task, "train", 2, 2, s) for s in (0, 1))
    stream = whole_stream(task, "train")
    pad = task.dictionary.pad()

    def rows(batches):
        joined = [torch.cat([b["target"][r] for b in batches]) for r in range(2)]
        return torch.cat([t[t.ne(pad)] for t in joined])

    half = len(rows(first))
    assert torch.equal(rows(first), stream[:half]) and torch.equal(rows(second), stream[half:])


def test_token_stream_reads_across_lines():
    class Lines:
        def __init__(self, items):
            self.items = [torch.tensor(i, dtype=torch.long) for i in items]
            self.sizes = np.array([len(i) for i in items])

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    items = [[1, 2, 3], [], [4], [5, 6, 7, 8], []]
    stream = TokenStream(Lines(items))
    flat = torch.tensor(sum(items, []))
    assert len(stream) == 8
    for a in range(9):
        for b in range(a, 9):
            assert torch.equal(stream.read(a, b), flat[a:b]), (a, b)


def test_batch_size_is_required_and_context_window_is_refused(data_dir):
    task = make_task(data_dir)
    task.load_dataset("valid")
    with pytest.raises(ValueError, match="needs --batch-size"):
        task.get_batch_iterator(task.dataset("valid"), max_tokens=1024)
    with pytest.raises(ValueError, match="--context-window is not used.*language_modeling"):
        task.eval_lm_dataloader(task.dataset("valid"), batch_size=1, context_window=4)
    batches = list(task.eval_lm_dataloader(task.dataset("valid"), batch_size=1))
    assert [b["net_input"]["segment_index"] for b in batches] == list(range(len(batches)))
    assert torch.equal(torch.cat([b["target"][0] for b in batches]), whole_stream(task, "valid"))


def make_model(task, **options):
    cfg = SRUppLMConfig(hidden_dim=16, proj_dim=8, num_layers=2, dropout=0.0,
                        attention_dropout=0.0, embed_dropout=0.0, mem_len=16,
                        max_target_positions=None, **options)
    model = SRUppLanguageModel.build_model(cfg, task)
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.transform.alpha.fill_(0.5)
    return model


class Backward:
    """The part of a fairseq optimizer that task.train_step uses (no update: weights stay put)."""

    def backward(self, loss):
        loss.backward()


class Wrapper(nn.Module):
    """Stands for DDP / legacy DDP, which keep the model in .module."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_validation_neither_sees_nor_disturbs_the_training_streams(data_dir):
    """train step 0 -> validation -> train step 1: validation starts from zeros, and training
    step 1 starts from the state training step 0 left (as if no validation had run)."""
    task = make_task(data_dir)
    train, valid = epoch_batches(task, "train", 2), epoch_batches(task, "valid", 1)
    model = make_model(task)
    criterion = CrossEntropyCriterion(task, sentence_avg=False)
    slots = model.decoder.stream_slots

    task.begin_epoch(1, Wrapper(model))
    task.train_step(train[0], model, criterion, Backward(), 0)
    after_step0 = [s.c.clone() for s in slots["train"].state]
    expected_loss = task.train_step(train[1], model, criterion, Backward(), 1)[0].item()

    task.begin_epoch(1, Wrapper(model))
    assert slots["train"].state is None and slots["eval"].state is None
    task.train_step(train[0], model, criterion, Backward(), 0)
    task.begin_valid_epoch(1, Wrapper(model))
    for i, batch in enumerate(valid):
        task.valid_step(batch, model, criterion)
        if i == 0:
            assert slots["eval"].state_in is None, "validation starts from zeros"
    assert slots["eval"].state is not None
    loss = task.train_step(train[1], model, criterion, Backward(), 1)[0].item()
    for c, c_expected in zip((s.c for s in slots["train"].state_in), after_step0):
        torch.testing.assert_close(c, c_expected, rtol=0, atol=0)
    assert loss == pytest.approx(expected_loss, rel=1e-6)

    task.begin_valid_epoch(2, model)  # a new validation forgets the previous one
    assert slots["eval"].state is None and slots["train"].state is not None
    task.begin_epoch(2, model)  # a new epoch forgets everything
    assert slots["train"].state is None
    fresh = task.train_step(train[1], model, criterion, Backward(), 2)[0].item()
    assert slots["train"].state_in is None and fresh != pytest.approx(loss)


def parse_cfg(data_dir, *flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--user-dir", USER_DIR, "--task", "srupp_stream_lm", "--arch", "srupp_lm",
        "--hidden-dim", "16", "--proj-dim", "8", "--num-layers", "2", *flags])
    return convert_namespace_to_omegaconf(args)


def test_eval_attn_window_option_sets_the_model_window(data_dir):
    cfg = parse_cfg(data_dir, "--eval-attn-window", "6", "--mem-len", "4")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model, from_checkpoint=True)  # eval-lm, generate, interactive
    assert (model.decoder.cfg.attn_window, model.decoder.cfg.mem_len) == (6, 6)
    with pytest.raises(ValueError, match="--eval-attn-window 6 needs --mem-len >= 6"):
        task.build_model(parse_cfg(data_dir, "--eval-attn-window", "6", "--mem-len", "4").model)
    cfg = parse_cfg(data_dir, "--eval-attn-window", "6", "--mem-len", "10")
    model = tasks.setup_task(cfg.task).build_model(cfg.model)  # fairseq-train keeps its mem_len
    assert (model.decoder.cfg.attn_window, model.decoder.cfg.mem_len) == (6, 10)


def test_prompts_for_generation(data_dir):
    task = make_task(data_dir)
    eos, pad = task.dictionary.eos(), task.dictionary.pad()
    prompts = [torch.tensor([5, 6, 7, eos]), torch.tensor([8, eos]), torch.tensor([eos])]
    dataset = task.build_dataset_for_inference(prompts, [len(p) for p in prompts])
    (batch,) = task.get_batch_iterator(dataset, max_sentences=3).next_epoch_itr(shuffle=False)
    order = batch["id"].tolist()
    src = batch["net_input"]["src_tokens"]
    expected_src = {0: [eos, 5, 6, 7], 1: [eos, 8, pad, pad], 2: [eos, pad, pad, pad]}
    expected_tgt = {0: [5, 6, 7, pad], 1: [8, pad, pad, pad], 2: [pad, pad, pad, pad]}
    for row, i in enumerate(order):
        assert src[row].tolist() == expected_src[i]
        assert batch["target"][row].tolist() == expected_tgt[i]
        assert batch["net_input"]["src_lengths"][row] == len(prompts[i])
