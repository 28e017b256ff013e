"""Reliability, fourth round, on data and tokenisation: tokenizers that silently fail, the data converters'
edge cases, the affinity probe's flags, and a saved model evaluated on data whose label list differs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ADJECTIVES, DETERMINERS, NAMES, NOUNS, ROOT, VERBS, write_task_files
from tests.test_scripts import common, read_results

QUICK = ["--num_train_epochs", "1"]  # after TINY_TRAINING's 2 epochs: given twice, the last is used
BYTE_LEVEL_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def byte_level_bpe(words):
    """A byte-level BPE `tokenizers.Tokenizer` (RoBERTa and GPT-2's kind) trained here on `words` as text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=BYTE_LEVEL_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(words)] * 3, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tokenizer


TINY_WORDS = NOUNS + VERBS + DETERMINERS + ADJECTIVES + NAMES + [".", "walking", "talks"]


def write_tiny_roberta(model_dir, generic_tokenizer=False):
    """A 2-layer randomly initialised RoBERTa with a byte-level BPE tokenizer trained on the tiny language;
    `generic_tokenizer` saves the tokenizer as transformers' generic fast tokenizer instead of RoBERTa's."""
    import torch
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel, RobertaTokenizerFast

    tokenizer_class = PreTrainedTokenizerFast if generic_tokenizer else RobertaTokenizerFast
    tokenizer = tokenizer_class(tokenizer_object=byte_level_bpe(TINY_WORDS), bos_token="<s>", eos_token="</s>",
                                cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                mask_token="<mask>")
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(model_dir)
    return str(model_dir)


def single_task(data_dir, model_dir, output_dir, *extra):
    import run_single_task

    return run_single_task.main(["--task", "pos", *common(data_dir, model_dir, output_dir), *QUICK, *extra])


# ---------------------------------------------------------------------------------------------------------
# 6. A model folder without tokenizer files; a tokenizer that knows none of the words


def without_tokenizer_files(model_dir, destination):
    """A copy of the encoder's config and weights alone, as a user might copy a model folder."""
    destination.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(model_dir, name), destination / name)
    return destination


def test_a_model_folder_without_tokenizer_files_is_refused(tiny_model_dir, tiny_data_dir, tmp_path):
    from tawt.errors import UsageError

    bare = without_tokenizer_files(tiny_model_dir, tmp_path / "bare")
    with pytest.raises(UsageError, match=rf"--model_name_or_path {bare}: its tokenizer holds only its 5 special "
                                         r"tokens.*copy its encoder's tokenizer files"):
        single_task(tiny_data_dir, str(bare), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_knows_none_of_the_words_is_refused(tiny_model_dir, tmp_path):
    from tawt.errors import UsageError

    # Words outside the tiny vocabulary: every one is [UNK], but for the full stops ("zq." is [UNK] "."; 24 of them).
    data_dir = write_task_files(tmp_path / "data")
    for name in os.listdir(data_dir):
        if name.startswith(("train_", "dev_", "test_")):
            path = os.path.join(data_dir, name)
            with open(path) as handle:
                lines = [line if not line.strip() or line.startswith("-DOCSTART-") else "zq" + line
                         for line in handle]
            with open(path, "w") as handle:
                handle.writelines(lines)
    with pytest.raises(UsageError, match=r"train_pos.txt: 120 of 144 words get no sub-token or only the unknown "
                                         r"token from the tokenizer of .*--model_name_or_path must hold"):
        single_task(data_dir, tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_affinity_probe_refuses_a_model_folder_without_tokenizer_files(tiny_model_dir, tiny_data_dir, tmp_path):
    from tawt.errors import UsageError
    from tawt.testing import task_affinity

    bare = without_tokenizer_files(tiny_model_dir, tmp_path / "bare")
    with pytest.raises(UsageError, match=r"its tokenizer holds only its 5 special tokens"):
        task_affinity.main(["--main_task", "ner", "--candidate_tasks", "pos", "--data_dir", tiny_data_dir,
                            "--model_name_or_path", str(bare), "--output_dir", str(tmp_path / "out"), "--no_cuda"])
    assert not (tmp_path / "out").exists()


def test_preprocess_max_len_refuses_a_model_folder_without_tokenizer_files(tiny_model_dir, tiny_data_dir, tmp_path):
    from tawt.data import preprocess_max_len

    bare = without_tokenizer_files(tiny_model_dir, tmp_path / "bare")
    with pytest.raises(SystemExit, match=r"^error: --model_name_or_path .*bare: its tokenizer holds only"):
        preprocess_max_len.main(["--input", tiny_data_dir, "--output_dir", str(tmp_path / "out"),
                                 "--max_seq_length", "16", "--model_name_or_path", str(bare)])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# 7. Byte-level BPE tokenizers keep their word-start marker


@pytest.mark.parametrize("generic", [False, True], ids=["roberta", "generic"])
def test_byte_level_bpe_words_are_encoded_as_in_running_text(tmp_path, generic):
    from utils_cross_task import encode_words, load_word_tokenizer

    model_dir = write_tiny_roberta(tmp_path / "roberta", generic_tokenizer=generic)
    tokenizer = load_word_tokenizer(model_dir)
    encoded, _, _ = encode_words(tokenizer, [["the", "dog", "sees", "mary"]], add_special_tokens=False)
    tokens = encoded.tokens(0)
    first_of_each_word = [tokens[encoded.word_ids(0).index(word)] for word in range(4)]
    assert all(token.startswith("Ġ") for token in first_of_each_word), tokens
    # The words after the first get the sub-tokens they have in the sentence written out.
    in_text = tokenizer("the dog sees mary", add_special_tokens=False).tokens()
    assert tokens[encoded.word_ids(0).index(1):] == in_text[-(len(tokens) - encoded.word_ids(0).index(1)):]


def test_a_roberta_run_trains_and_saves_a_tokenizer_that_marks_word_starts(tiny_data_dir, tmp_path):
    from transformers import AutoTokenizer

    model_dir = write_tiny_roberta(tmp_path / "roberta")
    output = tmp_path / "out"
    single_task(tiny_data_dir, model_dir, output)
    assert float(read_results(output / "pos_test_results.txt")["accuracy"]) > 0
    with open(output / "run_args.json") as handle:  # RoBERTa is a BERT-family encoder: real tokens only
        assert json.load(handle)["forward_path"] == "unpadded"
    # The tokenizer saved with the model encodes words as the run did, for whoever loads it next.
    saved = AutoTokenizer.from_pretrained(output)
    tokens = saved([["the", "dog", "sees"]], is_split_into_words=True, add_special_tokens=False).tokens(0)
    assert tokens[0].startswith("Ġ") and "Ġsees" in tokens, tokens


# ---------------------------------------------------------------------------------------------------------
# 5. preprocess_max_len.py writing into its input's folder through a symbolic link


@pytest.mark.parametrize("input_is_file", [False, True], ids=["folder", "file"])
def test_preprocess_max_len_refuses_an_output_dir_linked_to_its_input(tiny_model_dir, tmp_path, input_is_file):
    from tawt.data import preprocess_max_len

    data_dir = write_task_files(tmp_path / "data")
    before = {name: open(os.path.join(data_dir, name), "rb").read() for name in os.listdir(data_dir)}
    alias = tmp_path / "alias"
    alias.symlink_to(data_dir)
    given = os.path.join(data_dir, "train_pos.txt") if input_is_file else data_dir
    # 'walking' is two sub-tokens: at 6, sentences of 5 words and more are split, so the files would change.
    with pytest.raises(SystemExit, match=r"^error: .*alias: --output_dir is the input's folder \(through a symbolic "
                                         r"link\); choose another"):
        preprocess_max_len.main(["--input", given, "--output_dir", str(alias), "--max_seq_length", "6",
                                 "--model_name_or_path", tiny_model_dir])
    assert {name: open(os.path.join(data_dir, name), "rb").read() for name in os.listdir(data_dir)} == before


# ---------------------------------------------------------------------------------------------------------
# 8. The converters: counts of sentences, and a file that two splits would both read


@pytest.mark.parametrize("flag, value", [("--dev_from_train", "-3"), ("--dev_from_train", "0"),
                                         ("--train_sentences", "0"), ("--test_sentences", "-1")])
def test_process_data_refuses_a_count_of_sentences_below_one(tmp_path, flag, value):
    from tawt.data import process_data
    from tests.test_data_preparation import conll2000_text, write

    train = write(tmp_path / "train.txt", conll2000_text(10))
    test = write(tmp_path / "test.txt", conll2000_text(3))
    with pytest.raises(SystemExit, match=rf"^error: {flag} {value}: give a positive number of sentences, or leave "
                                         "the flag out$"):
        process_data.main(["conll2000", "--train", train, "--test", test, flag, value,
                           "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_process_data_refuses_one_file_for_two_splits(tmp_path):
    from tawt.data import process_data
    from tests.test_data_preparation import conll2000_text, write

    train = write(tmp_path / "train.txt", conll2000_text(10))
    with pytest.raises(SystemExit, match=r"^error: .*train.txt: read for both --train \(.*train.txt\) and --test "
                                         r"\(.*train.txt\); give each split files or folders of its own"):
        process_data.main(["conll2000", "--train", train, "--test", train, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_ontonotes_test_documents_inside_the_train_folder_are_refused(tmp_path):
    from tawt.data import process_data
    from tests.test_data_preparation import SENTENCE_ONE, SENTENCE_TWO, ontonotes_text, write

    write(tmp_path / "onto" / "train" / "a_gold_conll", ontonotes_text(SENTENCE_ONE))
    write(tmp_path / "onto" / "test" / "b_gold_conll", ontonotes_text(SENTENCE_TWO))
    onto, out = str(tmp_path / "onto"), tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^error: .*onto/test/b_gold_conll: read for both --train \(.*onto\) and "
                                         r"--test \(.*onto/test\); give each split files or folders of its own"):
        process_data.main(["ontonotes", "--train", onto, "--test", f"{onto}/test", "--output_dir", str(out)])
    assert not out.exists()
    process_data.main(["ontonotes", "--train", f"{onto}/train", "--test", f"{onto}/test", "--output_dir", str(out)])
    assert len(read_file_sentences(out / "train_pos.txt")) == 1 and len(read_file_sentences(out / "test_pos.txt")) == 1


def read_file_sentences(path):
    from utils_cross_task import read_sentences

    return read_sentences(path)


# ---------------------------------------------------------------------------------------------------------
# 9. The affinity probe checks its flags as the training scripts do, before any compute


@pytest.mark.parametrize("flags, message", [
    (["--main_task_train_sent_num", "-5"], "--main_task_train_sent_num -5: give at least 1 sentence"),
    (["--main_task_train_sent_num", "0"], "--main_task_train_sent_num 0: give at least 1 sentence"),
    (["--per_gpu_train_batch_size", "0"], "--per_gpu_train_batch_size 0: give at least 1 sentence per batch"),
    (["--per_gpu_eval_batch_size", "-1"], "--per_gpu_eval_batch_size -1: give at least 1"),
    (["--learning_rate", "-1"], "--learning_rate -1.0: give a finite positive value (default 1e-2"),
    (["--weight_lr", "nan"], "--weight_lr nan: give a finite positive step size"),
    (["--max_seq_length", "0"], "--max_seq_length 0: give a positive length"),
    (["--candidate_tasks", "../pos"], "--candidate_tasks '../pos': a task name must be a plain name"),
])
def test_the_affinity_probe_refuses_bad_flags_before_any_compute(tiny_data_dir, tiny_model_dir, tmp_path, capsys,
                                                                 monkeypatch, flags, message):
    from tawt.cross_task_training import run_main
    from tawt.testing import task_affinity

    def no_compute(*arguments, **options):
        raise AssertionError("the probe loaded a model before checking its flags")

    monkeypatch.setattr(task_affinity, "load_tokenizer", no_compute)
    argv = ["--main_task", "ner", "--candidate_tasks", "pos", "chunking", "--data_dir", tiny_data_dir,
            "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"), "--no_cuda"]
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: task_affinity.main(argv + flags))
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], error
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# 10. A saved model evaluated on data whose labels file differs from its heads' label lists


@pytest.fixture(scope="module")
def saved_pos_model(tiny_data_dir, tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("saved_pos")
    single_task(tiny_data_dir, tiny_model_dir, output)
    return str(output)


def evaluate_saved(model_dir, data_dir, output_dir, task="pos"):
    import run_single_task

    run_single_task.main(["--task", task, "--model_name_or_path", model_dir, "--data_dir", str(data_dir),
                          "--output_dir", str(output_dir), "--do_eval", "--do_predict", "--max_seq_length", "32"])


def copy_with_pos_labels(data_dir, destination, labels):
    shutil.copytree(data_dir, destination)
    (destination / "pos_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    return destination


def test_a_saved_model_maps_labels_by_name_whatever_their_order_in_the_labels_file(saved_pos_model, tiny_data_dir,
                                                                                   tmp_path):
    with open(os.path.join(tiny_data_dir, "pos_labels.txt")) as handle:
        labels = handle.read().split()
    reordered = copy_with_pos_labels(tiny_data_dir, tmp_path / "reordered", labels[::-1])
    evaluate_saved(saved_pos_model, tiny_data_dir, tmp_path / "as_saved")
    evaluate_saved(saved_pos_model, reordered, tmp_path / "reordered_run")
    for name in ("pos_eval_results.txt", "pos_test_results.txt"):
        assert read_results(tmp_path / "reordered_run" / name) == read_results(tmp_path / "as_saved" / name)
    # The loss is the one the model had at the end of its training run, on the same dev set.
    assert read_results(tmp_path / "as_saved" / "pos_eval_results.txt")["loss"] == \
        read_results(os.path.join(saved_pos_model, "pos_eval_results.txt"))["loss"]
    assert (tmp_path / "reordered_run" / "pos_test_predictions.txt").read_text() == \
        (tmp_path / "as_saved" / "pos_test_predictions.txt").read_text()


def test_a_label_the_saved_model_does_not_know_is_refused_before_any_result(saved_pos_model, tiny_data_dir, tmp_path):
    from tawt.errors import TaskDataError

    with open(os.path.join(tiny_data_dir, "pos_labels.txt")) as handle:
        labels = handle.read().split()
    extra = copy_with_pos_labels(tiny_data_dir, tmp_path / "extra", labels + ["UH"])
    with open(extra / "test_pos.txt", "a") as handle:
        handle.write("\nwow UH\n")
    output = tmp_path / "out"
    with pytest.raises(TaskDataError, match=r"pos_labels.txt: label\(s\) \['UH'\] are not among the .* labels of "
                                            r"the model's pos head .*train a model on these labels"):
        evaluate_saved(saved_pos_model, extra, output)
    assert not output.exists()


def test_a_task_the_saved_model_has_no_head_for_is_refused_before_any_result(saved_pos_model, tiny_data_dir, tmp_path):
    from tawt.errors import UsageError

    output = tmp_path / "out"
    with pytest.raises(UsageError, match=r"--model_name_or_path .* has no head for task 'ner' \(its heads: pos\)"):
        evaluate_saved(saved_pos_model, tiny_data_dir, output, task="ner")
    assert not output.exists()
