"""`--lr-scheduler srupp_cosine`: the SRU++ authors' learning-rate schedule (SPEC.md section 3.3).

With peak lr L, warmup w = --warmup-updates and T = --max-update, the lr used by update n
(0-based; fairseq's num_updates before that update) is

    n <  w:  L * (n + 1) / w                       (--warmup-from-zero: L * n / w)
    n >= w:  L * (1 + cos(pi n / T)) / (1 + cos(pi w / T))
    n >= T:  0

i.e. a linear warm-up, then a cosine over the *global* step that reaches exactly L at n = w and 0
at n = T. This is what the authors' loop produces: it writes the warm-up lr into the optimizer
by hand and steps torch's CosineAnnealingLR(T_max=max_iter) after every update from the start,
and that scheduler's recursive form rescales whatever lr it finds by
(1 + cos(pi n / T)) / (1 + cos(pi (n - 1) / T)). Their exact denominator is therefore
1 + cos(pi (w - 1) / T); the difference from the form above is < 5e-7 relative for w=16k,
T=400k. enwik8 and LM1B use (n + 1) / w; the WT103 script uses n / w, so its first update has lr 0.

How fairseq's stock `--lr-scheduler cosine` differs: it warms up as L * n / w and then restarts
the cosine at the end of warm-up, L/2 * (1 + cos(pi (n - w) / (T - w))). For the SRU++ setting
(w = 16k, T = 400k) that schedule is higher than this one everywhere after warm-up: by up to
3.4% of the peak lr (n ~ 151k: 0.690 L vs 0.724 L), 5.9% relative at the midpoint of its decay
(n = 208k: 0.470 L vs 0.500 L), 7.5% relative over the last 50k updates; the total lr summed
over training is 3.6% larger. Its options cannot express this schedule (the phase shift by w
is built in).
"""
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II, ListConfig


def srupp_cosine_lr(num_updates: int, peak_lr: float, warmup_updates: int, max_update: int,
                    warmup_from_zero: bool = False) -> float:
    """The lr of update `num_updates` (0-based) under the SRU++ schedule (module docstring)."""
    n, w, T = int(num_updates), int(warmup_updates), int(max_update)
    if n < w:
        return peak_lr * (n if warmup_from_zero else n + 1) / w
    if n >= T:
        return 0.0
    return peak_lr * (1.0 + math.cos(math.pi * n / T)) / (1.0 + math.cos(math.pi * w / T))


@dataclass
class SRUppCosineConfig(FairseqDataclass):
    warmup_updates: int = field(default=0, metadata={
        "help": "linear warm-up over the first N updates: lr*(n+1)/N for update n (the SRU++ "
                "authors use 16000)"})
    warmup_from_zero: bool = field(default=False, metadata={
        "help": "warm up as lr*n/N instead of lr*(n+1)/N, so the first update has lr 0 (the "
                "authors' WikiText-103 script)"})
    lr: List[float] = II("optimization.lr")
    max_update: int = II("optimization.max_update")


@register_lr_scheduler("srupp_cosine", dataclass=SRUppCosineConfig)
class SRUppCosineSchedule(FairseqLRScheduler):
    """Linear warm-up, then cosine decay on the global update count to 0 at --max-update."""

    def __init__(self, cfg: SRUppCosineConfig, fairseq_optimizer):
        super().__init__(cfg, fairseq_optimizer)
        lr = cfg.lr
        if isinstance(lr, (Collection, ListConfig)) and not isinstance(lr, str):
            lr = list(lr)
            if len(lr) != 1:
                raise ValueError(f"--lr-scheduler srupp_cosine takes a single --lr, got {lr}")
            lr = lr[0]
        self.peak_lr = float(lr)
        self.warmup_updates = int(cfg.warmup_updates)
        self.max_update = int(cfg.max_update or 0)
        self.warmup_from_zero = bool(cfg.warmup_from_zero)
        if self.max_update <= 0:
            raise ValueError("--lr-scheduler srupp_cosine decays to 0 at --max-update, so "
                             "--max-update must be set (the authors use 400000; 800000 for LM1B)")
        if not 0 <= self.warmup_updates < self.max_update:
            raise ValueError(f"--warmup-updates ({self.warmup_updates}) must be >= 0 and below "
                             f"--max-update ({self.max_update})")
        self.optimizer.set_lr(self.lr_at(0))

    def lr_at(self, num_updates: int) -> float:
        return srupp_cosine_lr(num_updates, self.peak_lr, self.warmup_updates, self.max_update,
                               self.warmup_from_zero)

    def step(self, epoch, val_loss=None):
        """The lr depends on the update count only, not on epochs or validation."""
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        lr = self.lr_at(num_updates)
        self.optimizer.set_lr(lr)
        return lr
