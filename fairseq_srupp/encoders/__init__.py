"""Text <-> symbols for SRU++ models: the byte mapping of character-level data (byte_codec, no
torch or fairseq import), the word-level Moses + subword-nmt pipeline (word_codec), and the
description of a data folder's text encoding (text_encoding). `srupp_bytes` registers the byte
mapping as a fairseq BPE (`--bpe srupp_bytes`); fairseq_srupp/__init__.py imports it."""
