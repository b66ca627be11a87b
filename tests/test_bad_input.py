"""Bad input fails early, with a message that names the cause and the fix (docs/robustness.md,
"Troubleshooting"). fairseq-train and fairseq-eval-lm run in-process: the exception is what a user
sees as the last line of the traceback."""
import math
import shutil

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import eval_lm

from conftest import USER_DIR, build_model
from test_resume import TINY, one_thread, train_in_process
from fairseq_srupp.tasks.checkpoint_errors import CheckpointFileError

STREAM = ("--user-dir", USER_DIR, "--task", "srupp_stream_lm", "--cpu", "--num-workers", "0")


def train_args(data, save_dir, *flags):
    return (data, *STREAM, *TINY, "--tokens-per-sample", "64", "--batch-size", "4",
            "--optimizer", "adam", "--lr", "0.01", "--max-update", "2", "--save-dir", save_dir,
            "--no-epoch-checkpoints", *flags)


def eval_lm_in_process(data, checkpoint, *flags):
    """fairseq-eval-lm of the test split with the stream task, in this process; its results."""
    parser = options.get_eval_lm_parser()
    args = options.parse_args_and_arch(parser, [str(a) for a in (
        data, "--path", checkpoint, *STREAM, "--batch-size", "2", "--tokens-per-sample", "16",
        "--gen-subset", "test", *flags)])
    return eval_lm.main(convert_namespace_to_omegaconf(args))


@pytest.fixture(scope="module")
def checkpoint(char_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("srupp")
    with one_thread():
        train_in_process(*train_args(char_data, save))
    return save / "checkpoint_last.pt"


def copy_data(char_data, dest):
    shutil.copytree(char_data, dest)
    return dest


def fails_before_training(char_data, tmp_path, error, match, *flags, data=None):
    save = tmp_path / "ck"
    with pytest.raises(error, match=match):
        train_in_process(*train_args(data or char_data, save, *flags))
    assert not list(save.glob("*.pt")), "it failed before training"


# ---------------------------------------------------------------- data folder
def test_missing_data_folder(char_data, tmp_path):
    fails_before_training(char_data, tmp_path, FileNotFoundError,
                          r"data folder .*nowhere does not exist.*fairseq-preprocess",
                          data=tmp_path / "nowhere")


def test_folder_of_text_instead_of_binarized_data(char_data, tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "train.txt").write_text("a b c\n")
    fails_before_training(char_data, tmp_path, FileNotFoundError,
                          r"has no dict.txt, so it is not fairseq-preprocess output.*"
                          r"fairseq-preprocess --only-source", data=tmp_path / "text")


def test_malformed_dictionary(char_data, tmp_path):
    data = copy_data(char_data, tmp_path / "data")
    (data / "dict.txt").write_text("a 5\nb\n")
    fails_before_training(char_data, tmp_path, ValueError,
                          r"cannot read .*dict.txt .*each line must be '<symbol> <count>'",
                          data=data)


def test_missing_split(char_data, tmp_path):
    data = copy_data(char_data, tmp_path / "data")
    for suffix in (".bin", ".idx"):
        (data / f"valid{suffix}").unlink()
    fails_before_training(char_data, tmp_path, FileNotFoundError,
                          r"has no binarized 'valid' split \(missing: valid.idx, valid.bin\).*"
                          r"--srcdict .*dict.txt --validpref", data=data)


def test_damaged_split_index(char_data, tmp_path):
    data = copy_data(char_data, tmp_path / "data")
    (data / "valid.idx").write_bytes((char_data / "valid.idx").read_bytes()[:10])
    fails_before_training(char_data, tmp_path, ValueError,
                          r"cannot read the binarized split .*valid.idx/.bin.*damaged.*"
                          r"--validpref", data=data)


# ---------------------------------------------------------------- model options
def test_negative_mem_len(char_data, tmp_path, checkpoint):
    fails_before_training(char_data, tmp_path, ValueError,
                          r"--mem-len must be >= 0 .*got -1: pass --mem-len 0 or more",
                          "--mem-len", "-1")
    with pytest.raises(ValueError, match=r"--mem-len must be >= 0"):
        eval_lm_in_process(char_data, checkpoint, "--model-overrides", '{"mem_len": -1}')


def test_eval_window_the_carried_memory_cannot_serve(char_data, tmp_path, checkpoint):
    too_long = '{"attn_window": 8, "mem_len": 4}'
    with pytest.raises(ValueError, match=r"attn_window=8 needs mem_len >= attn_window, but "
                                         r"mem_len=4.*--model-overrides '\{\"mem_len\": 8\}'"):
        eval_lm_in_process(char_data, checkpoint, "--model-overrides", too_long)
    fails_before_training(char_data, tmp_path, ValueError, r"--mem-len 8 in fairseq-train",
                          "--attn-window", "8", "--mem-len", "4")
    stateless = '{"attn_window": 8, "mem_len": 4, "carry_state": False}'  # nothing is carried
    assert math.isfinite(eval_lm_in_process(char_data, checkpoint, "--model-overrides",
                                            stateless)["loss"])


# ---------------------------------------------------------------- checkpoints
def test_dictionary_that_does_not_match_the_checkpoint(char_data, tmp_path, checkpoint):
    data = copy_data(char_data, tmp_path / "data")
    with open(data / "dict.txt", "a") as f:
        f.write("extra1 1\nextra2 1\nextra3 1\n")
    trained = len(Dictionary.load(str(char_data / "dict.txt")))
    with pytest.raises(ValueError, match=rf"trained with a dictionary of {trained} symbols, but "
                                         rf"the dictionary here .* has {trained + 3} .*"
                                         rf"--srcdict"):
        eval_lm_in_process(data, checkpoint)


def test_checkpoint_of_other_model_options(char_data, checkpoint):
    with pytest.raises(ValueError, match=r"does not fit this srupp_lm: .* tensors differ in shape"
                                         r".*drop --model-overrides"):
        eval_lm_in_process(char_data, checkpoint, "--model-overrides", '{"hidden_dim": 16}')


def test_truncated_checkpoint(char_data, tmp_path, checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointFileError, match=r"cannot read the checkpoint .*truncated.pt "
                                                  r"\(2000 bytes\): it is truncated"):
        eval_lm_in_process(char_data, truncated)


def test_plain_torch_save_is_not_a_checkpoint(char_data, tmp_path, checkpoint):
    bare = tmp_path / "state_dict.pt"
    torch.save(torch.load(checkpoint)["model"], bare)  # weights without fairseq's cfg
    with pytest.raises(CheckpointFileError, match=r"is not a fairseq checkpoint: it holds a dict "
                                                  r"with keys \['decoder.*convert_sru_checkpoint"):
        eval_lm_in_process(char_data, bare)


def test_checkpoint_of_another_model(char_data, tmp_path):
    save = tmp_path / "transformer"
    with one_thread():
        train_in_process(char_data, "--user-dir", USER_DIR, "--task", "language_modeling",
                         "--arch", "transformer_lm", "--decoder-layers", "1",
                         "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "16",
                         "--decoder-attention-heads", "2", "--tokens-per-sample", "16",
                         "--batch-size", "2", "--optimizer", "adam", "--lr", "0.01",
                         "--max-update", "1", "--cpu", "--num-workers", "0", "--save-dir", save)
    with pytest.raises(ValueError, match=r"srupp_stream_lm .* needs a model that carries its "
                                         r"state .* is transformer_lm .*--task language_modeling"):
        eval_lm_in_process(char_data, save / "checkpoint_last.pt")


# ---------------------------------------------------------------- non-finite values
def poisoned(model, name):
    with torch.no_grad():
        dict(model.named_parameters())[name].fill_(float("nan"))
    return model


@pytest.mark.parametrize("name,where", [
    ("decoder.embed_tokens.weight", r"the token embeddings \(embed_tokens\)"),
    ("decoder.layers.1.weight_c", r"the output of SRU\+\+ layer 2 \(of 2\)"),
])
def test_check_finite_names_the_first_bad_module(name, where):
    tokens = torch.randint(4, 20, (2, 7))
    model = poisoned(build_model("srupp_lm", 20, *TINY, "--check-finite"), name)
    with pytest.raises(FloatingPointError, match=rf"non-finite values \(NaN/Inf\) in {where} "
                                                 rf"during training.*check its weights"):
        model(tokens)
    quiet = poisoned(build_model("srupp_lm", 20, *TINY), name)  # off by default: no check
    assert not torch.isfinite(quiet(tokens)[0]).all()


def test_check_finite_through_eval_lm(char_data, tmp_path, checkpoint):
    state = torch.load(checkpoint)
    state["model"]["decoder.layers.0.weight_c"][0] = float("inf")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(FloatingPointError, match=r"in the output of SRU\+\+ layer 1 \(of 2\) "
                                                 r"during evaluation"):
        eval_lm_in_process(char_data, bad, "--model-overrides", '{"check_finite": True}')
