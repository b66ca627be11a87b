"""srupp-sample: continue a text prompt with a trained SRU++ checkpoint (character or word level).

    srupp-sample --data data-bin/demo --path checkpoints/demo/checkpoint_best.pt \\
        --prompt "The Lord is " --num-samples 3 --max-tokens 160 --topk 10 --cpu

The model's own text encoders turn the prompt into symbols and the samples back into text (the
byte encoder for character models; Moses + BPE for data from srupp-prepare-text). Prints one
sample per line, prompt included; each ends at the model's end of line or after --max-tokens
new symbols (bytes or sub-words). Uses the Python API (SRUppLanguageModel.from_pretrained).
"""
import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="srupp-sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the model's data folder (dict.txt)")
    ap.add_argument("--path", required=True, help="checkpoint file")
    ap.add_argument("--prompt", required=True, help="text to continue (one line, not empty)")
    ap.add_argument("--num-samples", type=int, default=3)
    ap.add_argument("--max-tokens", "--max-bytes", type=int, default=200, dest="max_tokens",
                    help="new symbols per sample at most (bytes or sub-words)")
    ap.add_argument("--topk", type=int, default=10, help="top-k sampling (0 = off)")
    ap.add_argument("--topp", type=float, default=-1.0, help="top-p (nucleus) sampling if > 0")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--beam", type=int, default=0,
                    help="> 0: beam search of this width instead of sampling")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU")
    return ap


def cli_main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not a.prompt or "\n" in a.prompt or "\r" in a.prompt:
        ap.error("--prompt must be one non-empty line (the end of line ends a sample)")
    if a.num_samples < 1 or a.max_tokens < 1:
        ap.error("--num-samples and --max-tokens must be >= 1")
    if not os.path.isfile(a.path):
        ap.error(f"--path {a.path}: no such checkpoint file")
    import torch

    from ..models.srupp_lm import SRUppLanguageModel

    folder, name = os.path.split(os.path.abspath(a.path))
    lm = SRUppLanguageModel.from_pretrained(folder, name, os.path.abspath(a.data), cpu=a.cpu)
    if torch.cuda.is_available() and not a.cpu:
        lm.cuda()
    lm.eval()
    torch.manual_seed(a.seed)
    if a.beam > 0:
        options = {"beam": a.beam}
    else:
        options = {"beam": 1, "sampling": True, "sampling_topk": a.topk if a.topk > 0 else -1,
                   "sampling_topp": a.topp, "temperature": a.temperature}
    prompts = [a.prompt] * (1 if a.beam > 0 else a.num_samples)
    for text in lm.sample(prompts, max_len_a=1, max_len_b=a.max_tokens, **options):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
