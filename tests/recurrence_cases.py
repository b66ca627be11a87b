"""The shapes the recurrence tests run (test_recurrence_cpu.py, test_recurrence_cuda.py)."""
from typing import NamedTuple


class Case(NamedTuple):
    """(T, B, d) and which optional inputs are given: the padding mask, dropout masks, c0."""

    T: int
    B: int
    d: int
    pad: bool = False
    dropout: bool = False
    c0: bool = False

    @property
    def id(self) -> str:
        flags = [name for name in ("pad", "dropout", "c0") if getattr(self, name)]
        return "-".join([f"T{self.T}", f"B{self.B}", f"d{self.d}"] + flags)
