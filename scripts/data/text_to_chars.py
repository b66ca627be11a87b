#!/usr/bin/env python3
"""Convert text to the enwik8-style character format (and back).

Every byte of the input is written as its decimal value (0-255), separated by
single spaces. A newline byte (10) is not written as a number: it stays the line
break, so each input line gives exactly one output line and the end-of-line
token that fairseq-preprocess (or Transformer-XL) appends to every line stands for
the newline. This is the layout of Transformer-XL's prep_enwik8.py without its
stray spaces around the line breaks; fairseq tokenizes both identically.

The conversion is lossless: output ends with a newline exactly when the input
does, other line separators (CR, form feed, U+2028, ...) are plain numbers, and
--decode turns a converted file back into the original bytes. The input is read
as bytes, so it need not be valid UTF-8.

    python scripts/data/text_to_chars.py --input raw.txt --output chars.txt
    python scripts/data/text_to_chars.py --decode --input chars.txt --output raw.txt

Standard library only.
"""
import argparse
import os
import sys

_TOKENS = [str(i).encode('ascii') for i in range(256)]
_VALUES = {t: i for i, t in enumerate(_TOKENS)}


def encode_line(line):
    """bytes without a newline -> b'71 101 110' (bytes)."""
    return b' '.join(map(_TOKENS.__getitem__, line))


def decode_line(line, where='input'):
    """b'71 101 110' (no newline) -> the original bytes."""
    try:
        return bytes(_VALUES[t] for t in line.split(b' ') if t)
    except KeyError as e:
        raise ValueError(f'{where}: {e.args[0]!r} is not a byte value 0-255') from None


def encode_stream(fin, fout):
    """Copy a binary stream to the char format. Returns (bytes_in, lines_out)."""
    nbytes = nlines = 0
    for line in fin:
        nbytes += len(line)
        nlines += 1
        if line.endswith(b'\n'):
            fout.write(encode_line(line[:-1]))
            fout.write(b'\n')
        else:  # last line without a newline: keep it that way
            fout.write(encode_line(line))
    return nbytes, nlines


def encode_bytes(data, fout):
    """Like encode_stream, for a bytes object (e.g. one split of enwik8)."""
    lines = data.split(b'\n')
    last = lines.pop()  # b'' when data ends with a newline
    for line in lines:
        fout.write(encode_line(line))
        fout.write(b'\n')
    if last:
        fout.write(encode_line(last))
    return len(data), len(lines) + (1 if last else 0)


def decode_stream(fin, fout, name='input'):
    nbytes = nlines = 0
    for nlines, line in enumerate(fin, 1):
        nl = line.endswith(b'\n')
        out = decode_line(line[:-1] if nl else line, f'{name}:{nlines}')
        fout.write(out)
        if nl:
            fout.write(b'\n')
        nbytes += len(out) + nl
    return nbytes, nlines


def convert_file(src, dst, decode=False):
    """Convert file src to dst (written atomically via dst.tmp)."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f'input file not found: {src}')
    d = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(d):
        raise FileNotFoundError(f'output folder does not exist: {d} (for {dst})')
    with open(src, 'rb') as fin:
        return write_atomically(
            dst, lambda fout: decode_stream(fin, fout, src) if decode else encode_stream(fin, fout))


def write_atomically(path, write):
    """write(f) into path + '.tmp', then rename it to path; nothing is left behind on an error.
    Returns what write returned."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            res = write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--input', required=True, help='text file (any bytes)')
    ap.add_argument('--output', required=True, help='char-format file to write')
    ap.add_argument('--decode', action='store_true',
                    help='the reverse: char format -> original bytes')
    ap.add_argument('--quiet', action='store_true')
    a = ap.parse_args(argv)
    try:
        nbytes, nlines = convert_file(a.input, a.output, a.decode)
    except (OSError, ValueError) as e:
        print(f'text_to_chars.py: error: {e}', file=sys.stderr)
        return 1
    if not a.quiet:
        what = 'decoded' if a.decode else 'encoded'
        print(f'{what} {a.input} -> {a.output}: {nbytes} bytes, {nlines} lines',
              file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
