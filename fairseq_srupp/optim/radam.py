"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") with
decoupled weight decay, as the SRU++ authors trained with it (SPEC.md section 3.3, pitfall 10).

`--optimizer radam` registers :class:`FairseqRAdam`, a thin fairseq wrapper around the plain
PyTorch optimizer :class:`RAdam` defined here.

The update for one parameter p with gradient g at step t (1-based, counted per parameter):

    m_t = b1 m_{t-1} + (1 - b1) g            v_t = b2 v_{t-1} + (1 - b2) g^2
    rho_inf = 2 / (1 - b2) - 1               rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    if rho_t >= 5:                           (the variance of the adaptive lr is tractable)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p <- p - wd lr p
        p <- p - lr r_t sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)
    else:                                    (the first 5 steps with b2 = 0.999)
        default: no change to p at all (the moments are still accumulated)
        --radam-degenerated-to-sgd: p <- p - wd lr p;  p <- p - lr m_t / (1 - b1^t)

Choices, and why:
- Weight decay is *decoupled* (p <- p - wd*lr*p, as AdamW) and applies to every parameter the
  optimizer holds; fairseq hands it all trainable parameters in one group, which is what the
  authors did (biases, layer norms, alpha, weight_c and embeddings all decay). torch.optim.RAdam
  defaults to coupled L2 decay (g <- g + wd*p) instead, which is a different optimizer.
- The threshold is rho_t >= 5 (the paper's algorithm says rho_t > 4; the authors' code uses 5 to
  be "more conservative since it's an approximated value"). With b2 = 0.999 that makes steps
  1-5 un-rectified (rho_5 = 4.99, rho_6 = 5.99).
- eps is added to sqrt(v_t) before the bias correction sqrt(1 - b2^t) is folded into the step
  size, as in the authors' code (the paper's l_t = sqrt((1 - b2^t) / v_t) has no eps).
- Un-rectified steps: the final version of the authors' optimizer (LiyuanLucasLiu/RAdam,
  radam/radam.py) defaults to `degenerated_to_sgd=False`, i.e. it skips those steps entirely
  (neither the Adam step nor the weight decay is applied); earlier copies of their top-level
  radam.py defaulted to the SGD-with-momentum step. The SRU++ scripts construct
  `RAdam(params, lr=..., weight_decay=...)` from an external radam.py whose version is not
  recorded, so the default here follows SPEC.md (skip). Under the SRU++ warm-up the choice is
  immaterial in practice: the lr of those 5 steps is at most 5/16000 of the peak.
- All arithmetic is done in fp32 (fp64 for fp64 parameters). fp16/bf16 parameters (fairseq
  --memory-efficient-fp16) are read into fp32, updated, and written back; the moments are
  always kept in fp32. That makes the optimizer usable under FP16Optimizer (fp32 master
  weights, flat or not), MemoryEfficientFP16Optimizer and AMPOptimizer.
"""
import ast
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, List, Tuple

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, DictConfig, ListConfig, OmegaConf

#: rho_t below this value means the adaptive learning rate is not rectified (authors: 5)
RECTIFY_THRESHOLD = 5.0


def rectification(step: int, beta2: float) -> Tuple[float, float]:
    """(rho_t, r_t) of RAdam at 1-based `step`; r_t is 0.0 while rho_t < RECTIFY_THRESHOLD."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    beta2_t = beta2 ** step
    rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    if rho_t < RECTIFY_THRESHOLD:
        return rho_t, 0.0
    r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
    return rho_t, r_t


class RAdam(torch.optim.Optimizer):
    """Rectified Adam with decoupled weight decay (see the module docstring for the update).

    Args:
        params: parameters or parameter groups
        lr: learning rate
        betas: (b1, b2) coefficients of the first and second moment averages
        eps: added to sqrt(v_t)
        weight_decay: decoupled decay; each applied step does p <- p - weight_decay*lr*p
        degenerated_to_sgd: while rho_t < 5, take an SGD-with-momentum step (True) or leave the
            parameter unchanged (False, the default)
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, degenerated_to_sgd: bool = False):
        if not lr >= 0.0:
            raise ValueError(f"RAdam: the learning rate must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"RAdam: eps must be >= 0, got {eps}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"RAdam: betas must be two numbers in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"RAdam: weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        degenerated_to_sgd=degenerated_to_sgd)
        super().__init__(params, defaults)

    # fairseq reads these: the step converts fp16/bf16 params and grads to fp32 itself, and it
    # treats every tensor elementwise, so one flat fp32 master tensor is as good as many.
    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return True

    @property
    def supports_flat_params(self) -> bool:
        return True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RAdam does not support sparse gradients")
                compute_dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) \
                    else p.dtype
                grad = p.grad.to(compute_dtype)
                low_precision = p.dtype != compute_dtype
                p_work = p.to(compute_dtype) if low_precision else p

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p_work, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p_work,
                                                           memory_format=torch.preserve_format)
                else:
                    # load_state_dict casts the moments to the parameter's dtype (fp16 under
                    # --memory-efficient-fp16); keep them in the compute dtype
                    for key in ("exp_avg", "exp_avg_sq"):
                        if state[key].dtype != compute_dtype:
                            state[key] = state[key].to(compute_dtype)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] = int(state["step"]) + 1
                t = state["step"]

                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

                _, r_t = rectification(t, beta2)
                bias1 = 1.0 - beta1 ** t
                if r_t > 0.0:
                    if wd != 0.0:
                        p_work.mul_(1.0 - wd * lr)
                    step_size = lr * r_t * math.sqrt(1.0 - beta2 ** t) / bias1
                    denom = exp_avg_sq.sqrt().add_(eps)
                    p_work.addcdiv_(exp_avg, denom, value=-step_size)
                elif group["degenerated_to_sgd"]:
                    if wd != 0.0:
                        p_work.mul_(1.0 - wd * lr)
                    p_work.add_(exp_avg, alpha=-lr / bias1)
                else:
                    continue  # skipped step: p (and its weight decay) untouched
                if low_precision:
                    p.copy_(p_work)
        return loss


def parse_betas(value: Any) -> Tuple[float, float]:
    """'(0.9, 0.999)', '0.9,0.999', a list or a tuple -> (0.9, 0.999)."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"--radam-betas must look like '(0.9, 0.999)', got {value!r}") \
                from None
    try:
        betas = tuple(float(b) for b in value)
    except TypeError:
        raise ValueError(f"--radam-betas must be two numbers, got {value!r}") from None
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"--radam-betas must be two numbers in [0, 1), got {value!r}")
    return betas


@dataclass
class FairseqRAdamConfig(FairseqDataclass):
    radam_betas: Any = field(default="(0.9, 0.999)", metadata={
        "help": "betas (b1, b2) of RAdam's moment averages, e.g. '(0.9, 0.999)' (the authors')"})
    radam_eps: float = field(default=1e-8, metadata={
        "help": "epsilon added to sqrt(v_t) (the authors use 1e-8)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "decoupled weight decay on every parameter: each applied step does "
                "p <- p - weight_decay*lr*p (not an L2 term in the gradient); the SRU++ "
                "authors use 0.1"})
    radam_degenerated_to_sgd: bool = field(default=False, metadata={
        "help": "while the variance rectification term rho_t < 5 (the first 5 updates with "
                "b2=0.999), take an SGD-with-momentum step (p -= lr*m_t/(1-b1^t), with weight "
                "decay) instead of skipping the update (the default, as SPEC.md and the final "
                "LiyuanLucasLiu/RAdam radam.py)"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("radam", dataclass=FairseqRAdamConfig)
class FairseqRAdam(FairseqOptimizer):
    """fairseq's `--optimizer radam`: RAdam with decoupled weight decay (SRU++ training)."""

    def __init__(self, cfg: FairseqRAdamConfig, params):
        super().__init__(cfg)
        self._optimizer = RAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self):
        """The optimizer settings; fairseq overrides a checkpoint's settings with these on
        resume, so the command line wins."""
        lr = self.cfg.lr
        if isinstance(lr, (Collection, ListConfig)) and not isinstance(lr, str):
            lr = list(lr)
            if len(lr) != 1:
                raise ValueError(f"--optimizer radam takes a single --lr, got {lr}")
            lr = lr[0]
        return {
            "lr": float(lr),
            "betas": parse_betas(self.cfg.radam_betas),
            "eps": float(self.cfg.radam_eps),
            "weight_decay": float(self.cfg.weight_decay),
            "degenerated_to_sgd": bool(self.cfg.radam_degenerated_to_sgd),
        }
