"""srupp_lm through fairseq's registry: causality, memory, initialisation, bad options."""
import math

import pytest
import torch

from conftest import build_model, fairseq_cmd, USER_DIR
from fairseq_srupp.modules import SRUppLayer

SMALL = ("--hidden-dim", "24", "--proj-dim", "8", "--num-layers", "4")
PLACEMENTS = {
    "all": ("--attention-every", "1"),
    "every2": ("--attention-every", "2"),
    "last1": ("--attention-last", "1"),
    "none": ("--attention-every", "0"),
}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_outputs_depend_only_on_earlier_tokens(placement):
    model = build_model("srupp_lm", 30, *SMALL, *PLACEMENTS[placement]).double().eval()
    tokens = torch.randint(4, 34, (3, 12))
    logits, _ = model(tokens)
    for t in (0, 5, 10):
        changed = tokens.clone()
        changed[:, t + 1:] = torch.randint(4, 34, changed[:, t + 1:].shape)
        changed_logits, _ = model(changed)
        torch.testing.assert_close(changed_logits[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(changed_logits[:, t + 1:], logits[:, t + 1:])


def test_attention_placement_follows_spec():
    flags = lambda *f: build_model("srupp_lm", 30, "--num-layers", "10", *f).decoder.attention_flags  # noqa: E731
    assert flags("--attention-every", "1") == [True] * 10
    assert [i + 1 for i, a in enumerate(flags("--attention-every", "5")) if a] == [5, 10]
    assert [i + 1 for i, a in enumerate(flags("--attention-every", "2")) if a] == [2, 4, 6, 8, 10]
    assert [i + 1 for i, a in enumerate(flags("--attention-last", "3")) if a] == [8, 9, 10]
    assert flags("--attention-every", "0") == [False] * 10


@pytest.mark.parametrize("use_attention", [True, False])
def test_segment_with_memory_equals_concatenated_run(use_attention):
    layer = SRUppLayer(16, 16, 8, 2, use_attention, dropout=0.0).double().eval()
    with torch.no_grad():
        layer.transform.alpha.fill_(0.7) if use_attention else None
    x = torch.randn(10, 3, 16, dtype=torch.float64)
    h_full, c_full = layer(x)
    h1, c1 = layer(x[:4])
    h2, c2 = layer(x[4:], c0=c1, memory=x[:4])
    torch.testing.assert_close(torch.cat([h1, h2]), h_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c2, c_full, rtol=1e-10, atol=1e-10)


def test_eval_window_limits_attention_to_recent_keys():
    """With window 3, the query at position 8 sees keys 5..8 only: changing keys 0..3 leaves its
    attention output (the transform's U) unchanged."""
    transform = SRUppLayer(8, 8, 8, 1, True).double().eval().transform
    with torch.no_grad():
        transform.alpha.fill_(1.0)
    x = torch.randn(9, 2, 8, dtype=torch.float64)
    x_far = x.clone()
    x_far[:4] += 1.0
    torch.testing.assert_close(transform(x, window=3)[8], transform(x_far, window=3)[8])
    assert not torch.allclose(transform(x)[8], transform(x_far)[8])


def _xavier_bound(weight):
    fan_out, fan_in = weight.shape
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_initialisation_matches_spec():
    dropout = 0.2
    model = build_model("srupp_lm", 200, "--hidden-dim", "256", "--proj-dim", "64",
                        "--num-layers", "2", "--attention-every", "2", "--dropout", str(dropout))
    decoder = model.decoder
    d = 256
    projected, attention = decoder.layers[0], decoder.layers[1]
    assert not projected.use_attention and attention.use_attention
    for linear, scale in [(attention.transform.linear1, 1.0), (attention.transform.linear2, 1.0),
                          (attention.transform.linear3, math.sqrt(1 - dropout)),
                          (projected.transform.linear1, 1.0),
                          (projected.transform.linear2, math.sqrt(1 - dropout))]:
        w = linear.weight
        bound = _xavier_bound(w) * scale
        assert w.abs().max() <= bound + 1e-7
        # uniform on [-a, a] has std a / sqrt(3)
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert attention.transform.linear2.weight.shape == (128, 64)  # K and V fused, one matrix
    assert attention.transform.alpha.item() == 0.0
    for layer in decoder.layers:
        assert layer.weight_c.abs().max() <= 1.0
        assert abs(layer.weight_c.std().item() - 1 / math.sqrt(3)) < 0.05
        assert torch.all(layer.bias[:d] == 0) and torch.all(layer.bias[d:] == -2.0)
        assert torch.all(layer.transform.layer_norm.weight == 1)
    emb = decoder.embed_tokens.weight
    bound = math.sqrt(3.0 / d)
    assert emb.abs().max() <= bound and abs(emb[4:].std().item() - bound / math.sqrt(3)) < 0.05 * bound
    out = decoder.output_projection
    assert out.weight.abs().max() <= bound and torch.all(out.bias == 0)
    assert decoder.layers[0].recurrence_dropout and not decoder.layers[-1].recurrence_dropout


@pytest.mark.parametrize("flags,message", [
    (("--proj-dim", "10", "--attention-heads", "3"), "--proj-dim .* divisible by --attention-heads"),
    (("--attention-every", "7"), "--attention-every must be in"),
    (("--attention-last", "-1"), "--attention-last must be in"),
    (("--dropout", "1.0"), r"--dropout must be in \[0, 1\)"),
    (("--attention-dropout", "-0.1"), "--attention-dropout must be in"),
    (("--adaptive-softmax-cutoff", "10,40"), "--adaptive-softmax-cutoff .* below the vocabulary"),
    (("--adaptive-input", "--adaptive-input-cutoff", "34"), "--adaptive-input-cutoff .* below"),
    (("--mem-len", "-5"), "--mem-len must be >= 0"),
    (("--cell-layer-norm", "sideways"), "cell_layer_norm|invalid choice"),
])
def test_bad_options_fail_at_build_time(flags, message):
    with pytest.raises((ValueError, SystemExit)) as info:
        build_model("srupp_lm", 30, "--num-layers", "4", *flags)
    if info.type is ValueError:
        assert __import__("re").search(message, str(info.value)), str(info.value)


def test_cli_reports_bad_option_and_wrong_user_dir(char_data, tmp_path):
    common = [char_data, "--task", "language_modeling", "--arch", "srupp_lm", "--cpu",
              "--tokens-per-sample", "16", "--batch-size", "2", "--max-update", "1",
              "--optimizer", "adam", "--lr", "1e-3", "--save-dir", tmp_path]
    proc = fairseq_cmd("fairseq-train", "--user-dir", USER_DIR, *common, "--proj-dim", "100",
                       "--attention-heads", "3", check=False)
    assert proc.returncode != 0 and "--proj-dim (100) must be divisible by --attention-heads" in proc.stdout
    proc = fairseq_cmd("fairseq-train", "--user-dir", USER_DIR + "/models", *common, check=False)
    assert proc.returncode != 0
    assert "--user-dir must name the fairseq_srupp package folder" in proc.stdout


@pytest.mark.parametrize("memory_len,window,padded", [(0, None, False), (5, None, False),
                                                       (5, 3, False), (4, None, True)])
def test_wide_heads_take_matmul_attention_with_the_same_result(monkeypatch, memory_len, window,
                                                                padded):
    """Heads wider than FUSED_ATTENTION_MAX_HEAD_DIM use matmul + softmax; both paths agree."""
    from fairseq_srupp.modules import srupp_transform

    transform = SRUppLayer(12, 12, 12, 2, True).double().eval().transform
    with torch.no_grad():
        transform.alpha.fill_(0.9)
    x = torch.randn(7, 3, 12, dtype=torch.float64)
    memory = torch.randn(memory_len, 3, 12, dtype=torch.float64) if memory_len else None
    padding = None
    if padded:
        padding = torch.zeros(memory_len + 7, 3, dtype=torch.bool)
        padding[-2:, 1] = True
    monkeypatch.setattr(srupp_transform, "FUSED_ATTENTION_MAX_HEAD_DIM", 1 << 20)
    fused = transform(x, memory, padding, window)
    monkeypatch.setattr(srupp_transform, "FUSED_ATTENTION_MAX_HEAD_DIM", 0)
    matmul = transform(x, memory, padding, window)
    torch.testing.assert_close(matmul, fused, rtol=1e-10, atol=1e-10)
