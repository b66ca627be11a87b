"""State carried across segments by the SRU++ decoder (segment_index in net_input)."""
import pytest
import torch

from conftest import DictionaryTask, make_dictionary
from fairseq_srupp.models.config import SRUppLMConfig
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel

V = 30  # symbols besides fairseq's 4 specials
SMALL = dict(hidden_dim=16, proj_dim=8, num_layers=4, dropout=0.0, attention_dropout=0.0,
             embed_dropout=0.0, max_target_positions=None)
PLACEMENTS = {"all": 1, "every2": 2, "none": 0}  # --attention-every
CUTS = [0, 5, 13, 16, 24]  # segments of 5, 8, 3 and 8 tokens (one shorter than the window)



def make_model(dtype=torch.float64, **options):
    """A small srupp_lm whose attention matters (alpha = 0 at init would hide it)."""
    cfg = SRUppLMConfig(**{**SMALL, **options})
    model = SRUppLanguageModel.build_model(cfg, DictionaryTask(make_dictionary(V))).to(dtype)
    with torch.no_grad():
        for layer in model.decoder.layers:
            if layer.use_attention:
                layer.transform.alpha.fill_(0.8)
    return model


def log_probs(model, tokens, **kw):
    """(B, T) -> (B, T, V) log-probs in the model's dtype (get_normalized_probs would give
    float32)."""
    return torch.log_softmax(model(tokens, **kw)[0], dim=-1)


def carried(model, tokens, cuts=CUTS):
    """Log-probs of `tokens` fed as consecutive segments with the state carried."""
    return torch.cat([log_probs(model, tokens[:, a:b], segment_index=i)
                      for i, (a, b) in enumerate(zip(cuts, cuts[1:]))], dim=1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)],
                         ids=["fp64", "fp32"])
@pytest.mark.parametrize("window", [0, 4], ids=["nowindow", "window4"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_carried_segments_equal_one_pass(placement, window, dtype, tol):
    """With the memory covering what each query may see (the whole sequence, or exactly the
    window), k carried segments give the log-probs of one pass over the whole sequence."""
    mem_len = window if window else CUTS[-1]
    model = make_model(dtype, attention_every=PLACEMENTS[placement], mem_len=mem_len,
                       attn_window=window).eval()
    tokens = torch.randint(4, 4 + V, (3, CUTS[-1]))
    full = log_probs(model, tokens)
    pieces = carried(model, tokens)
    diff = (pieces - full).abs().max().item()
    print(f"{placement} window={window} {dtype}: max |diff| {diff:.2e}")
    assert diff < tol


def test_training_mode_carries_the_same_way():
    """The training slot (no window, dropout 0) also reproduces one pass."""
    model = make_model(mem_len=64).train()
    tokens = torch.randint(4, 4 + V, (2, CUTS[-1]))
    with torch.no_grad():
        torch.testing.assert_close(carried(model, tokens), log_probs(model, tokens),
                                   rtol=0, atol=1e-9)


def test_state_and_window_are_what_make_segments_agree():
    """Sanity of the test above: without carried state, or with too little memory, the segments
    do not reproduce the single pass."""
    tokens = torch.randint(4, 4 + V, (2, CUTS[-1]))
    stateless = make_model(carry_state=False, mem_len=64).eval()
    assert not torch.allclose(carried(stateless, tokens), log_probs(stateless, tokens))
    short = make_model(mem_len=3).eval()
    assert not torch.allclose(carried(short, tokens), log_probs(short, tokens))
    with pytest.raises(ValueError, match="attn_window=8 needs mem_len >= attn_window"):
        make_model(mem_len=4, attn_window=8).eval()(tokens, segment_index=0)


def test_stored_state_is_detached_and_training_continues():
    model = make_model(torch.float32, mem_len=8, dropout=0.1).train()
    tokens = torch.randint(4, 4 + V, (2, 12))
    for i, (a, b) in enumerate([(0, 6), (6, 12)]):
        logits, _ = model(tokens[:, a:b], segment_index=i)
        logits.sum().backward()  # a second backward through segment 0's graph would fail
        state = model.decoder.stream_slots["train"].state
        for layer_state in state:
            assert layer_state.c.grad_fn is None and not layer_state.c.requires_grad
            if layer_state.memory is not None:
                assert layer_state.memory.grad_fn is None
                assert not layer_state.memory.requires_grad
    assert all(s.memory.shape == (8, 2, 16) for s in state)


def test_repeated_segment_index_restarts_from_the_same_state():
    """fairseq reruns a batch after an fp16 overflow or an OOM: the rerun must start from the
    state the first run started from, and the stream must advance only once."""
    tokens = torch.randint(4, 4 + V, (2, 18))
    segments = [tokens[:, 0:6], tokens[:, 6:12], tokens[:, 12:18]]
    reference = make_model(mem_len=32).eval()
    expected = [log_probs(reference, s, segment_index=i) for i, s in enumerate(segments)]
    model = reference
    model.reset_stream_state()
    log_probs(model, segments[0], segment_index=0)
    first = log_probs(model, segments[1], segment_index=1)
    retry = log_probs(model, segments[1], segment_index=1)
    torch.testing.assert_close(first, expected[1], rtol=0, atol=0)
    torch.testing.assert_close(retry, expected[1], rtol=0, atol=0)
    torch.testing.assert_close(log_probs(model, segments[2], segment_index=2), expected[2],
                               rtol=0, atol=0)


def test_segment_zero_and_a_new_batch_size_restart_from_zeros():
    model = make_model(mem_len=32).eval()
    tokens = torch.randint(4, 4 + V, (3, 12))
    fresh = log_probs(model, tokens[:2, 6:])  # stateless: zero state, no memory
    log_probs(model, tokens[:2, :6], segment_index=0)
    assert not torch.allclose(log_probs(model, tokens[:2, 6:], segment_index=1), fresh)
    torch.testing.assert_close(log_probs(model, tokens[:2, 6:], segment_index=0), fresh)
    log_probs(model, tokens[:2, :6], segment_index=0)
    other_batch = log_probs(model, tokens[:, 6:], segment_index=1)  # B 2 -> 3: restart
    torch.testing.assert_close(other_batch, log_probs(model, tokens[:, 6:]))


def test_reset_by_mode_and_modes_are_separate():
    model = make_model(mem_len=32)
    tokens = torch.randint(4, 4 + V, (2, 6))
    slots = model.decoder.stream_slots
    model.train()(tokens, segment_index=0)
    model.eval()(tokens, segment_index=0)
    assert slots["train"].state is not None and slots["eval"].state is not None
    model.decoder.reset_stream_state("eval")
    assert slots["train"].state is not None and slots["eval"].state is None
    model.reset_stream_state()
    assert slots["train"].state is None
    with pytest.raises(ValueError, match="mode must be one of"):
        model.decoder.reset_stream_state("valid")


def test_carried_state_is_not_in_state_dict():
    model = make_model(mem_len=32)
    keys = set(model.state_dict())
    buffers = [name for name, _ in model.named_buffers()]
    tokens = torch.randint(4, 4 + V, (2, 6))
    model.train()(tokens, segment_index=0)
    model.eval()(tokens, segment_index=0)
    assert model.decoder.stream_slots["eval"].state is not None
    assert set(model.state_dict()) == keys
    assert [name for name, _ in model.named_buffers()] == buffers
    assert not any("stream" in k or "memory" in k for k in keys)
