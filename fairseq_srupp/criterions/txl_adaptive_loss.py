"""`txl_adaptive_loss`: token-level cross-entropy for models with a Transformer-XL style adaptive
log-softmax (`srupp_lm --txl-adaptive`).

The loss is the same sum of -log p(target) that `cross_entropy` computes through
`get_normalized_probs`, but each tail cluster is evaluated only on the positions whose target
lies in it, instead of building the full (B, T, V) log-probabilities. Models without such a
layer fall back to `cross_entropy` exactly. Unlike fairseq's `adaptive_loss` it works with every
--ddp-backend (every tail takes part in the graph, with zero rows when unused) and reports the
same metrics as `cross_entropy` (loss and ppl in base 2).
"""
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig


@register_criterion("txl_adaptive_loss", dataclass=CrossEntropyCriterionConfig)
class TXLAdaptiveLoss(CrossEntropyCriterion):
    def compute_loss(self, model, net_output, sample, reduce=True):
        txl_softmax = getattr(model.decoder, "txl_softmax", None)
        if txl_softmax is None:
            return super().compute_loss(model, net_output, sample, reduce=reduce)
        target = model.get_targets(sample, net_output).reshape(-1)
        features = net_output[0].reshape(target.shape[0], -1)
        nll = txl_softmax.nll(features, target)
        nll = nll.masked_fill(target.eq(self.padding_idx), 0.0)
        loss = nll.sum() if reduce else nll
        return loss, loss
