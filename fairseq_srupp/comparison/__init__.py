"""Equal-wall-clock comparison of SRU++ with fairseq's Transformer and LSTM language models.

Five models train one after another with the real `fairseq-train`, each for the same wall-clock
budget and the same tokens per update, on character-level (byte) data:

    a  srupp_k1      SRU++, attention in every layer (the paper's k=1)
    b  srupp_last    SRU++, attention only in the last layer (k = number of layers)
    c  srupp_noattn  SRU++ without attention
    d  transformer   fairseq `transformer_lm`, width chosen so its parameter count is within
                     10% of (a)'s
    e  lstm          fairseq `lstm_lm`, matched to (a) the same way

Each is then scored with `fairseq-eval-lm` on the test split; bits per character = fairseq's
base-2 loss, since every symbol is one byte (the newline is </s>). The output folder gets
results.json, results.csv, valid_bpc.png (validation bpc against wall-clock seconds), the logs
and the checkpoints, and a table is printed. The write-up of the setup is docs/comparison.md.

Protocol (the choices and why)
- SRU++ runs use the plugin's `srupp_stream_lm` task: B contiguous streams, state (c and the
  attention memory of --mem-len positions) carried from segment to segment, in training,
  validation and evaluation (the paper's protocol). The Transformer and the LSTM use fairseq's
  `language_modeling` task with `--sample-break-mode none`: shuffled blocks of T tokens, each
  starting from an empty context. Every model sees B x T tokens per update.
- Budget: `--stop-time-hours` (fairseq's trainer clock, which starts when the trainer is built,
  after the model and before the training data are loaded, and runs through validation), plus a
  watchdog here that kills a run that overshoots. Model building and process start-up are not
  counted; evaluation is separate.
- Validation during training runs every `valid_every` updates on `valid_small`, the first
  `valid_tokens` tokens of the validation split (whole lines, binarized with the training
  dictionary), so it costs a few percent of the budget and every model is scored on the same
  text. Its times are the seconds from the trainer's start to the end of each validation,
  stamped when fairseq logs the line (the json log's own `wall` field is only on training
  lines and rounded to whole seconds). The Transformer/LSTM curves score each block of T tokens
  from an empty context, the SRU++ curves carry the state over the 4 or so segments of each
  stream: the curves favour SRU++ a little; the test numbers do not (see next point).
- Test: SRU++ streams the whole test split in `--batch-size B` rows with its state carried.
  The Transformer and the LSTM are given a context window instead (`--context-window T/2` with
  `--tokens-per-sample T`): every scored token sees between T/2 and T-1 earlier tokens, and no
  input is longer than the training length T (the Transformer's limit).
- Optimiser: Adam (0.9, 0.98), eps 1e-8, no weight decay, gradient clipping 1.0, a linear
  warm-up over `warmup` updates and then a constant learning rate (a wall-clock budget has no
  known end for a decay schedule). Dropout: `dropout` of the size table for every dropout of
  every model (0 on CPU, where a few hundred updates are far from overfitting).
- Learning rates: one per model family (SRU++ a/b/c share one), picked with `--tune`: a sweep
  of 3 rates per family on models a, d and e, the lowest final `valid_small` bpc wins. Short
  sweeps favour high rates, so the best two were rerun at about half the full run's updates;
  LEARNING_RATES (models.py) records the numbers behind the defaults.

Sizes (SIZES in models.py): `cpu` (2-core laptop-class machine, budget 600 s), `cuda` (one GPU, budget
300 s, fp32 unless --amp) and `tiny` (CI smoke test). (d) and (e) are sized from (a)'s parameter
count by the formulas in models.py (the counts fairseq logs are reported and re-checked).

Usage
    python scripts/bench/compare_small.py --out runs/compare_cpu            # the demo corpus, CPU
    python scripts/bench/compare_small.py --data DIR --device cuda --out runs/compare_gpu
    python scripts/bench/compare_small.py --tune --max-update 480 --out runs/tune_cpu   # lr sweep
    python scripts/bench/compare_small.py --models a,d --budget-seconds 60 --out /tmp/quick

DIR is a folder with {train,valid,test}.txt in the character format of
scripts/data/text_to_chars.py, or the OUT_DIR of scripts/data/prepare_*.sh (with text/ and data-bin/).
Without --data the shipped demo corpus is prepared with scripts/data/prepare_demo.sh into --cache.

Modules: models (the size tables, the five models, their parameter counts and widths), commands
(the fairseq-train / fairseq-eval-lm command lines), runner (training under a watchdog, reading
fairseq's log, the test evaluation), data (the binarized folder with valid_small), reports
(results.json / .csv, the plot, the table), cli (the options and the run order; the command line
of scripts/bench/compare_small.py).
"""
