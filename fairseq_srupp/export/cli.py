"""`srupp-export CKPT DIR --data DATA`: export a trained SRU++ LM for serving.

Writes into DIR:
    step.onnx      one generation step with static shapes (STEP_INPUTS -> STEP_OUTPUTS)
    step.pt2       the same step as a torch.export program (torch.export.load)   [unless --no-pt2]
    scorer.pt2     the full-sequence scorer, batch and length symbolic           [unless --no-pt2]
    symbols.txt    the dictionary's symbols in id order, one per line
    manifest.json  files, encoder, special ids, shapes and the attention window
`srupp_runtime.load(DIR)` serves it with onnxruntime and numpy only.
"""
import argparse
import json
import logging
import os
from typing import List, Optional

import torch

from .exporters import ONNX_OPSET, export_scorer, export_step, export_step_onnx
from .scorer import SRUppScorer
from .step import STEP_INPUTS, STEP_OUTPUTS, SRUppStep

MANIFEST_FORMAT = "srupp-export"
MANIFEST_VERSION = 1
ENCODERS = ("auto", "bytes", "words")
# ONNX files keep weights inline below protobuf's 2 GiB limit; bigger models write external data
INLINE_WEIGHT_BYTES = 1 << 30
PADDING_SYMBOL = "madeupword"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="srupp-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="fairseq checkpoint of an srupp_lm (checkpoint_best.pt)")
    parser.add_argument("out_dir", help="folder to write (created; existing files are replaced)")
    parser.add_argument("--data", required=True,
                        help="the fairseq-preprocess folder the model was trained on (dict.txt)")
    parser.add_argument("--encoder", choices=ENCODERS, default="auto",
                        help="how the runtime turns text into symbols: bytes (enwik8-format "
                             "decimal byte symbols, newline = </s>), words (whitespace-separated "
                             "symbols, newline = </s>; text must already be tokenized as the "
                             "training data), auto = bytes when every symbol is a byte value")
    parser.add_argument("--window", type=int, default=None,
                        help="attention window of the step (earlier positions each query sees); "
                             "default: the checkpoint's attn_window, else its mem_len")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="fixed batch size of the exported step; 0 (default) = symbolic")
    parser.add_argument("--no-pt2", action="store_true",
                        help="write only the ONNX step (no torch.export programs)")
    args = parser.parse_args(argv)
    if args.window is not None and args.window <= 0:
        parser.error(f"--window must be positive, got {args.window}")
    if args.batch_size < 0:
        parser.error(f"--batch-size must be >= 0 (0 = symbolic), got {args.batch_size}")
    return args


def load_model(checkpoint: str, data: str):
    """(model in eval mode on the CPU in float32, its dictionary) of a fairseq checkpoint."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"srupp-export: no checkpoint file {checkpoint}")
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data})
    model = models[0]
    if not hasattr(model, "reset_stream_state"):
        raise ValueError(f"srupp-export exports srupp_lm checkpoints; {checkpoint} holds a "
                         f"{type(model).__name__}")
    return model.float().cpu().eval(), task.target_dictionary


def set_window(decoder, window: Optional[int]) -> None:
    """Make the decoder (and so the step) see `window` earlier positions."""
    if window is None:
        return
    from omegaconf import open_dict

    with open_dict(decoder.cfg):
        decoder.cfg.attn_window = window
        decoder.cfg.mem_len = window


def pick_encoder(choice: str, dictionary) -> str:
    from ..encoders.byte_codec import is_byte_symbol

    specials = {dictionary.bos_word, dictionary.pad_word, dictionary.eos_word, dictionary.unk_word}
    ordinary = [s for s in dictionary.symbols  # fairseq-preprocess pads with madeupwordNNNN
                if s not in specials and not s.startswith(PADDING_SYMBOL)]
    bytes_only = all(is_byte_symbol(s) for s in ordinary)
    if choice == "auto":
        return "bytes" if bytes_only else "words"
    if choice == "bytes" and not bytes_only:
        example = next(s for s in ordinary if not is_byte_symbol(s))
        raise ValueError(f"--encoder bytes needs a dictionary of byte symbols (0-255), but it "
                         f"has {example!r}: use --encoder words (or auto)")
    return choice


def write_export(model, dictionary, out_dir: str, encoder: str, batch_size: int = 0,
                 pt2: bool = True, checkpoint: str = "") -> dict:
    """Export `model` (eval mode) into out_dir; returns the manifest written there."""
    os.makedirs(out_dir, exist_ok=True)
    decoder = model.decoder
    step = SRUppStep(decoder)
    eos = dictionary.eos()
    dynamic = batch_size == 0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    files = {"step_onnx": "step.onnx", "symbols": "symbols.txt"}
    export_step_onnx(step, os.path.join(out_dir, files["step_onnx"]), eos, dynamic, batch_size,
                     external_data=params > INLINE_WEIGHT_BYTES)
    if pt2:
        files["step_torch_export"] = "step.pt2"
        files["scorer_torch_export"] = "scorer.pt2"
        torch.export.save(export_step(step, eos, dynamic, batch_size),
                          os.path.join(out_dir, files["step_torch_export"]))
        torch.export.save(export_scorer(SRUppScorer(decoder), eos),
                          os.path.join(out_dir, files["scorer_torch_export"]))
    with open(os.path.join(out_dir, files["symbols"]), "w", encoding="utf-8") as f:
        f.writelines(s + "\n" for s in dictionary.symbols)
    cfg = decoder.cfg
    c, kv, _ = step.initial_state(1)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "files": files,
        "encoder": encoder,
        "special_ids": {"bos": dictionary.bos(), "pad": dictionary.pad(), "eos": eos,
                        "unk": dictionary.unk()},
        "window": step.memory_len,
        "model": {"num_layers": cfg.num_layers, "hidden_dim": cfg.hidden_dim,
                  "proj_dim": cfg.proj_dim, "attention_heads": cfg.attention_heads,
                  "attention_layers": [i for i, a in enumerate(step.attention_flags) if a],
                  "mem_len": cfg.mem_len, "attn_window": cfg.attn_window,
                  "vocab_size": len(dictionary), "parameters": sum(
                      p.numel() for p in model.parameters())},
        "step": {
            "batch": "dynamic" if dynamic else batch_size,
            "onnx_opset": ONNX_OPSET,
            "inputs": {"tokens": ["batch", 1, "int64"],
                       "c": [*c.shape[:1], "batch", c.shape[2], "float32"],
                       "kv": [*kv.shape[:2], "batch", kv.shape[3], "float32"],
                       "position": [1, "int64"]},
            "outputs": dict(zip(STEP_OUTPUTS, ("(batch, vocab_size) float32 log-probs",
                                               "like c", "like kv", "position + 1"))),
            "input_order": list(STEP_INPUTS),
        },
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model, dictionary = load_model(args.checkpoint, args.data)
    set_window(model.decoder, args.window)
    encoder = pick_encoder(args.encoder, dictionary)
    manifest = write_export(model, dictionary, args.out_dir, encoder, args.batch_size,
                            not args.no_pt2, args.checkpoint)
    print(f"srupp-export: wrote {', '.join(manifest['files'].values())} and manifest.json to "
          f"{args.out_dir} (encoder {encoder}, window {manifest['window']}, "
          f"{manifest['model']['parameters']:,} parameters)")


if __name__ == "__main__":
    main()
