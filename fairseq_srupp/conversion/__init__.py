"""Convert an SRU++ language-model checkpoint of the authors (asappresearch/sru,
experiments/srupp_experiments: enwik8, WikiText-103, Billion Word) into a fairseq checkpoint of
the `srupp_lm` model of fairseq_srupp.

    srupp-convert-checkpoint --src wt103_large.pt --src-vocab wt103_vocab.txt \\
        --dict data-bin/wikitext-103/dict.txt --arch srupp_lm_wiki103_large_txl --out srupp.pt
    fairseq-eval-lm data-bin/wikitext-103 --path srupp.pt --user-dir fairseq_srupp ...

Architectures: enwik8 -> srupp_lm_enwik8_base / srupp_lm_enwik8_large (plain embedding and output
layer); WikiText-103 -> srupp_lm_wiki103_{base,large,large_k5}_txl; Billion Word ->
srupp_lm_lm1b_{base,large}_txl (Transformer-XL style adaptive input/softmax). Other sizes:
--model-overrides '{"hidden_dim": 16, ...}' (any srupp_lm option; applied after the arch).

--src: the authors' state_dict (torch.load(weights_only=True)), or a dict holding it under
'model' or 'state_dict'; a 'module.' prefix on every key is removed.
--src-vocab: the authors' symbols in id order, one per line ("symbol" or "symbol count"; the
first field is used). For enwik8 the symbols are the byte values as decimal strings in
increasing order (np.unique over the file), e.g. "9", "10", "32", ...
--dict: the fairseq dictionary (dict.txt; fairseq adds <s>, <pad>, </s>, <unk> as ids 0-3).

What is mapped (SPEC.md 1.10):
  rnn.rnn_lst.{i}.weight_c / bias          -> decoder.layers.{i}.weight_c / bias (same layout)
  rnn.rnn_lst.{i}.scale_x                  dropped (must be 1.0: rescale=False)
  ...transform_module.{alpha, linear1, linear2, layer_norm}  -> decoder.layers.{i}.transform.*
  ...transform_module.linear3 (attention) / linear2 (projected): the authors' U rows are
      interleaved per unit (j*3 + m); ours are planes (m*d + j): new[m*d + j] = old[j*3 + m]
  rnn.rnn_lst.{i}.layer_norm.*             -> decoder.layers.{i}.layer_norm.* (cell LN, if used)
  enwik8: embedding_layer.weight, output_layer.{weight,bias}
      -> decoder.embed_tokens.weight, decoder.output_projection.{weight,bias}, rows reordered
  TXL: output_layer.out_layers.{c}.{weight,bias} -> decoder.txl_softmax.out_layers.{c}.* and the
      tied tables decoder.embed_tokens.emb_layers.{c}; output_layer.out_projs.{c} ->
      decoder.txl_softmax.out_projs.{c} (and decoder.embed_tokens.emb_projs.{c} when tied);
      embedding_layer.emb_projs.{c}: with tied projections (WikiText-103) a duplicate that must
      equal out_projs.{c} and is dropped; untied (Billion Word) -> decoder.embed_tokens.emb_projs.

Symbols. Authors' and fairseq symbols are matched by name, except: fairseq's end-of-line </s> is
the authors' --eos-symbol (default: "10", the newline byte, for enwik8; else the first of
<eos>, <S>, </s> in --src-vocab) and fairseq's <unk> is the authors' --unk-symbol (default:
<unk> or <UNK> if present).
  * Fairseq symbols without an authors' symbol (<s>, <pad>, madeupword*, <unk> if unmatched) are
    embedded as zeros and get a log-probability of about -1e4: enwik8 output rows get weight 0
    and bias -1e4 (exp underflows to exactly 0, so the other symbols' log-probs are unchanged);
    the TXL layers return UNMAPPED_LOG_PROB (-1e4) for them.
  * Authors' symbols missing from --dict: when exactly one is missing and fairseq's <unk> has
    no authors' symbol, it becomes <unk> (this is what fairseq-preprocess turned it into, e.g.
    an enwik8 byte that is not in train). Otherwise, with the TXL layout they keep their rows
    but no dictionary id reaches them: every other symbol keeps its exact log-probability and
    their mass is unreachable (a warning; e.g. </S> of Billion Word, whose vocab-to-dict
    dictionary drops it). With the enwik8 layout this is an error unless
    --allow-missing-symbols, which drops their rows (the softmax then renormalises).
The TXL rows are not reordered: a cluster holds fixed authors' ids, and a dictionary sorted by
fairseq (count, then alphabetically) does not keep every cluster contiguous. Instead the
converted model keeps the authors' ids (txl_vocab_size = the authors' vocabulary size) and a
token_map buffer from dictionary ids to them.

The output is a fairseq checkpoint whose cfg comes from fairseq's own option parser (--arch,
--task, --user-dir), so fairseq-eval-lm, fairseq-interactive and the hub API load it with
--user-dir pointing at fairseq_srupp. cfg.task.data is --data (default: the folder of --dict).
Errors (exit status 1) name the option to fix: unknown/missing/misshapen keys, an --arch whose
sizes differ from the checkpoint, a --src-vocab of the wrong size.

Modules: authors (reading the authors' state_dict and vocabulary), target (the fairseq config of
--arch and the size checks against the checkpoint), symbols (dictionary ids -> authors' ids),
mapping (the authors' tensors -> our state_dict), checkpoint (convert: all of it, written as a
fairseq checkpoint), cli (the command line: srupp-convert-checkpoint,
scripts/tools/convert_sru_checkpoint.py).
"""
from .checkpoint import convert
from .errors import ConversionError

__all__ = ["ConversionError", "convert"]
