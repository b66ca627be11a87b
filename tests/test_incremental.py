"""Incremental decoding (fairseq's incremental_state) against the full forward pass."""
import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

from conftest import make_dictionary
from fairseq_srupp.models.config import SRUppLMConfig
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel
from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMConfig, SRUppStreamLMTask

V = 30
PLACEMENTS = {"all": 1, "every2": 2, "none": 0}  # --attention-every
T = 14



def make_task():
    return SRUppStreamLMTask(SRUppStreamLMConfig(data="unused"), make_dictionary(V))


def make_model(task, **options):
    """A small float64 srupp_lm in eval mode whose attention matters (alpha != 0)."""
    cfg = SRUppLMConfig(**{**dict(hidden_dim=16, proj_dim=8, num_layers=4, dropout=0.0,
                                  attention_dropout=0.0, embed_dropout=0.0, mem_len=T,
                                  max_target_positions=None), **options})
    model = SRUppLanguageModel.build_model(cfg, task).double().eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            if layer.use_attention:
                layer.transform.alpha.fill_(0.8)
    return model


def full_log_probs(model, tokens):
    """(B, T) -> (B, T, V) log-probs in the model's dtype (get_normalized_probs would give
    float32)."""
    return torch.log_softmax(model(tokens)[0], dim=-1)


def step(model, tokens, incremental_state):
    """One decoding step as SequenceGenerator does it: the whole prefix is passed, the decoder
    consumes its last token. Returns (B, V) log-probs of the next token."""
    logits, _ = model.decoder(tokens, incremental_state=incremental_state)
    return torch.log_softmax(logits[:, -1], dim=-1)


@pytest.mark.parametrize("window", [0, 4], ids=["nowindow", "window4"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_token_by_token_equals_full_forward(placement, window):
    model = make_model(make_task(), attention_every=PLACEMENTS[placement],
                       attn_window=window, mem_len=window or T)
    tokens = torch.randint(4, 4 + V, (3, T))
    full = full_log_probs(model, tokens)
    state = {}
    steps = torch.stack([step(model, tokens[:, : t + 1], state) for t in range(T)], dim=1)
    diff = (steps - full).abs().max().item()
    print(f"{placement} window={window}: max |diff| {diff:.2e}")
    assert diff < 1e-9


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_reordered_beam_equals_permuted_full_forward(placement):
    """After k steps, reorder the batch as beam search does (with a repeated row); the following
    steps equal the full forward of the reordered sequences."""
    model = make_model(make_task(), attention_every=PLACEMENTS[placement])
    tokens = torch.randint(4, 4 + V, (4, T))
    order = torch.tensor([2, 0, 0, 3])
    k = 6
    state = {}
    for t in range(k):
        step(model, tokens[:, : t + 1], state)
    model.decoder.reorder_incremental_state_scripting(state, order)
    moved = tokens[order]
    steps = torch.stack([step(model, moved[:, : t + 1], state) for t in range(k, T)], dim=1)
    torch.testing.assert_close(steps, full_log_probs(model, moved)[:, k:], rtol=0, atol=1e-9)


def test_beam_search_scores_are_the_models_log_probs():
    """fairseq's SequenceGenerator (beam 3, reorders every step) through the task's
    inference_step: the prompt is forced, and each position's score is the log-prob the full
    forward gives that token."""
    task = make_task()
    model = make_model(task)
    eos = task.dictionary.eos()
    prompts = [torch.tensor([5, 6, 7, eos]), torch.tensor([9, eos])]
    dataset = task.build_dataset_for_inference(prompts, [len(p) for p in prompts])
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=9)
    hypos = task.inference_step(generator, [model], sample)
    for prompt, beams in zip(prompts, hypos):
        assert len(beams) == 3
        for hypo in beams:
            tokens = hypo["tokens"]
            assert tokens[: len(prompt) - 1].tolist() == prompt[:-1].tolist()
            inputs = torch.cat([torch.tensor([eos]), tokens[:-1]]).unsqueeze(0)
            expected = full_log_probs(model, inputs)[0].gather(1, tokens.unsqueeze(1))[:, 0]
            torch.testing.assert_close(hypo["positional_scores"].double(), expected,
                                       rtol=0, atol=1e-5)  # the generator keeps float32 scores
