"""The command line of the converter: `srupp-convert-checkpoint` (setup.py) and
scripts/tools/convert_sru_checkpoint.py."""
import argparse
import sys
import warnings

from . import __doc__ as _DOC
from .checkpoint import convert
from .errors import ConversionError


def main(argv=None, prog: str = "srupp-convert-checkpoint") -> int:
    """Parses argv, converts; 0 on success, 1 (the message on stderr) for bad inputs."""
    summary, rules = _DOC.split("\n\n", 1)
    p = argparse.ArgumentParser(prog=prog, description=summary,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=rules)
    p.add_argument("--src", required=True, help="the authors' checkpoint (a state_dict)")
    p.add_argument("--src-vocab", required=True, help="the authors' symbols in id order, one per line")
    p.add_argument("--dict", required=True, help="fairseq dictionary (dict.txt) of the data")
    p.add_argument("--arch", required=True,
                   help="srupp_lm architecture, e.g. srupp_lm_wiki103_large_txl")
    p.add_argument("--out", required=True, help="fairseq checkpoint to write")
    p.add_argument("--model-overrides", default=None,
                   help="JSON dict of srupp_lm options applied after --arch, e.g. "
                        "'{\"hidden_dim\": 16, \"num_layers\": 3}'")
    p.add_argument("--task", default="language_modeling",
                   help="task stored in the checkpoint (default: language_modeling)")
    p.add_argument("--data", default=None,
                   help="cfg.task.data stored in the checkpoint (default: the folder of --dict)")
    p.add_argument("--eos-symbol", default=None,
                   help="authors' symbol that becomes fairseq's </s> (default: 10 for enwik8, "
                        "else <eos> / <S> / </s>)")
    p.add_argument("--unk-symbol", default=None,
                   help="authors' symbol that becomes fairseq's <unk> (default: <unk> / <UNK>)")
    p.add_argument("--allow-missing-symbols", action="store_true",
                   help="enwik8 layout: drop authors' symbols that --dict lacks (renormalises)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        convert(a.src, a.src_vocab, a.dict, a.arch, a.out, a.model_overrides, a.task, a.data,
                a.eos_symbol, a.unk_symbol, a.allow_missing_symbols)
    except ConversionError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
