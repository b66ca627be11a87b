"""The inference cache (attention keys/values projected once) against re-projecting the memory.

Under torch.no_grad() in eval mode the decoder carries each attention layer's keys and values;
with gradients enabled it carries the layer inputs and re-projects them (the training path),
which is what the decoder did everywhere before the cache. Both must give the same log-probs.
"""
import pytest
import torch

from test_incremental import PLACEMENTS, make_model, make_task

T = 12


def decode(model, tokens, grad: bool):
    """Token-by-token log-probs (B, T, V) through fairseq's incremental_state."""
    state = {}
    steps = []
    with torch.set_grad_enabled(grad):
        for t in range(tokens.shape[1]):
            logits, _ = model.decoder(tokens[:, : t + 1], incremental_state=state)
            steps.append(torch.log_softmax(logits[:, -1], dim=-1).detach())
    return torch.stack(steps, dim=1), state


def stream(model, segments, grad: bool):
    """Log-probs of consecutive segments with the carried state (what fairseq-eval-lm does with
    the stream task)."""
    model.decoder.reset_stream_state()
    outs = []
    with torch.set_grad_enabled(grad):
        for i, seg in enumerate(segments):
            logits, _ = model(seg, segment_index=i)
            outs.append(torch.log_softmax(logits, dim=-1).detach())
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("cell_layer_norm", ["none", "pre"])
@pytest.mark.parametrize("placement", ["all", "every2"])
def test_cached_incremental_decoding_equals_uncached(placement, cell_layer_norm):
    model = make_model(make_task(), attention_every=PLACEMENTS[placement], mem_len=5,
                       attn_window=4, cell_layer_norm=cell_layer_norm).float()
    tokens = torch.randint(4, 34, (3, T))
    cached, state = decode(model, tokens, grad=False)
    uncached, _ = decode(model, tokens, grad=True)
    assert (cached - uncached).abs().max().item() < 1e-5
    kv = [v for k, v in state[next(iter(state))].items() if k.startswith("kv") and v is not None]
    assert kv and all(t.shape == (5, 3, 16) for t in kv)  # (mem_len, B, 2d'): the cache is used


@pytest.mark.parametrize("window", [0, 6])
def test_cached_stream_evaluation_equals_uncached(window):
    """Segments of 5 with padding in the last one, as the stream task's last batch has."""
    model = make_model(make_task(), mem_len=8, attn_window=window).float()
    tokens = torch.randint(4, 34, (2, 15))
    tokens[1, -2:] = model.decoder.padding_idx
    segments = tokens.split(5, dim=1)
    uncached = stream(model, segments, grad=True)
    cached = stream(model, segments, grad=False)
    assert (cached - uncached).abs().max().item() < 1e-5
    assert model.decoder.stream_slots["eval"].state[0].kv is not None


def test_state_with_inputs_is_projected_and_cached_state_refuses_a_grad_pass():
    model = make_model(make_task()).float()
    tokens = torch.randint(4, 34, (2, 6))
    full, _ = decode(model, tokens, grad=False)
    state = {}
    with torch.enable_grad():  # carries layer inputs
        model.decoder(tokens[:, :3], incremental_state=state)
    with torch.no_grad():  # continues them with the cache
        logits, _ = model.decoder(tokens[:, :4], incremental_state=state)
    assert (torch.log_softmax(logits[:, -1], -1) - full[:, 3]).abs().max().item() < 1e-5
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        model.decoder(tokens[:, :5], incremental_state=state)
