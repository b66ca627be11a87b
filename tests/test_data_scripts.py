"""CPU tests for the data scripts: scripts/data/text_to_chars.py, scripts/data/data_utils.py and
scripts/data/prepare_{demo,enwik8,wikitext103,lm1b}.sh.

Each prepare script runs on a small synthetic stand-in built in tmp_path, with env
overrides for the expected sizes. The tests check the split sizes, the dictionary,
and the binarized tokens: these are decoded back from fairseq's .bin/.idx files with the
standard library and compared with the input text. They also check that bad input fails
with a message that names the file. fairseq-preprocess is taken from the virtualenv of the
python that runs pytest.
"""
import array
import importlib.util
import os
import random
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / 'scripts' / 'data'
BIN = Path(sys.executable).parent
FAIRSEQ_SPECIALS = ['<s>', '<pad>', '</s>', '<unk>']

_no_fairseq = importlib.util.find_spec('fairseq_cli') is None


def needs_fairseq(test):
    """The test runs fairseq-preprocess in a subprocess."""
    test = pytest.mark.skipif(_no_fairseq, reason='fairseq is not installed')(test)
    return pytest.mark.e2e(test)


def run(script, *args, **env):
    """Runs scripts/data/<script> with the venv of this python first on PATH."""
    e = dict(os.environ)
    e.pop('FAIRSEQ_PREPROCESS', None)
    e.pop('FORCE', None)
    e.update(PATH=f'{BIN}{os.pathsep}{e.get("PATH", "")}', PYTHON=sys.executable,
             WORKERS='1')
    e.update({k: str(v) for k, v in env.items()})
    interpreter = sys.executable if script.endswith('.py') else 'bash'
    cmd = [interpreter, str(SCRIPTS / script), *map(str, args)]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300)


def ok(res):
    assert res.returncode == 0, f'rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}'
    return res


def failed(res, *needles):
    assert res.returncode != 0, f'expected a failure\nstderr:\n{res.stderr}'
    for n in needles:
        assert str(n) in res.stderr, f'{n!r} not in stderr:\n{res.stderr}'
    assert 'Traceback' not in res.stderr, res.stderr


def read_dict(path):
    """fairseq dict.txt -> the full symbol list (specials first) and the padding count."""
    words = [line.rsplit(' ', 1)[0] for line in Path(path).read_text('utf-8').splitlines()]
    return FAIRSEQ_SPECIALS + words, sum(w.startswith('madeupword') for w in words)


def read_binarized(prefix):
    """fairseq mmap dataset (prefix.idx/.bin) -> list of token-id lists, one per line."""
    codes = {1: 'B', 8: 'H', 9: 'I', 4: 'i', 5: 'q'}
    with open(f'{prefix}.idx', 'rb') as f:
        assert f.read(9) == b'MMIDIDX\x00\x00'
        assert struct.unpack('<Q', f.read(8)) == (1,)
        (code,) = struct.unpack('<B', f.read(1))
        (n,) = struct.unpack('<Q', f.read(8))
        sizes = array.array('i')
        sizes.frombytes(f.read(4 * n))
    tokens = array.array(codes[code])
    tokens.frombytes(Path(f'{prefix}.bin').read_bytes())
    if sys.byteorder != 'little':
        sizes.byteswap()
        tokens.byteswap()
    assert sum(sizes) == len(tokens)
    out, pos = [], 0
    for s in sizes:
        out.append(tokens[pos:pos + s].tolist())
        pos += s
    return out


def decode_words(databin, split):
    symbols, _ = read_dict(Path(databin) / 'dict.txt')
    return [[symbols[i] for i in line] for line in read_binarized(Path(databin) / split)]


def decode_chars(databin, split):
    """Binarized char data -> bytes; </s> becomes the newline, <unk> becomes b'?'."""
    out = bytearray()
    for line in decode_words(databin, split):
        assert line[-1] == '</s>' and '</s>' not in line[:-1]
        out += bytes(63 if s == '<unk>' else int(s) for s in line[:-1]) + b'\n'
    return bytes(out)


def padded(n_words):
    """Number of madeupword entries fairseq adds to reach a multiple of 8."""
    return -(n_words + 4) % 8


# ---------------------------------------------------------------------------
# text_to_chars.py

def test_text_to_chars_format_and_round_trip(tmp_path):
    # every byte value, empty lines, CR, invalid UTF-8, no final newline
    data = (b'Ab\n\nc \r\n' + bytes(range(256)) + b'\n\xff\xfe\n' + 'héllo—'.encode() + b'\nend')
    src, enc, dec = tmp_path / 'in.txt', tmp_path / 'chars.txt', tmp_path / 'back.txt'
    src.write_bytes(data)
    ok(run('text_to_chars.py', '--input', src, '--output', enc))
    lines = enc.read_bytes().split(b'\n')
    assert lines[:3] == [b'65 98', b'', b'99 32 13']
    assert not enc.read_bytes().endswith(b'\n')  # mirrors the input
    assert len(lines) == data.count(b'\n') + 1
    assert [int(t) for t in lines[3].split()] == list(range(10))  # byte 10 is the line break
    assert [int(t) for t in lines[4].split()] == list(range(11, 256))
    assert lines[5] == b'255 254'
    ok(run('text_to_chars.py', '--decode', '--input', enc, '--output', dec))
    assert dec.read_bytes() == data

    src.write_bytes(data + b'\n')
    ok(run('text_to_chars.py', '--input', src, '--output', enc))
    assert enc.read_bytes().endswith(b'\n')
    ok(run('text_to_chars.py', '--decode', '--input', enc, '--output', dec))
    assert dec.read_bytes() == data + b'\n'


def test_text_to_chars_errors(tmp_path):
    missing = tmp_path / 'nope.txt'
    failed(run('text_to_chars.py', '--input', missing, '--output', tmp_path / 'o'), missing)
    (tmp_path / 'x.txt').write_bytes(b'ab\n')
    failed(run('text_to_chars.py', '--input', tmp_path / 'x.txt',
               '--output', tmp_path / 'no' / 'dir' / 'o'), tmp_path / 'no' / 'dir')
    (tmp_path / 'bad.txt').write_bytes(b'65 256\n')
    failed(run('text_to_chars.py', '--decode', '--input', tmp_path / 'bad.txt',
               '--output', tmp_path / 'o'), 'bad.txt:1', '256')
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'o.tmp').exists()


def test_data_utils_head_and_vocab(tmp_path):
    src = tmp_path / 'in.txt'
    src.write_bytes(b'aaaa\nbb\ncccccc\nd\n')
    for n, want in [(1, b'aaaa\n'), (5, b'aaaa\n'), (7, b'aaaa\n'), (8, b'aaaa\nbb\n'),
                    (100, b'aaaa\nbb\ncccccc\nd\n')]:
        ok(run('data_utils.py', 'head', '--input', src, '--output', tmp_path / 'o',
               '--max-bytes', n))
        assert (tmp_path / 'o').read_bytes() == want, n
    vocab = tmp_path / 'vocab.txt'
    vocab.write_text('<S> 0\n</S> 30\n<UNK> 0\nthe 50\n, 40\nnew\n', 'utf-8')
    ok(run('data_utils.py', 'vocab-to-dict', '--input', vocab, '--output', tmp_path / 'd'))
    assert (tmp_path / 'd').read_text('utf-8') == 'the 50\n, 40\nnew 0\n'
    vocab.write_text('a 3\nb 2\na 1\n', 'utf-8')
    failed(run('data_utils.py', 'vocab-to-dict', '--input', vocab, '--output', tmp_path / 'd'),
           f'{vocab}:3', 'duplicate')


# ---------------------------------------------------------------------------
# prepare_demo.sh

@needs_fairseq
def test_prepare_demo(tmp_path):
    import lzma
    full = {s: lzma.decompress((REPO / 'data/demo' / f'{s}.txt.xz').read_bytes())
            for s in ('train', 'valid', 'test')}
    assert len(full['train']) == 4_999_409 and len(full['valid']) == 298_715
    assert len(full['test']) == 298_409
    out = tmp_path / 'demo'
    res = ok(run('prepare_demo.sh', out, DEMO_TRAIN_BYTES=20000))
    train = (out / 'raw/train.txt').read_bytes()
    assert 0 < len(train) <= 20000 and train.endswith(b'\n')
    assert full['train'].startswith(train)
    assert len(train) + full['train'][len(train):].index(b'\n') + 1 > 20000  # longest prefix
    for s in ('valid', 'test'):
        assert (out / f'raw/{s}.txt').read_bytes() == full[s]
    for s in ('train', 'valid', 'test'):
        raw = (out / f'raw/{s}.txt').read_bytes()
        assert (out / f'text/{s}.txt').read_bytes().count(b'\n') == raw.count(b'\n')
    symbols, pad = read_dict(out / 'data-bin/dict.txt')
    assert len(symbols) - 4 - pad == len(set(train) - {10}) and len(symbols) % 8 == 0
    assert decode_chars(out / 'data-bin', 'train') == train
    valid = decode_chars(out / 'data-bin', 'valid')
    assert len(valid) == len(full['valid'])
    assert valid.count(b'\n') == full['valid'].count(b'\n')
    assert 'skip:' not in res.stderr

    # idempotent: a rerun skips every step and leaves the files alone
    mtime = (out / 'data-bin/train.bin').stat().st_mtime_ns
    t0 = time.time()
    res = ok(run('prepare_demo.sh', out, DEMO_TRAIN_BYTES=20000))
    assert res.stderr.count('skip:') == 3 and time.time() - t0 < 5
    assert (out / 'data-bin/train.bin').stat().st_mtime_ns == mtime

    failed(run('prepare_demo.sh', out, DEMO_TRAIN_BYTES='5MB'), 'DEMO_TRAIN_BYTES')


@needs_fairseq
def test_prepare_demo_twice_at_once(tmp_path):
    """Two comparisons sharing a cache prepare the same folder at the same time: one waits for the
    other (a lock on the folder) instead of both writing, and deleting, the same .tmp folders."""
    out = tmp_path / 'demo'
    env = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ.get("PATH", "")}',
               PYTHON=sys.executable, WORKERS='1', DEMO_TRAIN_BYTES='20000')
    cmd = ['bash', str(SCRIPTS / 'prepare_demo.sh'), str(out)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0, err
    # one did the work; the other waited, found every step up to date and skipped it
    assert sorted(err.count('skip:') for _, err in results) == [0, 3], results
    assert (out / 'data-bin/dict.txt').is_file() and not list(out.glob('*.tmp'))


# ---------------------------------------------------------------------------
# prepare_enwik8.sh

ENWIK8_ENV = dict(ENWIK8_EXPECTED_BYTES=30000, ENWIK8_VALID_BYTES=3000, ENWIK8_TEST_BYTES=3000)


def fake_enwik8(path):
    rng = random.Random(8)
    words = [bytes(rng.randrange(97, 123) for _ in range(rng.randint(1, 9))) for _ in range(400)]
    data = bytearray(b'<mediawiki>\n')
    while len(data) < 30000:
        data += rng.choice(words)
        r = rng.random()
        data += b'\n' if r < 0.04 else b'\n\n' if r < 0.05 else b' '
        if rng.random() < 0.02:
            data += 'é—'.encode() if rng.random() < 0.5 else bytes([rng.randrange(128, 256)])
    data = bytes(data[:29993]) + b'\x01~\n\nxyz'  # bytes 1 and 126 only in test
    assert len(data) == 30000 and data.count(b'\x01') == 1
    path.write_bytes(data)
    return data


@needs_fairseq
def test_prepare_enwik8(tmp_path):
    data = fake_enwik8(tmp_path / 'enwik8')
    with zipfile.ZipFile(tmp_path / 'enwik8.zip', 'w', zipfile.ZIP_DEFLATED) as z:
        z.write(tmp_path / 'enwik8', 'enwik8')
    out = tmp_path / 'out'
    res = ok(run('prepare_enwik8.sh', tmp_path / 'enwik8.zip', out, **ENWIK8_ENV))
    parts = {'train': data[:24000], 'valid': data[24000:27000], 'test': data[27000:]}
    for s, part in parts.items():
        assert (out / f'text/{s}.txt.raw').read_bytes() == part
        text = (out / f'text/{s}.txt').read_bytes()
        assert text.count(b'\n') == part.count(b'\n')
        assert len(text.split(b'\n')) == part.count(b'\n') + 1
        toks = [int(t) for t in text.split()]
        assert toks == [b for b in part if b != 10]
        # one symbol per byte; a split without a final newline gets one extra </s>
        want = part if part.endswith(b'\n') else part + b'\n'
        got = decode_chars(out / 'data-bin', s)
        if s == 'train':
            assert got == want
        else:  # bytes unseen in train are <unk>
            assert len(got) == len(want)
    assert decode_chars(out / 'data-bin', 'test').count(b'?') >= 2
    symbols, pad = read_dict(out / 'data-bin/dict.txt')
    assert sorted(symbols[4:len(symbols) - pad], key=int) == \
        [str(b) for b in sorted(set(parts['train']) - {10})]
    assert pad == padded(len(set(parts['train']) - {10})) and len(symbols) % 8 == 0
    assert 'bytes only in valid/test: [1, 126' in res.stderr
    # the plain file (found in a folder) gives the same text
    out2 = tmp_path / 'out2'
    ok(run('prepare_enwik8.sh', tmp_path, out2, BINARIZE=0, **ENWIK8_ENV))
    for s in parts:
        assert (out2 / f'text/{s}.txt').read_bytes() == (out / f'text/{s}.txt').read_bytes()
    assert not (out2 / 'data-bin').exists()


def test_prepare_enwik8_bad_input(tmp_path):
    data = fake_enwik8(tmp_path / 'enwik8')
    out = tmp_path / 'out'
    missing = tmp_path / 'missing' / 'enwik8.zip'
    failed(run('prepare_enwik8.sh', missing, out, **ENWIK8_ENV), missing, 'wget')
    # the real size check (no override)
    failed(run('prepare_enwik8.sh', tmp_path / 'enwik8', out), tmp_path / 'enwik8', '100000000')
    short = tmp_path / 'short'
    short.write_bytes(data[:29000])
    failed(run('prepare_enwik8.sh', short, out, **ENWIK8_ENV), short, '29000', '30000')
    with zipfile.ZipFile(tmp_path / 'enwik8.zip', 'w', zipfile.ZIP_DEFLATED) as z:
        z.write(tmp_path / 'enwik8', 'enwik8')
    zbytes = (tmp_path / 'enwik8.zip').read_bytes()
    trunc = tmp_path / 'trunc.zip'
    trunc.write_bytes(zbytes[:len(zbytes) // 2])
    failed(run('prepare_enwik8.sh', trunc, out, **ENWIK8_ENV), trunc, 'truncated')
    corrupt = tmp_path / 'corrupt.zip'
    corrupt.write_bytes(zbytes[:300] + bytes(b ^ 0x55 for b in zbytes[300:340]) + zbytes[340:])
    failed(run('prepare_enwik8.sh', corrupt, out, **ENWIK8_ENV), corrupt)
    failed(run('prepare_enwik8.sh', tmp_path / 'enwik8', out, ENWIK8_EXPECTED_BYTES=30000,
               ENWIK8_VALID_BYTES=20000, ENWIK8_TEST_BYTES=10000), 'too small')
    assert not (out / 'text').exists() and not (out / 'text.tmp').exists()


# ---------------------------------------------------------------------------
# prepare_wikitext103.sh

def fake_wikitext(folder, n_lines=(300, 30, 40)):
    rng = random.Random(103)
    vocab = [f'w{i}' for i in range(500)] + ['<unk>', ',', '.', '@-@', 'The']
    folder.mkdir(parents=True)
    files = {}
    for split, n in zip(('train', 'valid', 'test'), n_lines):
        lines = []
        for i in range(n):
            r = rng.random()
            if r < 0.3:
                lines.append('')
            elif r < 0.4:
                lines.append(f' = {rng.choice(vocab)} = ')
            else:
                k = rng.randint(1, 30)
                lines.append(' ' + ' '.join(rng.choice(vocab) for _ in range(k)) + ' ')
        text = '\n'.join(lines) + '\n'
        (folder / f'wiki.{split}.tokens').write_text(text, 'utf-8')
        files[split] = text
    return files


@needs_fairseq
def test_prepare_wikitext103(tmp_path):
    files = fake_wikitext(tmp_path / 'wikitext-103')
    zpath = tmp_path / 'wikitext-103-v1.zip'
    with zipfile.ZipFile(zpath, 'w', zipfile.ZIP_DEFLATED) as z:
        for s in files:
            z.write(tmp_path / 'wikitext-103' / f'wiki.{s}.tokens', f'wikitext-103/wiki.{s}.tokens')
    out = tmp_path / 'out'
    ok(run('prepare_wikitext103.sh', zpath, out, WT103_EXPECTED_LINES='300 30 40'))
    types = set(files['train'].split()) - {'<unk>'}
    for s, text in files.items():
        assert (out / f'text/{s}.txt').read_text('utf-8') == text
        # one </s> per line, empty lines included; words unseen in train -> <unk>
        assert decode_words(out / 'data-bin', s) == \
            [[w if w in types else '<unk>' for w in line.split()] + ['</s>']
             for line in text.splitlines()]
    symbols, pad = read_dict(out / 'data-bin/dict.txt')
    assert set(symbols[4:len(symbols) - pad]) == types and pad == padded(len(types))


def test_prepare_wikitext103_bad_input(tmp_path):
    folder = tmp_path / 'wikitext-103'
    fake_wikitext(folder)
    out = tmp_path / 'out'
    # the real line counts (no override) reject the small files
    failed(run('prepare_wikitext103.sh', folder, out), 'wiki.train.tokens', '1801350')
    failed(run('prepare_wikitext103.sh', folder, out, WT103_EXPECTED_LINES='300 31 40'),
           'wiki.valid.tokens', 'expected 31')
    (folder / 'wiki.test.tokens').unlink()
    failed(run('prepare_wikitext103.sh', folder, out, WT103_EXPECTED_LINES='none'),
           folder / 'wiki.test.tokens')
    (folder / 'wiki.test.raw').write_text('x\n')
    failed(run('prepare_wikitext103.sh', folder, out, WT103_EXPECTED_LINES='none'), 'raw')
    missing = tmp_path / 'wikitext-103-v1.zip'
    failed(run('prepare_wikitext103.sh', missing, out), missing)
    bad = tmp_path / 'bad.zip'
    bad.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    failed(run('prepare_wikitext103.sh', bad, out, WT103_EXPECTED_LINES='none'), bad)
    assert not (out / 'text').exists() and not (out / 'text.tmp').exists()


# ---------------------------------------------------------------------------
# prepare_lm1b.sh

R13 = '1-billion-word-language-modeling-benchmark-r13output'


def fake_lm1b(root, n_shards=3):
    rng = random.Random(1)
    vocab = [f'w{i}' for i in range(60)] + ['the', ',', '.', '"']
    base = root / R13
    train_dir = base / 'training-monolingual.tokenized.shuffled'
    held_dir = base / 'heldout-monolingual.tokenized.shuffled'
    train_dir.mkdir(parents=True)
    held_dir.mkdir(parents=True)

    def sents(n):
        return ''.join(' '.join(rng.choice(vocab) for _ in range(rng.randint(2, 12))) + '\n'
                       for _ in range(n))

    shards = {}
    for i in range(n_shards, 0, -1):  # created out of order on purpose
        name = f'news.en-{i:05d}-of-00100'
        shards[name] = sents(40)
        (train_dir / name).write_text(shards[name], 'utf-8')
    held = {}
    for i in range(2):
        held[i] = sents(15)
        (held_dir / f'news.en.heldout-{i:05d}-of-00050').write_text(held[i], 'utf-8')
    train = ''.join(shards[k] for k in sorted(shards))
    return base, train, held


@needs_fairseq
def test_prepare_lm1b(tmp_path):
    base, train, held = fake_lm1b(tmp_path / 'lm1b')
    out = tmp_path / 'out'
    ok(run('prepare_lm1b.sh', tmp_path / 'lm1b', out, LM1B_EXPECTED_SHARDS=3))  # parent folder
    assert (out / 'text/train.txt').read_text('utf-8') == train
    assert (out / 'text/valid.txt').read_text('utf-8') == held[0]
    assert (out / 'text/test.txt').read_text('utf-8') == held[0]
    counts = Counter(train.split())
    kept = {w for w, c in counts.items() if c >= 3}
    symbols, pad = read_dict(out / 'data-bin/dict.txt')
    assert set(symbols[4:len(symbols) - pad]) == kept and pad == padded(len(kept))
    assert decode_words(out / 'data-bin', 'test') == \
        [[w if w in kept else '<unk>' for w in line.split()] + ['</s>']
         for line in held[0].splitlines()]

    # with the authors' vocabulary file
    vocab = tmp_path / '1b_word_vocab.txt'
    words = [w for w, _ in counts.most_common()][:40]
    vocab.write_text('<S> 0\n</S> 120\n<UNK> 0\n'
                     + ''.join(f'{w} {counts[w]}\n' for w in words), 'utf-8')
    out2 = tmp_path / 'out2'
    ok(run('prepare_lm1b.sh', base, out2, LM1B_EXPECTED_SHARDS=3, LM1B_VOCAB=vocab,
           LM1B_VALID='news.en.heldout-00001-of-00050'))
    assert (out2 / 'text/valid.txt').read_text('utf-8') == held[1]
    assert (out2 / 'text/test.txt').read_text('utf-8') == held[0]
    assert (out2 / 'text/1b_word_vocab.txt').read_bytes() == vocab.read_bytes()
    symbols, pad = read_dict(out2 / 'data-bin/dict.txt')
    assert pad == 0 and symbols == FAIRSEQ_SPECIALS + words  # order kept, no padding
    got = decode_words(out2 / 'data-bin', 'train')
    assert got == [[w if w in words else '<unk>' for w in line.split()] + ['</s>']
                   for line in train.splitlines()]


def test_prepare_lm1b_bad_input(tmp_path):
    base, _, _ = fake_lm1b(tmp_path / 'lm1b')
    out = tmp_path / 'out'
    failed(run('prepare_lm1b.sh', base, out), 'has 3 training shards, expected 99')
    failed(run('prepare_lm1b.sh', tmp_path / 'nope', out), tmp_path / 'nope')
    tgz = tmp_path / f'{R13}.tar.gz'
    tgz.write_bytes(b'')
    failed(run('prepare_lm1b.sh', tgz, out), 'tar xzf')
    failed(run('prepare_lm1b.sh', base, out, LM1B_EXPECTED_SHARDS=3,
               LM1B_VOCAB=tmp_path / 'no_vocab.txt'), tmp_path / 'no_vocab.txt')
    (base / 'training-monolingual.tokenized.shuffled/news.en-00002-of-00100').write_bytes(b'')
    failed(run('prepare_lm1b.sh', base, out, LM1B_EXPECTED_SHARDS=3), 'news.en-00002-of-00100')
    held = base / 'heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050'
    held.unlink()
    failed(run('prepare_lm1b.sh', base, out, LM1B_EXPECTED_SHARDS=3), held)
    assert not (out / 'text').exists()
