"""fairseq_srupp.conversion (scripts/tools/convert_sru_checkpoint.py, srupp-convert-checkpoint): the
authors' SRU++ checkpoints -> fairseq `srupp_lm`.

For the enwik8, WikiText-103 and Billion Word layouts a small state_dict is built with the
authors' key names and shapes (SPEC.md 1.10) and random values, converted, loaded back through
fairseq, and its log-probabilities are compared with a float64 computation written here directly
from SPEC.md (interleaved U rows, post-LN attention, the SRU recurrence, the Transformer-XL
adaptive input/softmax), independent of fairseq_srupp's modules.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "fairseq_srupp")
pytest.importorskip("fairseq")
sys.path.insert(0, ROOT)
import fairseq_srupp  # noqa: E402,F401  (registers the model, archs and criterion)
from fairseq import checkpoint_utils  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402

from fairseq_srupp import conversion as conv  # noqa: E402
from fairseq_srupp.conversion.cli import main as convert_main  # noqa: E402

D, DP, NL = 16, 8, 3  # d, d', layers


# ------------------------------------------------------------------ the authors' layouts
def _rand(gen, *shape, scale=None):
    scale = 1.0 / math.sqrt(shape[-1]) if scale is None else scale
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).float()


def authors_state_dict(layout, vocab_size, attention, cutoffs=None, n_e=None, div_val=4,
                       seed=0):
    """Random tensors under the authors' key names (SPEC.md 1.10), in their state_dict order."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(NL):
        p = f"rnn.rnn_lst.{i}."
        sd[p + "weight_c"] = _rand(g, 2 * D, scale=0.5)
        sd[p + "bias"] = _rand(g, 2 * D, scale=0.5)
        sd[p + "scale_x"] = torch.ones(1)
        t = p + "transform_module."
        if attention[i]:
            sd[t + "alpha"] = torch.tensor([0.7 + 0.1 * i])
            sd[t + "linear1.weight"] = _rand(g, DP, D)
            sd[t + "linear2.weight"] = _rand(g, 2 * DP, DP)
            sd[t + "linear3.weight"] = _rand(g, 3 * D, DP)
        else:
            sd[t + "linear1.weight"] = _rand(g, DP, D)
            sd[t + "linear2.weight"] = _rand(g, 3 * D, DP)
        sd[t + "layer_norm.weight"] = 1.0 + _rand(g, DP, scale=0.2)
        sd[t + "layer_norm.bias"] = _rand(g, DP, scale=0.2)
    if layout == "enwik8":
        sd["embedding_layer.weight"] = _rand(g, vocab_size, D, scale=1.0)
        sd["output_layer.weight"] = _rand(g, vocab_size, D)
        sd["output_layer.bias"] = _rand(g, vocab_size, scale=0.5)
        return sd
    bounds = [0] + cutoffs + [vocab_size]
    dims = [n_e // div_val ** c for c in range(len(cutoffs) + 1)]
    for c, d_c in enumerate(dims):
        rows = bounds[c + 1] - bounds[c] + (len(cutoffs) if c == 0 else 0)
        sd[f"output_layer.out_layers.{c}.weight"] = _rand(g, rows, d_c, scale=1.0)
        sd[f"output_layer.out_layers.{c}.bias"] = _rand(g, rows, scale=0.5)
    for c, d_c in enumerate(dims):
        sd[f"output_layer.out_projs.{c}"] = _rand(g, D, d_c, scale=1.0 / math.sqrt(D))
    for c, d_c in enumerate(dims):
        if layout == "wt103":  # the tied ParameterList saved a second time (duplicates)
            sd[f"embedding_layer.emb_projs.{c}"] = sd[f"output_layer.out_projs.{c}"]
        else:  # Billion Word: untied
            sd[f"embedding_layer.emb_projs.{c}"] = _rand(g, D, d_c, scale=1.0 / math.sqrt(d_c))
    return sd


# ------------------------------------------------------------------ float64 reference (SPEC.md)
def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def reference_log_probs(sd, layout, ids, vocab_size, cutoffs=None):
    """Authors' ids (L,) -> log p(next symbol) (L, V), float64, one stream, no memory, eval."""
    W = {k: v.double().numpy() for k, v in sd.items()}
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    L = len(ids)
    if layout == "enwik8":
        x = W["embedding_layer.weight"][ids]
    else:
        bounds = [0] + cutoffs + [vocab_size]
        projs = "output_layer.out_projs." if layout == "wt103" else "embedding_layer.emb_projs."
        x = np.zeros((L, D))
        for t, w in enumerate(ids):
            c = max(i for i in range(len(bounds) - 1) if bounds[i] <= w)
            e = W[f"output_layer.out_layers.{c}.weight"][w - bounds[c]]  # tied table
            x[t] = W[f"{projs}{c}"] @ e  # (d, d_c) @ (d_c,)
    for i in range(NL):
        p = f"rnn.rnn_lst.{i}."
        t = p + "transform_module."
        if t + "alpha" in W:  # attention (1.2): K, V from Q = W1 x; post-LN of Q + alpha A
            q = x @ W[t + "linear1.weight"].T
            kv = q @ W[t + "linear2.weight"].T
            k, v = kv[:, :DP], kv[:, DP:]
            scores = (q / math.sqrt(DP)) @ k.T
            scores = np.where(np.tril(np.ones((L, L), bool)), scores, -np.inf)
            a = np.exp(_log_softmax(scores)) @ v
            o = _ln(q + W[t + "alpha"][0] * a, W[t + "layer_norm.weight"], W[t + "layer_norm.bias"])
            u = o @ W[t + "linear3.weight"].T
        else:  # projected linear (1.3)
            z = _ln(x @ W[t + "linear1.weight"].T, W[t + "layer_norm.weight"],
                    W[t + "layer_norm.bias"])
            u = z @ W[t + "linear2.weight"].T
        vf, vr = W[p + "weight_c"][:D], W[p + "weight_c"][D:]
        bf, br = W[p + "bias"][:D], W[p + "bias"][D:]
        c = np.zeros(D)
        h = np.zeros((L, D))
        for s in range(L):  # 1.5, U interleaved per unit: U[j*3 + m]
            u0, u1, u2 = u[s, 0::3], u[s, 1::3], u[s, 2::3]
            f = sig(u1 + vf * c + bf)
            r = sig(u2 + vr * c + br)
            c = f * c + (1 - f) * u0
            h[s] = r * c + (1 - r) * x[s]
        x = h
    if layout == "enwik8":
        return _log_softmax(x @ W["output_layer.weight"].T + W["output_layer.bias"])
    n = len(cutoffs)
    head = (x @ W["output_layer.out_projs.0"]) @ W["output_layer.out_layers.0.weight"].T \
        + W["output_layer.out_layers.0.bias"]
    head_lp = _log_softmax(head)
    out = [head_lp[:, :cutoffs[0]]]
    for c in range(1, n + 1):
        tail = (x @ W[f"output_layer.out_projs.{c}"]) @ W[f"output_layer.out_layers.{c}.weight"].T \
            + W[f"output_layer.out_layers.{c}.bias"]
        out.append(head_lp[:, head.shape[1] - c][:, None] + _log_softmax(tail))
    return np.concatenate(out, axis=1)


# ------------------------------------------------------------------ cases
def _words(n):
    return [f"w{i:03d}" for i in range(n)]


CASES = {
    # enwik8: byte values in np.unique order; "10" (newline) is fairseq's </s>; "195" is missing
    # from the fairseq dictionary (only in valid/test) and becomes <unk>
    "enwik8": dict(
        arch="srupp_lm_enwik8_base", attention=[True, True, True],
        vocab=["9", "10", "32", "33", "46", "60", "62", "97", "98", "99", "100", "101", "116",
               "195"],
        dict_symbols=["101", "32", "116", "97", "46", "99", "9", "100", "60", "62", "98", "33"],
        overrides={}, cutoffs=None, n_e=None),
    "wt103": dict(
        arch="srupp_lm_wiki103_base_txl", attention=[False, False, True],
        vocab=["<eos>", "the", ",", "<unk>"] + _words(36),
        overrides={"attention_every": 3, "txl_cutoffs": "10,20,30", "txl_embed_dim": 64},
        cutoffs=[10, 20, 30], n_e=64),
    "lm1b": dict(
        arch="srupp_lm_lm1b_large_txl", attention=[False, True, False],
        vocab=["<S>", "</S>", "<UNK>", "the"] + _words(26),
        overrides={"attention_every": 2, "txl_cutoffs": "8,20", "txl_embed_dim": 32},
        cutoffs=[8, 20], n_e=32),
}


def _fairseq_dictionary(case, rng):
    """A fairseq dictionary in an order different from the authors' (shuffled counts)."""
    if "dict_symbols" in case:
        symbols = case["dict_symbols"]
    else:  # as fairseq-preprocess / vocab-to-dict: markers replaced by fairseq's </s>, <unk>
        drop = {"<eos>", "<unk>", "<S>", "</S>", "<UNK>"}
        symbols = [s for s in case["vocab"] if s not in drop]
        symbols = [symbols[i] for i in rng.permutation(len(symbols))]
    d = Dictionary()
    for n, s in enumerate(symbols):
        d.add_symbol(s, n=1000 - n)
    d.finalize(padding_factor=8)  # adds madeupword* symbols, as fairseq-preprocess does
    return d


def _authors_id(case, dictionary, f):
    """The authors' id of dictionary id f, from the names (None: no such symbol)."""
    vocab = case["vocab"]
    sym = dictionary[f]
    if f == dictionary.eos():
        sym = {"enwik8": "10", "wt103": "<eos>", "lm1b": "<S>"}[case["name"]]
    elif f == dictionary.unk():
        sym = {"enwik8": "195", "wt103": "<unk>", "lm1b": "<UNK>"}[case["name"]]
    return vocab.index(sym) if sym in vocab else None


def _overrides(case, **extra):
    o = {"hidden_dim": D, "proj_dim": DP, "num_layers": NL}
    o.update(case["overrides"])
    o.update(extra)
    return json.dumps(o)


def _setup(tmp_path, name, seed=0):
    case = dict(CASES[name], name=name)
    sd = authors_state_dict(name, len(case["vocab"]), case["attention"], case["cutoffs"],
                            case["n_e"], seed=seed)
    ckpt = tmp_path / f"{name}_authors.pt"
    torch.save(sd, ckpt)
    vocab = tmp_path / f"{name}_vocab.txt"
    vocab.write_text("\n".join(case["vocab"]) + "\n")
    data = tmp_path / f"{name}_data"
    data.mkdir(exist_ok=True)
    dictionary = _fairseq_dictionary(case, np.random.RandomState(seed))
    dictionary.save(str(data / "dict.txt"))
    return case, sd, str(ckpt), str(vocab), str(data / "dict.txt"), dictionary


def _convert(tmp_path, name, ckpt, vocab, dict_path, overrides, out="out.pt", **kw):
    out = str(tmp_path / f"{name}_{out}")
    messages = []
    conv.convert(ckpt, vocab, dict_path, CASES[name]["arch"], out, overrides,
                 log=messages.append, **kw)
    return out, messages


@pytest.mark.parametrize("name", ["enwik8", "wt103", "lm1b"])
def test_converted_model_matches_float64_reference(tmp_path, name):
    case, sd, ckpt, vocab, dict_path, dictionary = _setup(tmp_path, name)
    out, messages = _convert(tmp_path, name, ckpt, vocab, dict_path, _overrides(case))
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [out], arg_overrides={"data": os.path.dirname(dict_path)})
    model = models[0].eval()
    assert cfg.model._name == case["arch"]
    assert len(task.target_dictionary) == len(dictionary)

    f2a = [_authors_id(case, dictionary, f) for f in range(len(dictionary))]
    known = [f for f, a in enumerate(f2a) if a is not None]
    rng = np.random.RandomState(1)
    tokens = [dictionary.eos()] + list(rng.choice(known, size=13))
    if dictionary.unk() in known:
        tokens[5] = dictionary.unk()
    ref = reference_log_probs(sd, name, [f2a[f] for f in tokens], len(case["vocab"]),
                              case["cutoffs"])
    for dtype, tol in ((torch.float32, 5e-5), (torch.float64, 1e-5)):
        with torch.no_grad():
            net_output = model.to(dtype)(torch.tensor([tokens]))
            ours = model.get_normalized_probs(net_output, log_probs=True)
            if name == "enwik8" and dtype == torch.float64:  # fairseq's log_softmax is float32
                ours = torch.log_softmax(net_output[0], dim=-1)
            ours = ours[0].double().numpy()
        err = np.abs(ours[:, known] - ref[:, [f2a[f] for f in known]]).max()
        print(f"{name} {dtype}: max |ours - float64 reference| = {err:.1e} ({len(known)} symbols)")
        assert err < tol
    unmapped = [f for f, a in enumerate(f2a) if a is None]
    assert unmapped and (ours[:, unmapped] < -1e3).all()
    total = np.exp(ours).sum(-1)
    if name == "lm1b":  # </S> is not in the dictionary: its (small) mass is unreachable
        assert any("</S>" in m for m in messages)
        np.testing.assert_allclose(total, 1.0 - np.exp(ref[:, case["vocab"].index("</S>")]),
                                   atol=1e-5)
    else:
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
    if name == "enwik8":  # the byte missing from the dictionary became <unk>
        assert any("195" in m and "<unk>" in m for m in messages)


def test_training_loss_and_gradients(tmp_path):
    """txl_adaptive_loss == cross_entropy on a converted WikiText-103 model; tied weights get
    one gradient."""
    case, sd, ckpt, vocab, dict_path, dictionary = _setup(tmp_path, "wt103")
    out, _ = _convert(tmp_path, "wt103", ckpt, vocab, dict_path, _overrides(case))
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [out], arg_overrides={"data": os.path.dirname(dict_path)})
    model = models[0].eval()
    assert cfg.criterion._name == "txl_adaptive_loss"
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion

    txl_crit = task.build_criterion(cfg.criterion)
    ce_crit = CrossEntropyCriterion(task, sentence_avg=False)
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, len(dictionary) - 8, (2, 9), generator=g)
    target = torch.randint(4, len(dictionary) - 8, (2, 9), generator=g)
    target[1, -2:] = dictionary.pad()
    sample = {"net_input": {"src_tokens": src}, "target": target,
              "ntokens": int(target.ne(dictionary.pad()).sum())}
    loss, _, _ = txl_crit(model, sample)
    ref_loss, _, _ = ce_crit(model, sample)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    loss.backward()
    dec = model.decoder
    assert dec.embed_tokens.emb_layers[1] is dec.txl_softmax.out_layers[1].weight
    assert dec.txl_softmax.out_projs[2] is dec.embed_tokens.emb_projs[2]  # tied (WikiText-103)
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------ errors
def _error(tmp_path, name, **kw):
    case, sd, ckpt, vocab, dict_path, _ = _setup(tmp_path, name)
    kw.setdefault("overrides", _overrides(case))
    if "mutate" in kw:
        kw.pop("mutate")(sd)
        torch.save(sd, ckpt)
    if "vocab_lines" in kw:
        with open(vocab, "w") as f:
            f.write("\n".join(kw.pop("vocab_lines")(case["vocab"])) + "\n")
    with pytest.raises(conv.ConversionError) as e:
        _convert(tmp_path, name, ckpt, vocab, dict_path, kw.pop("overrides"), **kw)
    return str(e.value)


def test_wrong_architecture(tmp_path):
    msg = _error(tmp_path, "enwik8", overrides=_overrides(CASES["enwik8"], num_layers=2))
    assert "--arch srupp_lm_enwik8_base" in msg and "3 SRU++ layers" in msg
    msg = _error(tmp_path, "wt103", overrides=_overrides(CASES["wt103"], hidden_dim=32))
    assert "--arch" in msg and "hidden_dim=32" in msg
    msg = _error(tmp_path, "lm1b", overrides=_overrides(CASES["lm1b"], attention_every=1))
    assert "--arch" in msg and "attention layers" in msg
    msg = _error(tmp_path, "lm1b", overrides=_overrides(CASES["lm1b"], txl_tie_proj=True))
    assert "--arch" in msg and "untied" in msg
    msg = _error(tmp_path, "wt103", overrides=_overrides(CASES["wt103"], txl_cutoffs="10,20,31"))
    assert "--arch" in msg and "10,20,30" in msg


def test_wrong_vocabulary_size(tmp_path):
    msg = _error(tmp_path, "wt103", vocab_lines=lambda v: v + ["extra"])
    assert "--src-vocab" in msg and "41 symbols" in msg and "40" in msg


def test_missing_key(tmp_path):
    key = "rnn.rnn_lst.1.transform_module.layer_norm.bias"
    msg = _error(tmp_path, "enwik8", mutate=lambda sd: sd.pop(key))
    assert "missing" in msg and key in msg


def test_unknown_key(tmp_path):
    msg = _error(tmp_path, "wt103", mutate=lambda sd: sd.update({"rnn.rnn_lst.0.foo": torch.ones(1)}))
    assert "rnn.rnn_lst.0.foo" in msg


def test_misshapen_key_and_cli(tmp_path, capsys):
    case, sd, ckpt, vocab, dict_path, _ = _setup(tmp_path, "enwik8")
    sd["rnn.rnn_lst.2.transform_module.linear2.weight"] = torch.zeros(2 * DP, DP + 1)
    torch.save({"model": sd}, ckpt)  # also: the state_dict wrapped under 'model'
    rc = convert_main(["--src", ckpt, "--src-vocab", vocab, "--dict", dict_path,
                       "--arch", case["arch"], "--out", str(tmp_path / "x.pt"),
                       "--model-overrides", _overrides(case)])
    err = capsys.readouterr().err
    assert rc == 1 and "wrong shape" in err and "linear2.weight (16, 9)" in err
    assert "srupp-convert-checkpoint: error:" in err
    assert not (tmp_path / "x.pt").exists()


def test_script_wrapper_runs_the_package_cli(tmp_path):
    """scripts/tools/convert_sru_checkpoint.py is the package's command line under its own name."""
    script = os.path.join(ROOT, "scripts", "tools", "convert_sru_checkpoint.py")
    proc = subprocess.run([sys.executable, script, "--src", str(tmp_path / "none.pt"), "--src-vocab",
                           "v", "--dict", "d", "--arch", "srupp_lm_enwik8_base", "--out", "o"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "convert_sru_checkpoint.py: error: --src" in proc.stderr and "file not found" in proc.stderr


# ------------------------------------------------------------------ the TXL layer itself
def test_txl_options_are_validated():
    from fairseq_srupp.models.config import SRUppLMConfig, validate_config

    def check(**kw):
        cfg = SRUppLMConfig(txl_adaptive=True, txl_cutoffs="10,20", txl_embed_dim=16, **kw)
        validate_config(cfg, 40)

    check()
    for kw, words in (({"adaptive_input": True, "adaptive_input_cutoff": "10,20"}, "--adaptive-input"),
                      ({"adaptive_softmax_cutoff": "10,20"}, "--adaptive-softmax-cutoff"),
                      ({"share_input_output_embed": True}, "--share-input-output-embed"),
                      ({"txl_div_val": 8}, "width 0"),
                      ({"txl_dropout": 1.0}, "--txl-dropout")):
        with pytest.raises(ValueError, match=words):
            check(**kw)
    with pytest.raises(ValueError, match="below the vocabulary size"):
        validate_config(SRUppLMConfig(txl_adaptive=True, txl_cutoffs="10,40"), 40)
    validate_config(SRUppLMConfig(txl_adaptive=True, txl_cutoffs="10,40", txl_vocab_size=50), 40)


def test_txl_layer_nll_and_token_map():
    """nll == -log_prob[target] (tails only on their rows); unmapped ids; the head's cluster
    columns are read in reverse order; init bounds of SPEC.md 1.9."""
    from fairseq_srupp.modules import UNMAPPED_LOG_PROB, TXLAdaptiveEmbedding, TXLAdaptiveLogSoftmax

    emb = TXLAdaptiveEmbedding(30, 32, 12, [6, 14, 22], div_val=2, token_map_size=33)
    soft = TXLAdaptiveLogSoftmax(emb, tie_proj=False)
    assert [tuple(t.shape) for t in emb.emb_layers] == [(9, 32), (8, 16), (8, 8), (8, 4)]
    assert all(t.abs().max() <= math.sqrt(3 / 12) for t in emb.emb_layers)
    assert all(l.bias.abs().max() == 0 for l in soft.out_layers)
    with torch.no_grad():
        for l in soft.out_layers:
            l.bias.normal_()
        emb.token_map.copy_(torch.tensor([-1] + list(range(29, -1, -1)) + [-1, 5]))
    h = torch.randn(2, 5, 12)
    lp = soft.log_prob(h)
    assert lp.shape == (2, 5, 33)
    torch.testing.assert_close(lp[..., 1:31].exp().sum(-1), torch.ones(2, 5))
    assert (lp[..., [0, 31]] == UNMAPPED_LOG_PROB).all()
    target = torch.randint(0, 33, (2, 5))
    torch.testing.assert_close(soft.nll(h, target), -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1))
    # cluster 3 (ids 22..29) is read from head column head_size - 3 = 6 (of 9 columns)
    head = soft.out_layers[0](h @ soft.out_projs[0])
    tail = soft.out_layers[3](h @ soft.out_projs[3])
    want = head.log_softmax(-1)[..., 6] + tail.log_softmax(-1)[..., 0]  # internal id 22
    torch.testing.assert_close(lp[..., 1 + 29 - 22], want)
    x = emb(torch.tensor([[0, 8, 31]]))
    assert x[0, 0].abs().sum() == 0 and x[0, 2].abs().sum() == 0 and x[0, 1].abs().sum() > 0


def test_console_entry_point():
    """setup.py installs `srupp-convert-checkpoint` as the package's command line."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "srupp-convert-checkpoint"]
    assert ep.value == "fairseq_srupp.conversion.cli:main" and ep.load() is convert_main
