"""Which authors' symbol every fairseq dictionary id stands for."""
from typing import List, Optional, Tuple

from .authors import PLAIN
from .errors import ConversionError, listing


def map_symbols(vocab: List[str], dictionary, layout: str, eos_symbol: Optional[str],
                unk_symbol: Optional[str], allow_missing: bool,
                log) -> Tuple[List[int], List[str], str]:
    """Authors' id of every dictionary id (-1: none). Returns (f2a, dropped authors' symbols,
    a short summary)."""
    index = {s: i for i, s in enumerate(vocab)}
    if eos_symbol is None:
        candidates = ("10",) if layout == PLAIN else ("<eos>", "<S>", "</s>")
        eos_symbol = next((s for s in candidates if s in index), None)
        if eos_symbol is None:
            raise ConversionError(f"--src-vocab has none of {candidates} for fairseq's end-of-line "
                                  f"</s>; name it with --eos-symbol")
    elif eos_symbol not in index:
        raise ConversionError(f"--eos-symbol {eos_symbol!r} is not in --src-vocab")
    if unk_symbol is None:
        unk_symbol = next((s for s in ("<unk>", "<UNK>") if s in index), None)
    elif unk_symbol not in index:
        raise ConversionError(f"--unk-symbol {unk_symbol!r} is not in --src-vocab")
    specials = {dictionary.eos(): eos_symbol, dictionary.unk(): unk_symbol}
    role_of = {eos_symbol: dictionary.eos(), unk_symbol: dictionary.unk()}
    f2a = []
    for f in range(len(dictionary)):
        sym = specials[f] if f in specials else dictionary[f]
        a = index.get(sym) if sym is not None else None
        if a is not None and f not in specials and sym in role_of:
            raise ConversionError(
                f"--dict has the symbol {sym!r} (id {f}) that --src-vocab uses for fairseq's "
                f"{dictionary[role_of[sym]]}; pick another --eos-symbol / --unk-symbol")
        f2a.append(-1 if a is None else a)
    used = set(a for a in f2a if a >= 0)
    missing = [a for a in range(len(vocab)) if a not in used]
    unk = dictionary.unk()
    if len(missing) == 1 and f2a[unk] < 0:
        log(f"note: {vocab[missing[0]]!r} of --src-vocab is not in --dict; it becomes fairseq's "
            f"<unk> (as fairseq-preprocess made it)")
        f2a[unk] = missing.pop()
    dropped = [vocab[a] for a in missing]
    if dropped:
        what = f"{len(dropped)} symbols of --src-vocab are not in --dict: {listing(dropped)}"
        if layout == PLAIN and not allow_missing:
            raise ConversionError(
                f"{what}. Their output rows have no dictionary id; dropping them renormalises the "
                f"softmax over the others. Use a dictionary that has them, or pass "
                f"--allow-missing-symbols to drop them")
        if layout == PLAIN:
            log(f"warning: {what}; their rows are dropped (the softmax renormalises)")
        else:
            log(f"warning: {what}; no dictionary id reaches them (the other symbols keep their "
                f"exact log-probabilities, the model's mass on these is unreachable)")
    unmapped = [dictionary[f] for f in range(len(dictionary)) if f2a[f] < 0]
    unk_is = vocab[f2a[unk]] if f2a[unk] >= 0 else None
    summary = (f"eos </s> = {eos_symbol!r}, unk <unk> = {unk_is!r}; "
               f"{len(unmapped)} dictionary symbols without an authors' symbol "
               f"({listing(unmapped, 8)}); {len(dropped)} authors' symbols not in the dictionary")
    return f2a, dropped, summary
