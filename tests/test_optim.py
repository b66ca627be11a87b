"""--optimizer radam and --lr-scheduler srupp_cosine: the update rule against a float64
reimplementation of the paper's equations, decoupled weight decay, fairseq's fp16 wrappers, the
schedule's values, and a few fairseq-train updates end to end (fp32 and --memory-efficient-fp16)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import USER_DIR
from fairseq_srupp.optim.radam import RAdam, rectification
from fairseq_srupp.optim.srupp_cosine import srupp_cosine_lr

BETAS = (0.9, 0.999)
EPS = 1e-8


# ------------------------------------------------------------------ float64 reference
def reference_radam(p0, grads, lrs, weight_decay, degenerated_to_sgd, betas=BETAS, eps=EPS):
    """RAdam (Liu et al. 2020, Algorithm 2) in float64, written from the paper's equations with
    the two details of the authors' code: the rectified branch needs rho_t >= 5 (the paper: > 4),
    and eps is added to sqrt(v_t). Decoupled decay p <- p - lr*wd*p on every applied step.
    Returns the parameter after each step."""
    b1, b2 = betas
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    p = p0.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    history = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho_t >= 5:
            l_t = math.sqrt(1 - b2 ** t) / (v.sqrt() + eps)  # sqrt(1/v_hat), eps as the code
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                            / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p = p - lr * weight_decay * p - lr * r_t * m_hat * l_t
        elif degenerated_to_sgd:
            p = p - lr * weight_decay * p - lr * m_hat
        history.append(p.clone())
    return history


def run_radam(p0, grads, lrs, dtype, **kwargs):
    p = torch.nn.Parameter(p0.to(dtype).clone())
    opt = RAdam([p], lr=lrs[0], betas=BETAS, eps=EPS, **kwargs)
    history = []
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        p.grad = g.to(dtype)
        opt.step()
        history.append(p.detach().clone())
    return history, opt


def problem(steps=20, shape=(7, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) * (0.1 + t / steps)
             for t in range(steps)]
    # a warm-up followed by a decay, as the SRU++ schedule does
    lrs = [1e-2 * min(1.0, (t + 1) / 8) * (1 - t / (2 * steps)) for t in range(steps)]
    return p0, grads, lrs


def test_rectification_starts_at_step_6():
    """rho_t ~ t for small t: steps 1-5 are un-rectified with b2 = 0.999."""
    assert [t for t in range(1, 12) if rectification(t, 0.999)[1] == 0.0] == [1, 2, 3, 4, 5]
    assert rectification(5, 0.999)[0] == pytest.approx(4.996, abs=1e-3)


@pytest.mark.parametrize("degenerated_to_sgd", [False, True], ids=["skip", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_radam_matches_float64_reference(degenerated_to_sgd, weight_decay):
    p0, grads, lrs = problem()
    expected = reference_radam(p0, grads, lrs, weight_decay, degenerated_to_sgd)
    got64, _ = run_radam(p0, grads, lrs, torch.float64, weight_decay=weight_decay,
                         degenerated_to_sgd=degenerated_to_sgd)
    for t, (a, b) in enumerate(zip(got64, expected), start=1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=f"float64, step {t}")
    got32, _ = run_radam(p0, grads, lrs, torch.float32, weight_decay=weight_decay,
                         degenerated_to_sgd=degenerated_to_sgd)
    for t, (a, b) in enumerate(zip(got32, expected), start=1):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6, msg=f"float32, step {t}")
    moved = [not torch.equal(a, b) for a, b in zip([p0] + got64[:-1], got64)]
    # skip mode leaves p untouched while rho_t < 5 (steps 1-5); sgd mode moves it from step 1
    assert moved == [degenerated_to_sgd] * 5 + [True] * 15


@pytest.mark.parametrize("degenerated_to_sgd", [False, True], ids=["skip", "sgd"])
def test_weight_decay_is_decoupled(degenerated_to_sgd):
    """With a zero gradient the moments stay 0, so each applied step multiplies p by exactly
    (1 - lr*wd); an L2 term (torch.optim.RAdam's default) would feed wd*p into the moments and
    take a normalised step of size ~lr instead."""
    lr, wd = 0.01, 0.1
    p0 = torch.randn(6, 4)
    grads = [torch.zeros(6, 4)] * 8
    got, _ = run_radam(p0, grads, [lr] * 8, torch.float32, weight_decay=wd,
                       degenerated_to_sgd=degenerated_to_sgd)
    previous = p0
    for t, p in enumerate(got, start=1):
        applied = t >= 6 or degenerated_to_sgd
        expected = previous * (1 - lr * wd) if applied else previous
        assert torch.equal(p, expected), f"step {t}"
        previous = p
    coupled = torch.nn.Parameter(p0.clone())
    opt = torch.optim.RAdam([coupled], lr=lr, weight_decay=wd)
    for _ in range(8):
        coupled.grad = torch.zeros(6, 4)
        opt.step()
    assert not torch.allclose(coupled.detach(), got[-1], rtol=1e-3, atol=0)


def test_fp16_parameters_use_fp32_math():
    """--memory-efficient-fp16 hands the optimizer fp16 params and grads: the moments stay fp32
    and each step equals the fp32 step from the same fp16 values, rounded to fp16."""
    p0, grads, lrs = problem(steps=10, seed=1)
    p16 = torch.nn.Parameter(p0.half())
    opt = RAdam([p16], lr=lrs[0], weight_decay=0.1)
    p32 = p0.half().float()
    m = v = None
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        opt.param_groups[0]["lr"] = lr
        p16.grad = g.half()
        opt.step()
        assert opt.state[p16]["exp_avg"].dtype == torch.float32
        assert opt.state[p16]["exp_avg_sq"].dtype == torch.float32
        # one reference step in float64 from the fp16 state, rounded back to fp16
        g64 = g.half().double()
        m = (1 - BETAS[0]) * g64 if m is None else BETAS[0] * m + (1 - BETAS[0]) * g64
        v = (1 - BETAS[1]) * g64 ** 2 if v is None else BETAS[1] * v + (1 - BETAS[1]) * g64 ** 2
        _, r_t = rectification(t, BETAS[1])
        p64 = p32.double()
        if r_t > 0:
            p64 = p64 * (1 - lr * 0.1) - lr * r_t * math.sqrt(1 - BETAS[1] ** t) \
                / (1 - BETAS[0] ** t) * m / (v.sqrt() + EPS)
        p32 = p64.half().float()
        # within one fp16 rounding step of the float64 result
        torch.testing.assert_close(p16.detach().float(), p32, rtol=1e-3, atol=1e-4)


def test_state_dict_round_trip(tmp_path):
    """A checkpoint's optimizer state loads with torch.load(weights_only=True) (fairseq's default
    under torch >= 2.6) and training continues as if uninterrupted; loading casts the moments to
    the parameter dtype (fp16 here), and the next step moves them back to fp32."""
    p0, grads, lrs = problem(steps=10, seed=3)
    straight, _ = run_radam(p0, grads, lrs, torch.float32, weight_decay=0.1)
    first, opt = run_radam(p0, grads[:6], lrs[:6], torch.float32, weight_decay=0.1)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    p = torch.nn.Parameter(first[-1].clone())
    resumed = RAdam([p], lr=lrs[0], weight_decay=0.1)
    resumed.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for g, lr in zip(grads[6:], lrs[6:]):
        resumed.param_groups[0]["lr"] = lr
        p.grad = g.float()
        resumed.step()
    assert torch.equal(p.detach(), straight[-1])
    half = torch.nn.Parameter(first[-1].half())
    resumed = RAdam([half], lr=lrs[0], weight_decay=0.1)
    resumed.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert resumed.state[half]["exp_avg"].dtype == torch.float16  # torch's cast on load
    half.grad = grads[6].half()
    resumed.step()
    assert resumed.state[half]["exp_avg"].dtype == torch.float32
    assert resumed.state[half]["step"] == 7


def _fairseq_cfg(*flags):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        "/nonexistent", "--user-dir", USER_DIR, "--task", "language_modeling",
        "--arch", "srupp_lm", "--optimizer", "radam", "--lr-scheduler", "srupp_cosine", *flags])
    return convert_namespace_to_omegaconf(args)


def test_command_line_options_reach_the_optimizer_and_schedule():
    from fairseq import optim
    from fairseq.optim import lr_scheduler

    cfg = _fairseq_cfg("--lr", "0.002", "--radam-betas", "(0.8, 0.99)", "--radam-eps", "1e-6",
                       "--weight-decay", "0.1", "--radam-degenerated-to-sgd",
                       "--warmup-updates", "10", "--warmup-from-zero", "--max-update", "100")
    params = [torch.nn.Parameter(torch.randn(3))]
    opt = optim.build_optimizer(cfg.optimizer, params)
    group = opt.optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["degenerated_to_sgd"]) \
        == ((0.8, 0.99), 1e-6, 0.1, True)
    assert opt.supports_memory_efficient_fp16 and opt.supports_flat_params
    sched = lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, opt)
    assert (sched.max_update, sched.warmup_updates, sched.peak_lr) == (100, 10, 0.002)
    assert sched.step_update(0) == 0.0 and sched.step_update(5) == pytest.approx(0.001)
    defaults = _fairseq_cfg("--lr", "0.001", "--max-update", "10")
    group = optim.build_optimizer(defaults.optimizer, params).optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["degenerated_to_sgd"]) \
        == (BETAS, EPS, 0.0, False)


@pytest.mark.parametrize("flatten", [True, False], ids=["flat", "per-tensor"])
def test_fairseq_fp16_optimizer_wrappers(flatten, monkeypatch):
    """FP16Optimizer keeps fp32 master weights (one flat tensor unless --fp16-no-flatten-grads)
    and MemoryEfficientFP16Optimizer updates the fp16 weights in place; both must give the
    fp32 RAdam result. The flat path asks for the current CUDA device, which a CPU lacks: its
    only use is as the key of the master tensor, which must be a CPU tensor's device index."""
    from fairseq.optim import FP16Optimizer, MemoryEfficientFP16Optimizer

    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    flags = ["--fp16", "--fp16-init-scale", "1", "--lr", "0.01", "--weight-decay", "0.1",
             "--max-update", "100"] + ([] if flatten else ["--fp16-no-flatten-grads"])
    cfg = _fairseq_cfg(*flags)
    gen = torch.Generator().manual_seed(2)
    shapes = [(5, 3), (3,), (2, 2, 2)]
    start = [torch.randn(s, generator=gen).half() for s in shapes]
    steps = [[torch.randn(s, generator=gen).half() for s in shapes] for _ in range(8)]

    ref = [torch.nn.Parameter(p.float()) for p in start]
    ref_opt = RAdam(ref, lr=0.01, weight_decay=0.1)
    for grads in steps:
        for p, g in zip(ref, grads):
            p.grad = g.float()
        ref_opt.step()

    for wrapper in (FP16Optimizer, MemoryEfficientFP16Optimizer):
        if wrapper is MemoryEfficientFP16Optimizer and not flatten:
            continue  # it never flattens
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = wrapper.build_optimizer(cfg, params)
        for grads in steps:
            opt.zero_grad()
            loss = sum((p * g).sum() for p, g in zip(params, grads))  # grad of p is g
            opt.backward(loss)
            opt.step()
        for p, r in zip(params, ref):
            assert p.dtype == torch.float16
            torch.testing.assert_close(p.float(), r.detach().half().float(), rtol=2e-3, atol=2e-4)
        if wrapper is FP16Optimizer:
            masters = list(opt.fp32_params.values()) if flatten else opt.fp32_params
            assert all(m.dtype == torch.float32 for m in masters)
            flat = torch.cat([m.detach().view(-1) for m in masters])
            torch.testing.assert_close(flat, torch.cat([r.detach().view(-1) for r in ref]),
                                       rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ schedule
def test_schedule_values_match_the_formula():
    lr, w, T = 3e-4, 16000, 400000
    denom = 1 + math.cos(math.pi * w / T)
    expected = {0: lr / w, w - 1: lr, w: lr, T // 2: lr / denom, T: 0.0, T + 5: 0.0,
                100000: lr * (1 + math.cos(math.pi / 4)) / denom}
    for n, value in expected.items():
        assert srupp_cosine_lr(n, lr, w, T) == pytest.approx(value, rel=1e-12, abs=1e-18), n
    # the WikiText-103 warm-up starts at 0
    assert srupp_cosine_lr(0, lr, w, T, warmup_from_zero=True) == 0.0
    assert srupp_cosine_lr(w - 1, lr, w, T, warmup_from_zero=True) \
        == pytest.approx(lr * (w - 1) / w)
    # continuous at the end of warm-up and decreasing after it
    values = [srupp_cosine_lr(n, lr, w, T) for n in range(w - 1, T + 1, 997)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_schedule_through_the_fairseq_registry():
    from fairseq.optim import build_optimizer
    from fairseq.optim.lr_scheduler import build_lr_scheduler

    lr, w, T = 3e-4, 16000, 400000
    opt = build_optimizer(OmegaConf.create({"_name": "radam", "lr": [lr]}),
                          [torch.nn.Parameter(torch.zeros(2))])
    sched = build_lr_scheduler(OmegaConf.create(
        {"_name": "srupp_cosine", "warmup_updates": w, "lr": [lr], "max_update": T}), opt)
    assert opt.get_lr() == pytest.approx(lr / w)  # set on construction, before any update
    for n in (0, w - 1, w, T // 2, T):
        assert sched.step_update(n) == opt.get_lr() == srupp_cosine_lr(n, lr, w, T)
    assert sched.step(epoch=3, val_loss=1.0) == opt.get_lr()  # epochs do not move it
    with pytest.raises(ValueError, match="max-update"):
        build_lr_scheduler(OmegaConf.create(
            {"_name": "srupp_cosine", "warmup_updates": 10, "lr": [lr], "max_update": 0}), opt)
    with pytest.raises(ValueError, match="warmup-updates"):
        build_lr_scheduler(OmegaConf.create(
            {"_name": "srupp_cosine", "warmup_updates": 10, "lr": [lr], "max_update": 10}), opt)


# ------------------------------------------------------------------ fairseq-train end to end
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """fairseq-preprocess output of a small random text over 12 symbols (run in-process: a
    second interpreter would cost more than the preprocessing itself)."""
    import random

    from fairseq import options
    from fairseq_cli import preprocess

    root = tmp_path_factory.mktemp("radam_data")
    rng = random.Random(0)
    for split, n in {"train": 120, "valid": 10, "test": 10}.items():
        with open(root / f"{split}.txt", "w") as f:
            for _ in range(n):
                f.write(" ".join(rng.choice("abcdefghijkl") for _ in range(rng.randint(5, 30)))
                        + "\n")
    parser = options.get_preprocessing_parser()
    args = parser.parse_args([
        "--only-source", "--trainpref", str(root / "train.txt"), "--validpref",
        str(root / "valid.txt"), "--testpref", str(root / "test.txt"), "--destdir",
        str(root / "bin"), "--workers", "1"])
    preprocess.main(args)
    return root / "bin"


TRAIN_TWICE = """
import sys
from fairseq_cli.train import cli_main
common = sys.argv[1:]
for extra in ([], ["--memory-efficient-fp16"]):
    print("=== run", " ".join(extra) or "fp32", flush=True)
    sys.argv = ["fairseq-train"] + common + extra
    cli_main()
"""


@pytest.mark.e2e
def test_fairseq_train_with_radam_and_srupp_cosine(tiny_data, tmp_path):
    """A few updates of fairseq-train with --optimizer radam --lr-scheduler srupp_cosine, in fp32
    and with --memory-efficient-fp16 (fp16 weights on the CPU; --fp16 needs CUDA there). Both
    runs share one interpreter to halve the start-up cost; the logged lr follows the schedule."""
    lr, w, T = 0.01, 3, 8
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    args = [
        str(tiny_data), "--user-dir", USER_DIR, "--task", "srupp_stream_lm",
        "--arch", "srupp_lm", "--hidden-dim", "32", "--proj-dim", "16", "--num-layers", "2",
        "--mem-len", "16", "--tokens-per-sample", "16", "--batch-size", "4",
        "--optimizer", "radam", "--weight-decay", "0.1", "--lr", str(lr), "--clip-norm", "1.0",
        "--lr-scheduler", "srupp_cosine", "--warmup-updates", str(w), "--max-update", str(T),
        "--cpu", "--num-workers", "0", "--seed", "1", "--log-interval", "1", "--log-format",
        "json", "--disable-validation", "--no-save", "--save-dir", str(tmp_path / "ckpt")]
    proc = subprocess.run([sys.executable, "-c", TRAIN_TWICE, *args], text=True, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    runs = proc.stdout.split("=== run ")[1:]
    assert [r.split("\n", 1)[0] for r in runs] == ["fp32", "--memory-efficient-fp16"]
    for run in runs:
        logs = [json.loads(line.split("| train_inner | ", 1)[1]) for line in run.splitlines()
                if "| train_inner | " in line]
        assert [int(x["num_updates"]) for x in logs] == list(range(1, T + 1)), run[-3000:]
        for x in logs:
            # the logged lr is the one set after update k, i.e. the lr of update k (0-based)
            k = int(x["num_updates"])
            assert float(x["lr"]) == pytest.approx(srupp_cosine_lr(k, lr, w, T), rel=1e-4,
                                                   abs=1e-9)
            assert math.isfinite(float(x["loss"]))
    assert "'memory_efficient_fp16': True" in runs[1] and "loss_scale" in runs[1]
