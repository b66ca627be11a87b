"""The full-sequence scorer of a trained SRU++ decoder: tokens -> next-token log-probs (for
torch.export; the recurrence is one custom-op node, srupp::recurrence_forward)."""
from torch import Tensor, nn

from .vocab_layers import StaticEmbedding, StaticLogSoftmax


class SRUppScorer(nn.Module):
    """forward(tokens (B, T) int64) -> log_probs (B, T, V) float32 of each next token, from a
    zero state, with the decoder's evaluation window; shares the decoder's parameters (eval
    mode). Equals the decoder's stateless forward followed by get_normalized_probs."""

    def __init__(self, decoder):
        super().__init__()
        if decoder.training:
            raise ValueError("SRUppScorer needs the decoder in eval mode (model.eval())")
        self.layers = decoder.layers
        self.embed = StaticEmbedding(decoder.embed_tokens)
        self.log_softmax = StaticLogSoftmax(decoder)
        self.window = decoder.cfg.attn_window if decoder.cfg.attn_window > 0 else None
        self.eval()

    def forward(self, tokens: Tensor) -> Tensor:
        B, T = tokens.shape
        x = self.embed(tokens.t())  # (T, B, d)
        for layer in self.layers:
            x, _ = layer(x, None, None, None, self.window)
        features = x.transpose(0, 1).reshape(B * T, -1)
        return self.log_softmax(features).view(B, T, -1)
