#!/usr/bin/env python3
"""Sample text from a character-level SRU++ checkpoint (enwik8-style byte data).

The prompt is turned into byte symbols ("The" -> "84 104 101", as scripts/data/text_to_chars.py
writes the data), fed to fairseq-interactive with the srupp_stream_lm task and top-k sampling,
and each sampled continuation is decoded back to text (UTF-8, invalid bytes replaced). Each
sample ends at the first end of line (the dictionary's </s> is the newline) or after
--max-bytes bytes.

    python scripts/tools/sample_text.py --data data-bin/demo --path checkpoints/demo/checkpoint_best.pt \
        --prompt "The " --num-samples 3 --max-bytes 200 --cpu

Prints one sample per line (prompt included). Extra fairseq-interactive options go after `--`.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "data"))
from text_to_chars import encode_line  # noqa: E402  (scripts/data/)


def decode_symbols(symbols: str) -> str:
    """'84 104 101' -> 'The'; symbols that are not byte values (<unk>) are kept as they are."""
    out = bytearray()
    for sym in symbols.split():
        if sym.isdigit() and int(sym) < 256:
            out.append(int(sym))
        else:
            out += sym.encode("utf-8")
    return out.decode("utf-8", errors="replace")


def parse_hypotheses(stdout: str) -> list:
    """The H-<id> lines of fairseq-interactive's output, in input order, as symbol strings."""
    hyps = {}
    for line in stdout.splitlines():
        if line.startswith("H-"):
            tag, _score, *rest = line.split("\t")
            hyps[int(tag[2:])] = rest[0] if rest else ""
    return [hyps[i] for i in sorted(hyps)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="fairseq-preprocess output folder (dict.txt)")
    ap.add_argument("--path", required=True, help="checkpoint file")
    ap.add_argument("--prompt", default="", help="text to continue (one line; may be empty)")
    ap.add_argument("--num-samples", type=int, default=3)
    ap.add_argument("--max-bytes", type=int, default=200, help="bytes to sample per line")
    ap.add_argument("--topk", type=int, default=10, help="top-k sampling")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU")
    ap.add_argument("--user-dir", default=os.path.join(HERE, "..", "..", "fairseq_srupp"),
                    help="the fairseq_srupp package folder (default: next to scripts/)")
    ap.add_argument("extra", nargs="*", help="after --: more fairseq-interactive options")
    a = ap.parse_args(argv)
    if "\n" in a.prompt or "\r" in a.prompt:
        ap.error("--prompt must be a single line: the end of line is the model's </s>, where "
                 "sampling stops")
    if a.num_samples < 1 or a.max_bytes < 1:
        ap.error("--num-samples and --max-bytes must be >= 1")
    symbols = encode_line(a.prompt.encode("utf-8")).decode("ascii")
    cmd = [
        sys.executable, "-m", "fairseq_cli.interactive", a.data, "--path", a.path,
        "--user-dir", os.path.abspath(a.user_dir), "--task", "srupp_stream_lm",
        "--sampling", "--sampling-topk", str(a.topk), "--temperature", str(a.temperature),
        "--beam", "1", "--nbest", "1", "--max-len-a", "1", "--max-len-b", str(a.max_bytes),
        "--seed", str(a.seed), "--buffer-size", str(a.num_samples),
        "--batch-size", str(a.num_samples),
    ] + (["--cpu"] if a.cpu else []) + a.extra
    proc = subprocess.run(cmd, input=(symbols + "\n") * a.num_samples, capture_output=True,
                          text=True)
    hyps = parse_hypotheses(proc.stdout)
    if proc.returncode != 0 or len(hyps) != a.num_samples:
        sys.stderr.write(proc.stderr[-4000:])
        print(f"sample_text.py: error: fairseq-interactive exited with {proc.returncode} and "
              f"gave {len(hyps)} of {a.num_samples} samples", file=sys.stderr)
        return 1
    for h in hyps:
        print(decode_symbols(h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
