#!/usr/bin/env python3
"""Helpers for the scripts/data/prepare_*.sh data scripts (standard library only).

Subcommands (each prints a one-line JSON summary on stdout; errors go to stderr
as "data_utils.py: error: ..." with exit status 1):

  head       --input F --output F --max-bytes N
             Longest prefix of whole lines of F with at most N bytes (at least one
             line). Used for the demo corpus cut and DEMO_TRAIN_BYTES.
  enwik8     --input enwik8|enwik8.zip --outdir D [--expected-bytes N]
             [--valid-bytes N] [--test-bytes N]
             Checks the size, splits the bytes (test = last N, valid = the N before,
             train = the rest; the split of Transformer-XL's prep_enwik8.py and the
             SRU++ train_enwik8.py) and writes D/{train,valid,test}.txt in the char
             format of text_to_chars.py plus the raw bytes as D/*.txt.raw.
  unzip      --zip Z --outdir D NAME...
             Extracts the members whose base name is NAME (one each) to D/NAME,
             checking CRCs. A missing member names what the archive holds instead.
  vocab-to-dict --input 1b_word_vocab.txt --output dict.txt
             "word [count]" lines -> fairseq's "word count" dictionary. Drops the
             sentence markers <S>, </S> and <UNK> (fairseq's own </s> and <unk> take
             their roles) and fairseq's specials if present; duplicates are errors.
  count      FILE...
             Bytes and lines (newline count, as wc -l) of each file.
"""
import argparse
import hashlib
import json
import os
import sys
import zipfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import text_to_chars  # noqa: E402  (same folder)

ENWIK8_BYTES = 100_000_000
ENWIK8_SPLIT = 5_000_000
ENWIK8_URL = 'http://mattmahoney.net/dc/enwik8.zip'
FAIRSEQ_SPECIALS = ('<s>', '<pad>', '</s>', '<unk>')
LM1B_MARKERS = ('<S>', '</S>', '<UNK>')


class DataError(Exception):
    """A problem with the user's input; the message says which file and the fix."""


def _need_file(path, what='input file'):
    if not os.path.exists(path):
        raise DataError(f'{what} not found: {path}')
    if not os.path.isfile(path):
        raise DataError(f'{what} is not a regular file: {path}')


def _need_dir(path):
    if not os.path.isdir(path):
        raise DataError(f'output folder does not exist: {path}')


# ---------------------------------------------------------------------------
# head

def head(src, dst, max_bytes):
    _need_file(src)
    if max_bytes <= 0:
        raise DataError(f'--max-bytes must be positive, got {max_bytes}')

    def write(fout):
        nbytes = nlines = 0
        with open(src, 'rb') as fin:
            for line in fin:
                if nlines and nbytes + len(line) > max_bytes:
                    break
                fout.write(line)
                nbytes += len(line)
                nlines += 1
        return nbytes, nlines

    nbytes, nlines = text_to_chars.write_atomically(dst, write)
    return {'input': src, 'output': dst, 'max_bytes': max_bytes,
            'bytes': nbytes, 'lines': nlines,
            'input_bytes': os.path.getsize(src)}


# ---------------------------------------------------------------------------
# enwik8

def _read_enwik8(path, expected):
    """Returns the bytes of enwik8 from the plain file or from enwik8.zip."""
    _need_file(path, 'enwik8 input')
    fix = (f'download it again (wget {ENWIK8_URL}) and pass enwik8.zip or the '
           f'unzipped enwik8 file')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = [i for i in z.infolist() if not i.is_dir()]
                member = [i for i in names if os.path.basename(i.filename) == 'enwik8']
                if len(member) != 1:
                    raise DataError(
                        f'{path}: no member named "enwik8" in the zip (it holds '
                        f'{[i.filename for i in names][:5]}); {fix}')
                info = member[0]
                if expected and info.file_size != expected:
                    raise DataError(
                        f'{path}: member enwik8 has {info.file_size} bytes, expected '
                        f'{expected}; {fix}')
                data = z.read(info)  # checks the CRC
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as e:
            raise DataError(f'{path}: broken zip ({e}); {fix}') from None
    else:
        with open(path, 'rb') as f:
            head_ = f.read(4)
        if head_.startswith(b'PK'):
            raise DataError(f'{path}: looks like a zip but cannot be read '
                            f'(truncated download?); {fix}')
        size = os.path.getsize(path)
        if expected and size != expected:
            raise DataError(f'{path}: {size} bytes, expected {expected} (truncated or '
                            f'not enwik8?); {fix}. Set ENWIK8_EXPECTED_BYTES to '
                            f'override for a different file.')
        with open(path, 'rb') as f:
            data = f.read()
    if expected and len(data) != expected:
        raise DataError(f'{path}: read {len(data)} bytes, expected {expected}; {fix}')
    return data


def enwik8(src, outdir, expected=ENWIK8_BYTES, valid_bytes=ENWIK8_SPLIT,
           test_bytes=ENWIK8_SPLIT):
    _need_dir(outdir)
    if valid_bytes <= 0 or test_bytes <= 0:
        raise DataError('valid and test sizes must be positive')
    data = _read_enwik8(src, expected)
    if len(data) <= valid_bytes + test_bytes:
        raise DataError(f'{src}: {len(data)} bytes is too small for valid={valid_bytes}'
                        f' + test={test_bytes} bytes plus a train split')
    n = len(data)
    parts = {'train': data[:n - valid_bytes - test_bytes],
             'valid': data[n - valid_bytes - test_bytes:n - test_bytes],
             'test': data[n - test_bytes:]}
    summary = {'input': src, 'bytes': n, 'sha256': hashlib.sha256(data).hexdigest(),
               'distinct_bytes': len(set(data)), 'cr_bytes': data.count(b'\r'),
               'splits': {}}
    for name, part in parts.items():
        base = os.path.join(outdir, name + '.txt')
        text_to_chars.write_atomically(base + '.raw', lambda f, p=part: f.write(p))
        nbytes, nlines = text_to_chars.write_atomically(
            base, lambda f, p=part: text_to_chars.encode_bytes(p, f))
        uniq = set(part)
        summary['splits'][name] = {
            'bytes': nbytes, 'lines': nlines, 'newlines': part.count(b'\n'),
            'distinct_bytes': len(uniq),
            # fairseq symbols: every byte value except the newline (-> </s>)
            'symbols': len(uniq - {10}),
            'ends_with_newline': part.endswith(b'\n')}
    train_syms = set(parts['train'])
    summary['bytes_not_in_train'] = sorted(
        (set(parts['valid']) | set(parts['test'])) - train_syms)
    return summary


# ---------------------------------------------------------------------------
# unzip

def unzip(zpath, outdir, names):
    _need_file(zpath, 'zip archive')
    _need_dir(outdir)
    out = {}
    try:
        with zipfile.ZipFile(zpath) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
            for name in names:
                hits = [i for i in infos if os.path.basename(i.filename) == name]
                if len(hits) != 1:
                    held = sorted(os.path.basename(i.filename) for i in infos)[:8]
                    raise DataError(f'{zpath}: {"no" if not hits else "several"} '
                                    f'members named {name} (it holds {held})')
                dst = os.path.join(outdir, name)

                def write(f, info=hits[0]):
                    with z.open(info) as src:  # CRC checked at the end
                        while True:
                            chunk = src.read(1 << 22)
                            if not chunk:
                                break
                            f.write(chunk)
                text_to_chars.write_atomically(dst, write)
                out[name] = os.path.getsize(dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
        raise DataError(f'{zpath}: broken zip ({e}); download it again') from None
    return {'zip': zpath, 'extracted': out}


# ---------------------------------------------------------------------------
# vocab-to-dict

def vocab_to_dict(src, dst):
    _need_file(src, 'vocabulary file')
    seen = {}
    dropped = []
    rows = []
    with open(src, 'r', encoding='utf-8') as f:
        for ln, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip('-').isdigit()):
                raise DataError(f'{src}:{ln}: expected "word [count]", got {line.rstrip()!r}')
            word = fields[0]
            count = int(fields[1]) if len(fields) == 2 else 0
            if word in LM1B_MARKERS or word in FAIRSEQ_SPECIALS:
                dropped.append(word)
                continue
            if word in seen:
                raise DataError(f'{src}:{ln}: duplicate word {word!r} (first on line '
                                f'{seen[word]})')
            seen[word] = ln
            rows.append(f'{word} {max(count, 0)}\n')
    if not rows:
        raise DataError(f'{src}: no words found')
    text_to_chars.write_atomically(dst, lambda f: f.write(''.join(rows).encode('utf-8')))
    return {'input': src, 'output': dst, 'words': len(rows), 'dropped': dropped,
            'fairseq_vocab_size': len(rows) + len(FAIRSEQ_SPECIALS)}


# ---------------------------------------------------------------------------
# count

def count(paths):
    res = {}
    for p in paths:
        _need_file(p)
        nbytes = nlines = 0
        with open(p, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 22), b''):
                nbytes += len(chunk)
                nlines += chunk.count(b'\n')
        res[p] = {'bytes': nbytes, 'lines': nlines}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('head')
    p.add_argument('--input', required=True)
    p.add_argument('--output', required=True)
    p.add_argument('--max-bytes', type=int, required=True)
    p = sub.add_parser('enwik8')
    p.add_argument('--input', required=True)
    p.add_argument('--outdir', required=True)
    p.add_argument('--expected-bytes', type=int, default=ENWIK8_BYTES,
                   help='0: do not check the size')
    p.add_argument('--valid-bytes', type=int, default=ENWIK8_SPLIT)
    p.add_argument('--test-bytes', type=int, default=ENWIK8_SPLIT)
    p = sub.add_parser('unzip')
    p.add_argument('--zip', required=True)
    p.add_argument('--outdir', required=True)
    p.add_argument('names', nargs='+')
    p = sub.add_parser('vocab-to-dict')
    p.add_argument('--input', required=True)
    p.add_argument('--output', required=True)
    p = sub.add_parser('count')
    p.add_argument('files', nargs='+')
    a = ap.parse_args(argv)
    try:
        if a.cmd == 'head':
            res = head(a.input, a.output, a.max_bytes)
        elif a.cmd == 'enwik8':
            res = enwik8(a.input, a.outdir, a.expected_bytes, a.valid_bytes, a.test_bytes)
        elif a.cmd == 'unzip':
            res = unzip(a.zip, a.outdir, a.names)
        elif a.cmd == 'vocab-to-dict':
            res = vocab_to_dict(a.input, a.output)
        else:
            res = count(a.files)
    except (DataError, OSError, UnicodeDecodeError) as e:
        print(f'data_utils.py: error: {e}', file=sys.stderr)
        return 1
    print(json.dumps(res, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
