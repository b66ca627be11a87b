"""Configuration of the `srupp_lm` model and the checks that run before anything is built."""
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..modules import CELL_LAYER_NORM_CHOICES


@dataclass
class SRUppLMConfig(FairseqDataclass):
    """Defaults are the small `srupp_lm` architecture (trains on 2 CPU cores in minutes)."""

    hidden_dim: int = field(default=512, metadata={"help": "d: width of the recurrence and of the "
                                                           "embeddings (the paper's d, n_d)"})
    proj_dim: int = field(default=128, metadata={"help": "d': width of the attention / projection "
                                                         "inside each layer (the paper's d')"})
    num_layers: int = field(default=4, metadata={"help": "number of SRU++ layers"})
    attention_heads: int = field(default=1, metadata={"help": "attention heads (d' must be "
                                                               "divisible by it; the paper uses 1)"})
    attention_every: int = field(default=1, metadata={
        "help": "layer i (1-based) has attention iff i %% K == 0; 1 = every layer, "
                "num_layers = only the last, 0 = no attention"})
    attention_last: int = field(default=0, metadata={
        "help": "if > 0, attention in exactly the last N layers (overrides --attention-every)"})
    dropout: float = field(default=0.1, metadata={
        "help": "dropout on the embedding output, before each layer's output projection, in the "
                "recurrence (variational, all but the last layer) and before the output layer"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention "
                                                                    "probabilities"})
    embed_dropout: float = field(default=0.1, metadata={"help": "dropout on the embedding output "
                                                                "(the authors use --dropout)"})
    highway_bias: float = field(default=-2.0, metadata={"help": "initial bias of the reset "
                                                                "(highway) gate"})
    cell_layer_norm: ChoiceEnum(list(CELL_LAYER_NORM_CHOICES)) = field(default="none", metadata={
        "help": "cell-level layer norm: none (the authors' LMs), pre (on the transform input) or "
                "post (on the layer output)"})
    no_attn_layer_norm: bool = field(default=False, metadata={
        "help": "drop the layer norm inside the attention/projection transform"})
    mem_len: int = field(default=256, metadata={
        "help": "positions of earlier layer inputs kept as attention memory when the state is "
                "carried (stream task, generation); the authors use the segment length"})
    attn_window: int = field(default=0, metadata={
        "help": "in evaluation, each query attends to at most this many earlier positions (the "
                "authors' same-length eval mask, e.g. 3072 for enwik8); 0 = no limit. Needs "
                "mem_len >= attn_window when the state is carried"})
    carry_state: bool = field(default=True, metadata={
        "help": "carry c and attention memory across consecutive segments when the task marks "
                "them (srupp_stream_lm); set False (--model-overrides) for stateless evaluation"})
    share_input_output_embed: bool = field(default=False, metadata={
        "help": "tie the output layer's weights to the input embedding"})
    adaptive_input: bool = field(default=False, metadata={"help": "use fairseq's AdaptiveInput"})
    adaptive_input_dim: int = field(default=1024, metadata={
        "help": "width of the first adaptive-input band (the authors' n_e)"})
    adaptive_input_factor: float = field(default=4, metadata={"help": "adaptive input factor"})
    adaptive_input_cutoff: Optional[str] = field(default=None, metadata={
        "help": "comma separated adaptive input cutoffs, each below the vocabulary size"})
    adaptive_softmax_cutoff: Optional[str] = field(default=None, metadata={
        "help": "comma separated adaptive softmax cutoffs, each below the vocabulary size (use "
                "with --criterion adaptive_loss)"})
    adaptive_softmax_dropout: float = field(default=0.0, metadata={
        "help": "dropout inside the adaptive softmax tails"})
    adaptive_softmax_factor: float = field(default=4, metadata={"help": "adaptive softmax factor"})
    tie_adaptive_weights: bool = field(default=False, metadata={
        "help": "tie adaptive input and softmax embeddings (same cutoffs and factor needed)"})
    tie_adaptive_proj: bool = field(default=False, metadata={
        "help": "also tie the adaptive projections"})
    checkpoint_activations: bool = field(default=False, metadata={
        "help": "recompute each layer's activations in the backward pass to save memory"})
    offload_activations: bool = field(default=False, metadata={
        "help": "keep the saved layer inputs on the CPU; implies --checkpoint-activations (as in "
                "fairseq's own LMs)"})
    compile: bool = field(default=False, metadata={
        "help": "compile each SRU++ layer with torch.compile (inductor, fullgraph) on its first "
                "call: fused elementwise work around the matrix products and the recurrence op. "
                "The first segments (and the last short one, and validation) pay a compile of "
                "tens of seconds; fairseq-eval-lm takes it from the checkpoint (turn off with "
                "--model-overrides '{\"compile\": False}')"})
    txl_adaptive: bool = field(default=False, metadata={
        "help": "Transformer-XL style adaptive input and log-softmax, as in the authors' "
                "WikiText-103 / Billion Word models (head bias and cluster logits, per-cluster "
                "projections, tied tables); train with --criterion txl_adaptive_loss (or "
                "cross_entropy, slower). Not combinable with fairseq's --adaptive-* options"})
    txl_cutoffs: Optional[str] = field(default=None, metadata={
        "help": "comma separated cluster boundaries of --txl-adaptive, each below the vocabulary "
                "size (the authors: 19997,39997,199997 for WikiText-103, 59998,159998 for "
                "Billion Word); empty = one softmax over the whole vocabulary"})
    txl_embed_dim: int = field(default=1024, metadata={
        "help": "width of the head cluster's table with --txl-adaptive (the authors' n_e); "
                "cluster c has txl_embed_dim // txl_div_val**c"})
    txl_div_val: int = field(default=4, metadata={
        "help": "--txl-adaptive: each cluster's width is the previous one's divided by this"})
    txl_tie_proj: bool = field(default=False, metadata={
        "help": "--txl-adaptive: share the projections of the adaptive input and softmax "
                "(WikiText-103); the tables are always shared"})
    txl_dropout: float = field(default=0.0, metadata={
        "help": "--txl-adaptive: dropout on the low-dim embedding before its projection and on "
                "each projected hidden state in the softmax (the authors' emb_dropout)"})
    txl_vocab_size: int = field(default=0, metadata={
        "help": "--txl-adaptive: number of symbols of the adaptive layers; 0 = the dictionary's "
                "size (dictionary ids are used directly). A converted checkpoint "
                "(srupp-convert-checkpoint) sets the authors' vocabulary size and a "
                "token_map buffer from dictionary ids to the authors' ids"})
    check_finite: bool = field(default=False, metadata={
        "help": "debugging: raise FloatingPointError naming the first place (token embeddings or "
                "SRU++ layer i of n) whose output holds NaN or Inf, in every forward; costs one "
                "device sync per layer, so leave it off for normal runs (fairseq-eval-lm: "
                "--model-overrides '{\"check_finite\": True}')"})
    max_target_positions: Optional[int] = II("task.max_target_positions")


def parse_cutoffs(text: Optional[str], option: str, vocab_size: int) -> Optional[List[int]]:
    """'a,b,c' -> [a, b, c], checked to be increasing and below the vocabulary size."""
    if text is None or str(text).strip() == "":
        return None
    try:
        cutoffs = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--{option} must be comma separated integers, got {text!r}") from None
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) or cutoffs[0] <= 0:
        raise ValueError(f"--{option} must be positive and increasing, got {text!r}")
    if cutoffs[-1] >= vocab_size:
        raise ValueError(
            f"--{option} {text!r}: every cutoff must be below the vocabulary size ({vocab_size}); "
            f"lower the cutoffs or drop the option"
        )
    return cutoffs


def attention_layers(num_layers: int, every: int, last: int) -> List[bool]:
    """Which layers (0-based) get attention (SPEC.md section 1.4)."""
    if last > 0:
        return [num_layers - i <= last for i in range(num_layers)]
    if every == 0:
        return [False] * num_layers
    return [(i + 1) % every == 0 for i in range(num_layers)]


def validate_config(cfg, vocab_size: int) -> None:
    """Raise ValueError naming the option and the fix for every impossible setting."""
    def positive(name: str) -> None:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")

    for name in ("hidden_dim", "proj_dim", "num_layers", "attention_heads"):
        positive(name)
    if cfg.proj_dim % cfg.attention_heads != 0:
        raise ValueError(
            f"--proj-dim ({cfg.proj_dim}) must be divisible by --attention-heads "
            f"({cfg.attention_heads}); change one of them"
        )
    if not 0 <= cfg.attention_every <= cfg.num_layers:
        raise ValueError(
            f"--attention-every must be in [0, --num-layers={cfg.num_layers}] (0 = no attention), "
            f"got {cfg.attention_every}"
        )
    if not 0 <= cfg.attention_last <= cfg.num_layers:
        raise ValueError(
            f"--attention-last must be in [0, --num-layers={cfg.num_layers}], got {cfg.attention_last}"
        )
    for name in ("dropout", "attention_dropout", "embed_dropout", "adaptive_softmax_dropout"):
        p = getattr(cfg, name)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {p}")
    if cfg.mem_len < 0:
        raise ValueError(f"--mem-len must be >= 0 (earlier positions kept as attention memory; "
                         f"0 = none), got {cfg.mem_len}: pass --mem-len 0 or more")
    if cfg.attn_window < 0:
        raise ValueError(f"--attn-window must be >= 0 (0 = no limit), got {cfg.attn_window}")
    input_cutoffs = parse_cutoffs(cfg.adaptive_input_cutoff, "adaptive-input-cutoff", vocab_size)
    softmax_cutoffs = parse_cutoffs(cfg.adaptive_softmax_cutoff, "adaptive-softmax-cutoff",
                                    vocab_size)
    if cfg.adaptive_input and input_cutoffs is None:
        raise ValueError("--adaptive-input needs --adaptive-input-cutoff")
    if cfg.tie_adaptive_weights:
        if not (cfg.adaptive_input and softmax_cutoffs is not None):
            raise ValueError("--tie-adaptive-weights needs --adaptive-input and "
                             "--adaptive-softmax-cutoff")
        if input_cutoffs != softmax_cutoffs or cfg.adaptive_input_factor != cfg.adaptive_softmax_factor:
            raise ValueError("--tie-adaptive-weights needs equal adaptive input and softmax cutoffs "
                             "and factors")
    if cfg.share_input_output_embed and (cfg.adaptive_input or softmax_cutoffs is not None):
        raise ValueError("--share-input-output-embed ties a plain embedding and output layer; with "
                         "adaptive input/softmax use --tie-adaptive-weights instead")
    validate_txl_config(cfg, vocab_size)


def txl_vocab_size(cfg, dictionary_size: int) -> int:
    """Number of symbols the --txl-adaptive layers are built for."""
    return cfg.txl_vocab_size if cfg.txl_vocab_size > 0 else dictionary_size


def validate_txl_config(cfg, vocab_size: int) -> None:
    """Checks of the --txl-* options (only when --txl-adaptive is set)."""
    if not getattr(cfg, "txl_adaptive", False):  # also checkpoints older than the option
        return
    clashes = [name for name, on in (
        ("--adaptive-input", cfg.adaptive_input),
        ("--adaptive-softmax-cutoff", parse_cutoffs(cfg.adaptive_softmax_cutoff,
                                                    "adaptive-softmax-cutoff", vocab_size)
         is not None),
        ("--tie-adaptive-weights", cfg.tie_adaptive_weights),
        ("--share-input-output-embed", cfg.share_input_output_embed),
    ) if on]
    if clashes:
        raise ValueError(f"--txl-adaptive replaces fairseq's adaptive input/softmax and the plain "
                         f"output layer; drop {', '.join(clashes)}")
    if cfg.txl_vocab_size < 0:
        raise ValueError(f"--txl-vocab-size must be >= 0 (0 = the dictionary size), got "
                         f"{cfg.txl_vocab_size}")
    cutoffs = parse_cutoffs(cfg.txl_cutoffs, "txl-cutoffs", txl_vocab_size(cfg, vocab_size)) or []
    if cfg.txl_embed_dim <= 0:
        raise ValueError(f"--txl-embed-dim must be positive, got {cfg.txl_embed_dim}")
    if cfg.txl_div_val < 1:
        raise ValueError(f"--txl-div-val must be >= 1, got {cfg.txl_div_val}")
    smallest = cfg.txl_embed_dim // cfg.txl_div_val ** len(cutoffs)
    if smallest < 1:
        raise ValueError(
            f"--txl-embed-dim {cfg.txl_embed_dim} / --txl-div-val {cfg.txl_div_val} ** "
            f"{len(cutoffs)} clusters leaves a cluster of width 0; raise --txl-embed-dim, lower "
            f"--txl-div-val or use fewer --txl-cutoffs"
        )
    if not 0.0 <= cfg.txl_dropout < 1.0:
        raise ValueError(f"--txl-dropout must be in [0, 1), got {cfg.txl_dropout}")
