"""srupp-prepare-text: raw UTF-8 text -> a word-level fairseq data folder.

    srupp-prepare-text --train train.txt --valid valid.txt --test test.txt \\
        --destdir data-bin/mydata --lang en --bpe-merges 8000

1. Moses tokenization (sacremoses, --lang rules, aggressive dash splits, escaping off so that
   detokenization gives the text back), one output line per input line;
2. with --bpe-merges N > 0: subword-nmt learns N merges on the tokenized training text (codes
   saved as DESTDIR/bpecodes) and applies them to every split;
3. fairseq-preprocess --only-source (dictionary from train, --threshold / --nwords);
4. DESTDIR/text_encoding.json records the settings, so that fairseq-train records them in its
   checkpoints (srupp_stream_lm task state) and fairseq-interactive / -generate and the hub
   encode and detokenize raw text with no extra flag (or with --tokenizer moses
   --moses-no-escape --bpe subword_nmt --bpe-codes DESTDIR/bpecodes).
The tokenized text stays in DESTDIR/text/. Train with the adaptive-softmax architectures, e.g.
--arch srupp_lm --adaptive-input --adaptive-softmax-cutoff ... --criterion adaptive_loss.
"""
import argparse
import os
import re
import subprocess
import sys
from typing import Iterator, List

from ..encoders import text_encoding
from ..encoders.word_codec import WordCodec, learn_bpe_codes

SPLITS = ("train", "valid", "test")
CODES_FILE = "bpecodes"


class TextError(Exception):
    """Bad input; the message names the file, the line and the fix."""


def read_lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 text file, without their newline; an error names the first line
    that is not UTF-8."""
    if not os.path.isfile(path):
        raise TextError(f"{path}: no such file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TextError(
                    f"{path} line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at byte "
                    f"{error.start + 1} of the line): convert the file first, e.g. iconv -f "
                    f"LATIN1 -t UTF-8, or model it at the character level (bytes)") from None
            yield line.rstrip("\r\n")


def write_lines(path: str, lines) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    return count


def tokenize_file(codec: WordCodec, src: str, dst: str) -> int:
    return write_lines(dst, (codec.tokenize(line) for line in read_lines(src)))


def preprocess(text_dir: str, destdir: str, suffix: str, threshold: int, nwords: int,
               workers: int) -> str:
    """Run fairseq-preprocess on text_dir/{split}{suffix}; returns its log."""
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--destdir", destdir, "--thresholdsrc", str(threshold), "--nwordssrc", str(nwords),
           "--workers", str(workers)]
    for split in SPLITS:
        cmd += [f"--{split}pref", os.path.join(text_dir, split + suffix)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TextError(f"fairseq-preprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def prepare(a: argparse.Namespace) -> List[str]:
    """The whole preparation; returns summary lines."""
    paths = {"train": a.train, "valid": a.valid, "test": a.test}
    for split, path in paths.items():
        if not os.path.isfile(path):
            raise TextError(f"--{split} {path}: no such file")
    if os.path.exists(os.path.join(a.destdir, "dict.txt")) and not a.force:
        raise TextError(f"{a.destdir} already holds a dictionary: choose another --destdir or "
                        f"pass --force to overwrite it")
    text_dir = os.path.join(a.destdir, "text")
    os.makedirs(text_dir, exist_ok=True)
    codec = WordCodec(a.lang)
    for split in SPLITS:
        lines = tokenize_file(codec, paths[split], os.path.join(text_dir, split + ".tok"))
        if lines == 0:
            raise TextError(f"--{split} {paths[split]} is empty")
    suffix, codes = ".tok", None
    if os.path.exists(os.path.join(a.destdir, CODES_FILE)):  # of an earlier run (--force)
        os.remove(os.path.join(a.destdir, CODES_FILE))
    if a.bpe_merges > 0:
        codes = CODES_FILE
        codes_path = os.path.join(a.destdir, codes)
        learn_bpe_codes(os.path.join(text_dir, "train.tok"), codes_path, a.bpe_merges,
                        a.bpe_min_frequency)
        bpe = WordCodec(a.lang, codes_path)
        for split in SPLITS:
            write_lines(os.path.join(text_dir, split + ".bpe"),
                        (bpe.apply_bpe(line)
                         for line in read_lines(os.path.join(text_dir, split + ".tok"))))
        suffix = ".bpe"
    log = preprocess(text_dir, a.destdir, suffix, a.threshold, a.nwords, a.workers)
    text_encoding.write(a.destdir, text_encoding.word_record(a.lang, codes, a.destdir))
    summary = sorted({re.sub(r".*\[None\] ", "", line) for line in log.splitlines()
                      if re.search(r"\[None\] (.*replaced|Dictionary)", line)})
    return summary + [f"wrote {a.destdir} (dict.txt, {{train,valid,test}}.bin/.idx"
                      + (f", {codes}" if codes else "") + f", {text_encoding.FILE_NAME})"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="srupp-prepare-text", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in SPLITS:
        ap.add_argument(f"--{split}", required=True, help=f"raw UTF-8 {split} text")
    ap.add_argument("--destdir", required=True, help="output data folder")
    ap.add_argument("--lang", default="en", help="Moses tokenizer language (default: en)")
    ap.add_argument("--bpe-merges", type=int, default=0,
                    help="learn this many subword-nmt BPE merges on train (0 = words, no BPE)")
    ap.add_argument("--bpe-min-frequency", type=int, default=2,
                    help="stop merging pairs rarer than this (subword-nmt --min-frequency)")
    ap.add_argument("--threshold", type=int, default=0,
                    help="map words seen <= this often in train to <unk> (fairseq-preprocess "
                         "--thresholdsrc)")
    ap.add_argument("--nwords", type=int, default=-1,
                    help="keep at most this many words in the dictionary (-1 = all)")
    ap.add_argument("--workers", type=int, default=1, help="fairseq-preprocess --workers")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --destdir")
    return ap


def cli_main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.bpe_merges < 0 or a.threshold < 0 or a.workers < 1:
        build_parser().error("--bpe-merges and --threshold must be >= 0, --workers >= 1")
    try:
        for line in prepare(a):
            print(line)
    except TextError as error:
        print(f"srupp-prepare-text: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
