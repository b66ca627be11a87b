"""The byte codec (UTF-8 text <-> enwik8-format symbols) and its fairseq BPE `srupp_bytes`."""
import importlib.util
import random
import sys

import pytest

from conftest import REPO
from fairseq_srupp.encoders import byte_codec, text_encoding

spec = importlib.util.spec_from_file_location("text_to_chars",
                                              REPO / "scripts" / "data" / "text_to_chars.py")
text_to_chars = importlib.util.module_from_spec(spec)
spec.loader.exec_module(text_to_chars)

ALPHABET = "aZ \t.,\n\n" + "é" + "ß" + "€" + "漢" + "😀" + "\u0301" + "\r"


def random_texts(count=200, seed=0):
    rng = random.Random(seed)
    texts = ["", "\n", "\n\n", "a\n\nb", "ends with newline\n", "\n starts", "é漢😀"]
    for _ in range(count):
        texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))))
    return texts


def test_round_trip_on_arbitrary_utf8():
    for text in random_texts():
        symbols = byte_codec.encode_text(text)
        assert byte_codec.decode_symbols(symbols) == text
        assert all(byte_codec.is_byte_symbol(s) or s == "</s>" for s in symbols.split())
        assert symbols.split().count("</s>") == text.count("\n")


def test_same_symbols_as_the_data_converter():
    """Each line encodes to what scripts/data/text_to_chars.py writes for it, so prompts and
    scored text meet the dictionary of the converted training data."""
    for text in random_texts(50, seed=1):
        for line in text.split("\n"):
            assert byte_codec.encode_line(line) == \
                text_to_chars.encode_line(line.encode("utf-8")).decode("ascii")


def test_truncated_sequences_decode():
    """A sample cut anywhere (inside a multi-byte character too) decodes to the text's whole
    characters before the cut, plus one U+FFFD for a cut character."""
    for text in random_texts(50, seed=2):
        symbols = byte_codec.encode_text(text).split()
        data = text.encode("utf-8")
        for cut in range(len(symbols) + 1):
            decoded = byte_codec.decode_symbols(symbols[:cut])
            whole = data[:cut].decode("utf-8", errors="ignore")
            assert decoded in (whole, whole + byte_codec.REPLACEMENT)
            assert text.startswith(whole)


def test_invalid_bytes_and_unknown_symbols_are_marked_not_dropped():
    assert byte_codec.decode_symbols("104 255 105") == "h\ufffdi"
    data, unknown = byte_codec.symbols_to_bytes("104 <unk> 105 madeupword0001")
    assert data.decode("utf-8") == "h\ufffdi\ufffd"
    assert unknown == ["<unk>", "madeupword0001"]


def test_byte_vocabulary_detection():
    assert text_encoding.is_byte_vocabulary(["<s>", "<pad>", "</s>", "<unk>", "32", "101",
                                             "madeupword0000"])
    assert not text_encoding.is_byte_vocabulary(["<s>", "</s>", "32", "the"])
    assert not text_encoding.is_byte_vocabulary(["<s>", "</s>", "256"])
    assert not text_encoding.is_byte_vocabulary(["<s>", "</s>"])


def test_registered_as_fairseq_bpe():
    pytest.importorskip("fairseq")
    from fairseq.data import encoders
    from omegaconf import OmegaConf

    import fairseq_srupp  # noqa: F401  (registers srupp_bytes)

    bpe = encoders.build_bpe(OmegaConf.create({"_name": "srupp_bytes"}))
    assert bpe.encode("Hé\nx") == "72 195 169 </s> 120"
    assert bpe.decode("72 195 169") == "Hé"


def test_codec_imports_neither_torch_nor_fairseq():
    """The runtime without torch can reuse the module: it is loaded here on its own."""
    code = ("import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('c', {str(REPO / 'fairseq_srupp' / 'encoders' / 'byte_codec.py')!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "assert m.decode_symbols(m.encode_text('é\\n')) == 'é\\n'; "
            "assert 'torch' not in sys.modules and 'fairseq' not in sys.modules")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", ["srupp-prepare-text", "srupp-sample"])
def test_console_entry_points_have_help(command, capsys):
    """setup.py's console scripts name the package's command lines, each with --help."""
    import importlib
    import re

    target = re.search(rf'"{command} = ([\w.]+):(\w+)"', (REPO / "setup.py").read_text())
    main = getattr(importlib.import_module(target.group(1)), target.group(2))
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and f"usage: {command}" in capsys.readouterr().out
