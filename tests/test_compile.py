"""torch.compile(fullgraph=True) through the recurrence op, the transforms, the layer and fairseq-train.

Compiling with inductor on the CPU builds C++ (tens of seconds per graph on 2 cores), so inductor runs
where the numbers matter: sru_recurrence, one SRU++ layer with every option on, and a compiled
fairseq-train run (the whole decoder forward + backward through the --compile option). The other
module variants are captured with the aot_eager backend, which runs the same dynamo capture (fullgraph:
a graph break fails), fake-tensor propagation and AOT autograd, without the C++ build. Random ops follow
eager's generator (inductor's fallback_random), so dropout compares exactly under the same seed.
"""
import json
import subprocess
import sys

import pytest
import torch
import torch._inductor.config as inductor_config

from conftest import REPO, USER_DIR, DictionaryTask, binarize, make_dictionary, write_corpus
from fairseq_srupp.models.config import SRUppLMConfig
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel
from fairseq_srupp.modules import SRUppAttention, SRUppLayer, SRUppProjectedLinear, sru_recurrence, srupp_layer

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


def run_with_grads(fn, args, seed=0):
    """Outputs and the gradients of every floating input and parameter of fn(*args), under `seed`."""
    leaves = [a.detach().clone().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a
              for a in args]
    torch.manual_seed(seed)
    outputs = fn(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    cotangent = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=cotangent, dtype=o.dtype)).sum() for o in outputs)
    params = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    inputs = [a for a in leaves if torch.is_tensor(a) and a.requires_grad]
    grads = torch.autograd.grad(loss, inputs + params, allow_unused=True)  # masks get none
    return [o.detach() for o in outputs], [g for g in grads if g is not None]


def assert_compiled_matches_eager(fn, args, backend):
    graph_breaks = torch._dynamo.explain(fn)(*args).graph_break_count
    assert graph_breaks == 0
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    want_out, want_grads = run_with_grads(fn, args)
    got_out, got_grads = run_with_grads(compiled, args)
    assert len(got_grads) == len(want_grads)
    for got, want in zip(got_out + got_grads, want_out + want_grads):
        torch.testing.assert_close(got, want, **TOL)


class WithWindow(torch.nn.Module):
    """module(*args, window): the window bound, the parameters visible to run_with_grads."""

    def __init__(self, module, window):
        super().__init__()
        self.inner, self.window = module, window

    def forward(self, *args):
        return self.inner(*args, self.window)


def stream_inputs(T=6, B=3, d=16, M=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, d, generator=g)
    memory = torch.randn(M, B, d, generator=g)
    c0 = torch.randn(B, d, generator=g)
    mask_pad = torch.zeros(T, B, dtype=torch.bool)
    mask_pad[-2:, 1] = True
    return x, c0, memory, mask_pad


def test_sru_recurrence_inductor():
    g = torch.Generator().manual_seed(0)
    T, B, d = 7, 3, 5
    args = (torch.randn(T, B, 3, d, generator=g), torch.randn(T, B, d, generator=g),
            torch.rand(2 * d, generator=g) * 2 - 1, torch.randn(2 * d, generator=g),
            torch.randn(B, d, generator=g), torch.rand(T, B, generator=g) < 0.3,
            (torch.rand(B, d, generator=g) > 0.3).float() / 0.7)
    assert_compiled_matches_eager(sru_recurrence, args, "inductor")


def test_layer_with_every_option_inductor():
    layer = SRUppLayer(16, 16, 8, dropout=0.2, attention_dropout=0.2).train()
    with torch.no_grad():
        layer.transform.alpha.fill_(0.7)
    x, c0, memory, mask_pad = stream_inputs()
    assert_compiled_matches_eager(WithWindow(layer, 4), (x, c0, memory, mask_pad), "inductor")


def _layer(**options):
    layer = SRUppLayer(16, 16, 8, **{"dropout": 0.2, "attention_dropout": 0.1, **options}).train()
    with torch.no_grad():
        if layer.use_attention:
            layer.transform.alpha.fill_(0.7)
    return layer


MODULE_CASES = {
    # id: (module factory, which of x, c0, memory, mask_pad it gets, window)
    "projected": (lambda: SRUppProjectedLinear(16, 8, 48, dropout=0.2).train(), "x", None),
    "attention": (lambda: SRUppAttention(16, 8, 48, 2, 0.2, 0.1).train(), "x", None),
    "attention-memory-padding-window": (lambda: SRUppAttention(16, 8, 48, 1, 0.2, 0.1).train(),
                                        "x memory key_padding", 3),
    "layer": (_layer, "x", None),
    "layer-c0-memory": (_layer, "x c0 memory", None),
    "layer-masks-window-no-dropout": (lambda: _layer(dropout=0.0, attention_dropout=0.0),
                                      "x c0 memory mask_pad", 2),
    "layer-without-attention-pre-norm": (lambda: _layer(use_attention=False, cell_layer_norm="pre"),
                                         "x c0 mask_pad", None),
    "layer-post-norm-eval": (lambda: _layer(cell_layer_norm="post").eval(), "x memory", 4),
}


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_captures_in_one_graph(case):
    factory, names, window = MODULE_CASES[case]
    module = factory()
    x, c0, memory, mask_pad = stream_inputs()
    key_padding = torch.cat([torch.zeros(memory.shape[0], x.shape[1], dtype=torch.bool), mask_pad])
    given = dict(x=x, c0=c0, memory=memory, mask_pad=mask_pad, key_padding=key_padding)
    if isinstance(module, SRUppLayer):
        order = ["x", "c0", "memory", "mask_pad"]
    else:
        order = ["x", "memory", "key_padding"]
    args = [given[n] if n in names.split() else None for n in order]
    assert_compiled_matches_eager(WithWindow(module, window), args, "aot_eager")


# ---------------------------------------------------------------- the decoder with --compile
def stream_losses_and_grads(model, tokens, amp):
    """Three training segments of 6 tokens with the state carried: losses and parameter gradients."""
    model.train()
    losses = []
    for i in range(3):
        torch.manual_seed(i)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(tokens[:, 6 * i: 6 * i + 6], segment_index=i)[0]
            loss = logits.float().logsumexp(-1).mean() - logits.float().mean()
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses), [p.grad for p in model.parameters()]


@pytest.mark.parametrize("options,amp", [({}, False), ({"checkpoint_activations": True}, False),
                                         ({"offload_activations": True}, False), ({}, True)],
                         ids=["plain", "checkpoint", "offload", "bf16-autocast"])
def test_decoder_compiled_equals_eager(options, amp, monkeypatch):
    monkeypatch.setattr(srupp_layer, "COMPILE_BACKEND", "aot_eager")
    from torch._dynamo.utils import counters

    def build(compile):
        torch.manual_seed(0)
        cfg = SRUppLMConfig(hidden_dim=16, proj_dim=8, num_layers=3, attention_every=2, dropout=0.1,
                            attention_dropout=0.1, embed_dropout=0.1, mem_len=6, max_target_positions=None,
                            compile=compile, **options)
        return SRUppLanguageModel.build_model(cfg, DictionaryTask(make_dictionary(30)))

    eager, compiled = build(False), build(True)
    if options:  # --offload-activations implies checkpointing
        assert all(hasattr(layer, "precheckpoint_forward") for layer in compiled.decoder.layers)
    tokens = torch.randint(4, 34, (3, 18), generator=torch.Generator().manual_seed(0))
    counters.clear()
    want_losses, want_grads = stream_losses_and_grads(eager, tokens, amp)
    got_losses, got_grads = stream_losses_and_grads(compiled, tokens, amp)
    assert counters["stats"]["unique_graphs"] > 0 and not counters["graph_break"]
    tol = dict(rtol=1e-2, atol=1e-4) if amp else TOL  # bf16 matrix products may round differently
    torch.testing.assert_close(got_losses, want_losses, **tol)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, **tol)


# ---------------------------------------------------------------- fairseq-train --compile
RUN = """
import json, sys, torch
from torch._dynamo.utils import counters
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train"] + json.loads(sys.argv[1])
cli_main()
print("DYNAMO " + json.dumps({"graphs": counters["stats"]["unique_graphs"],
                              "graph_breaks": sum(counters["graph_break"].values())}))
"""


def train(data, save, *extra):
    """(per-update losses, dynamo counters) of a 20-update stream-task run."""
    args = [str(data), "--user-dir", USER_DIR, "--task", "srupp_stream_lm", "--cpu", "--arch", "srupp_lm",
            "--hidden-dim", "32", "--proj-dim", "16", "--num-layers", "2", "--mem-len", "8",
            "--tokens-per-sample", "8", "--batch-size", "4", "--batch-size-valid", "2", "--dropout", "0",
            "--attention-dropout", "0", "--embed-dropout", "0", "--optimizer", "adam", "--lr", "0.01",
            "--max-update", "20", "--validate-interval-updates", "10", "--num-workers", "0", "--seed", "1",
            "--save-dir", str(save), "--no-save", "--log-format", "json", "--log-interval", "1", *extra]
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:]
    losses = [float(json.loads(line[line.index("{"):])["loss"]) for line in proc.stdout.splitlines()
              if "| train_inner |" in line]
    counters = [json.loads(line[len("DYNAMO "):]) for line in proc.stdout.splitlines() if line.startswith("DYNAMO ")]
    valid = [float(json.loads(line[line.index("{"):])["valid_loss"]) for line in proc.stdout.splitlines()
             if "| valid |" in line]
    return losses, valid, counters[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile_data")
    write_corpus(root / "text", "abcdefgh", {"train": 30, "valid": 4, "test": 4})
    return binarize(root / "text", root / "bin")


@pytest.mark.e2e
def test_fairseq_train_compiled_equals_eager_with_bounded_recompiles(data, tmp_path):
    eager, eager_valid, eager_counts = train(data, tmp_path / "eager")
    compiled, compiled_valid, counts = train(data, tmp_path / "compiled", "--compile")
    assert len(eager) == len(compiled) == 20
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4, (eager, compiled)
    assert max(abs(a - b) for a, b in zip(eager_valid, compiled_valid)) < 1e-4
    assert eager_counts["graphs"] == 0
    # 5 graphs in this run: training segment 0 (no state yet) and later segments (state and memory as
    # inputs, one graph for all 20 updates), validation's first, later and last short segment (after
    # which the length is dynamic); a short last training segment would add one
    assert counts["graph_breaks"] == 0
    assert 4 <= counts["graphs"] <= 6, counts
