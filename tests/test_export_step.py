"""The static-shape step module, its torch.export program and its ONNX export against the
PyTorch incremental decoder; the exported full-sequence scorer against the model's forward."""
import logging

import numpy as np
import pytest
import torch

from conftest import make_dictionary
from fairseq_srupp.export import (SRUppScorer, SRUppStep, export_scorer, export_step,
                                  export_step_onnx)
from fairseq_srupp.models.config import SRUppLMConfig
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel
from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMConfig, SRUppStreamLMTask

SMALL = dict(hidden_dim=32, proj_dim=16, num_layers=3, dropout=0.0, attention_dropout=0.0,
             embed_dropout=0.0, max_target_positions=None)
MODELS = {
    # attention in every layer, two heads, ring of mem_len = 16
    "char_all": dict(num_symbols=30, attention_heads=2, mem_len=16),
    # attention in the last layer only, pre layer norm, ring of the window 12 < mem_len
    "char_last": dict(num_symbols=30, attention_last=1, mem_len=20, attn_window=12,
                      cell_layer_norm="pre"),
    # word level, fairseq's adaptive input and softmax, tied
    "word_adaptive": dict(num_symbols=300, mem_len=16, adaptive_input=True,
                          adaptive_input_cutoff="20,100", adaptive_input_dim=32,
                          adaptive_softmax_cutoff="20,100", tie_adaptive_weights=True,
                          tie_adaptive_proj=True),
    # Transformer-XL style adaptive layers (eager step and torch.export only)
    "word_txl": dict(num_symbols=300, mem_len=16, txl_adaptive=True, txl_cutoffs="20,100",
                     txl_embed_dim=32, txl_div_val=2),
}
PROMPT = 6
GENERATED = 260  # past the ring of 16 many times
EOS, BANNED = 2, [0, 1]  # </s>; <s> and <pad> are never generated (as in fairseq)


def make_model(num_symbols, **options):
    dictionary = make_dictionary(num_symbols - 4)
    task = SRUppStreamLMTask(SRUppStreamLMConfig(data="unused"), dictionary)
    model = SRUppLanguageModel.build_model(SRUppLMConfig(**{**SMALL, **options}), task).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            if layer.use_attention:
                layer.transform.alpha.fill_(0.8)  # attention matters
    return model


def greedy(step_fn, state, prompt):
    """Feed </s> + prompt (B, P), then GENERATED greedy tokens. step_fn(tokens (B, 1) int64
    numpy, state) -> (log-probs (B, V) numpy, state). Returns tokens (B, P + GENERATED) and the
    log-probs after each input (steps, B, V)."""
    tokens = np.concatenate([np.full((prompt.shape[0], 1), EOS), prompt], axis=1)
    history = []
    for t in range(tokens.shape[1] + GENERATED - 1):
        log_probs, state = step_fn(tokens[:, t: t + 1], state)
        history.append(log_probs)
        if t + 1 >= tokens.shape[1]:
            scores = log_probs.copy()
            scores[:, BANNED] = -np.inf
            tokens = np.concatenate([tokens, scores.argmax(-1)[:, None]], axis=1)
    return tokens, np.stack(history)


def decoder_fn(model):
    """The incremental decoder as fairseq-generate runs it (no gradients: the cached path)."""
    def run(tokens, state):
        prefix = tokens if state["prefix"] is None else np.concatenate([state["prefix"], tokens], 1)
        with torch.no_grad():
            logits, _ = model.decoder(torch.from_numpy(prefix), incremental_state=state["inc"])
            log_probs = model.get_normalized_probs((logits[:, -1:], None), log_probs=True)
        return log_probs[:, 0].float().numpy(), {"prefix": prefix, "inc": state["inc"]}
    return run, {"prefix": None, "inc": {}}


def module_fn(module):
    def run(tokens, state):
        with torch.no_grad():
            out = module(torch.from_numpy(tokens), *state)
        return out[0].numpy(), out[1:]
    return run


def onnx_fn(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(tokens, state):
        out = session.run(None, dict(zip(["tokens", "c", "kv", "position"],
                                         [tokens, *[s.numpy() for s in state]])))
        return out[0], tuple(torch.from_numpy(o) for o in out[1:])
    return run


def check_same(name, reference, tokens, log_probs):
    ref_tokens, ref_log_probs = reference
    diff = np.abs(log_probs - ref_log_probs).max()
    print(f"{name}: max |log-prob diff| {diff:.2e} over {len(log_probs)} steps")
    assert diff < 1e-5, name
    assert (tokens == ref_tokens).all(), f"{name}: greedy tokens differ"


@pytest.mark.parametrize("name", list(MODELS))
def test_step_torch_export_and_onnx_equal_incremental_decoder(name, tmp_path):
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    options = dict(MODELS[name])
    model = make_model(**options)
    prompt = np.random.default_rng(0).integers(4, options["num_symbols"], (2, PROMPT))
    reference = greedy(*decoder_fn(model), prompt)
    step = SRUppStep(model.decoder)
    assert step.ring_size == min(options["mem_len"], options.get("attn_window") or 99)
    check_same(f"{name} step", reference, *greedy(module_fn(step), step.initial_state(2), prompt))
    program = export_step(step, EOS)
    check_same(f"{name} torch.export", reference,
               *greedy(module_fn(program.module()), step.initial_state(2), prompt))
    if name == "word_txl":
        return
    export_step_onnx(step, str(tmp_path / "step.onnx"), EOS)
    onnx_run = onnx_fn(str(tmp_path / "step.onnx"))
    check_same(f"{name} onnx", reference, *greedy(onnx_run, step.initial_state(2), prompt))
    one_row = greedy(onnx_run, step.initial_state(1), prompt[1:])  # the batch is symbolic
    assert (one_row[0] == reference[0][1:]).all()


@pytest.mark.parametrize("name", ["char_all", "word_adaptive"])
def test_exported_scorer_equals_forward(name):
    options = dict(MODELS[name])
    model = make_model(**options)
    program = export_scorer(SRUppScorer(model.decoder), EOS)
    tokens = torch.randint(4, options["num_symbols"], (3, 21))  # other shapes than the example
    with torch.no_grad():
        expected = model.get_normalized_probs(model(tokens), log_probs=True)
        got = program.module()(tokens)
    assert (got - expected).abs().max().item() < 1e-5


def test_step_refuses_a_model_in_training_mode():
    model = make_model(30).train()
    with pytest.raises(ValueError, match="eval mode"):
        SRUppStep(model.decoder)
