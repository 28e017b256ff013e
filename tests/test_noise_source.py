"""--noise_source TASK: a control source of TASK's sentences with its labels permuted, trained beside the others."""

import json
from collections import Counter

import pytest

import run_weighted_joint
import run_weighted_pretraining
from tests.test_scripts import common, weight_history


def test_noise_source_trains_as_one_more_source_and_is_recorded(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "noise"
    summary = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--noise_source", "pos",
        "--normalized_gradients", "--gradient_sampling_batch_size", "8", "--report_to", "none"])
    record = weight_history(output)
    assert record["tasks"] == ["pos", "chunking", "pos_noise", "ner"] and record["noise_source"] == "pos"
    assert all(len(entry["weights"]) == 4 for entry in record["history"])
    assert record["history"][-1]["cosine_similarities"][2] is not None  # its gradient was compared too
    with open(output / "run_args.json") as handle:
        run_args = json.load(handle)
    assert run_args["args"]["noise_source"] == "pos" and run_args["tasks"] == record["tasks"]
    # Trained on pos's own file (the fingerprint names it), evaluated nowhere: it has no dev or test file.
    assert run_args["training_data"]["pos_noise"]["file"] == run_args["training_data"]["pos"]["file"]
    assert summary["train_sentences"]["pos_noise"] == summary["train_sentences"]["pos"]
    assert not any(key.startswith("pos_noise_") for key in summary)
    assert {"pos_eval", "chunking_test", "ner_test"} <= set(summary)


def test_noise_split_permutes_the_sources_labels_with_the_seed(tiny_data_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    from tawt.cross_task_training import noise_split
    from utils_cross_task import IGNORED_LABEL_ID, load_task_split, read_labels

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = load_task_split(tiny_data_dir, "pos", "train", tokenizer, read_labels(tiny_data_dir, "pos"), 32)

    def labels(of):
        return [label for feature in of.features for label in feature.label_ids if label != IGNORED_LABEL_ID]

    noise = noise_split(split, "pos_noise", seed=1)
    assert noise.task == "pos_noise" and noise.sentences == split.sentences
    assert Counter(labels(noise)) == Counter(labels(split)) and labels(noise) != labels(split)
    assert [feature.input_ids for feature in noise.features] == [feature.input_ids for feature in split.features]
    assert labels(noise_split(split, "pos_noise", seed=1)) == labels(noise)
    assert labels(noise_split(split, "pos_noise", seed=2)) != labels(noise)


def test_noise_source_in_weighted_pretraining(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "pretraining"
    run_weighted_pretraining.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--noise_source", "chunking",
        "--gradient_sampling_batch_size", "8", "--eval_main_task_only", "--num_train_epochs", "1"])
    assert weight_history(output)["tasks"] == ["pos", "chunking", "chunking_noise"]


@pytest.mark.parametrize("arguments, message", [
    (["--noise_source", "ner"], "--noise_source ner is not in --auxiliary_task_list"),
    (["--noise_source", "pos", "--task_weights", "0.2", "0.2", "0.6"], "--task_weights has 3 values but there are 4"),
])
def test_bad_noise_source_is_refused_before_anything_runs(tmp_path, arguments, message):
    from tawt.errors import UsageError

    with pytest.raises(UsageError, match=message):
        args = run_weighted_joint.parse_arguments(["--output_dir", str(tmp_path / "out"), "--auxiliary_task_list", "pos",
                                                   "chunking", "--main_task", "ner", "--do_train", *arguments])
        from tawt.run_arguments import initial_task_weights

        initial_task_weights(args.task_weights, args.auxiliary_task_list + [args.main_task])
    assert not (tmp_path / "out").exists()
