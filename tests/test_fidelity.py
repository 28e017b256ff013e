"""Runs compute what the original's runs compute: the TAWT update leaves training alone, subsets are random."""

import json

import numpy as np
import pytest

import run_weighted_joint
import run_weighted_normalized_joint
import run_weighted_pretraining
from tests.test_scripts import common, weight_history
from training_loop import adamw_with_linear_schedule

SOURCES = ["pos", "chunking"]
ALL_TASKS = SOURCES + ["ner"]

# (script, flags of the baseline) for each multi-task paradigm; the weighted run adds a vanishing step.
PARADIGMS = {
    "pretraining": run_weighted_pretraining,
    "joint": run_weighted_joint,
    "normalized_joint": run_weighted_normalized_joint,
}


def run_paradigm(script, data_dir, model_dir, output_dir, *extra):
    return script.main(common(data_dir, model_dir, output_dir) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "10",
        "--gradient_sampling_batch_size", "8", *extra])


def output_files(directory):
    names = [f"{task}_{kind}" for task in ALL_TASKS for kind in
             ("test_results.txt", "eval_results.txt", "test_predictions.txt")]
    return {name: (directory / name).read_bytes() for name in names}


@pytest.mark.parametrize("paradigm", sorted(PARADIGMS))
def test_a_vanishing_tawt_step_reproduces_the_baseline_byte_for_byte(paradigm, tiny_data_dir, tiny_model_dir, tmp_path):
    """Weighted X with --inv_constant 1e-12 = X: the update (the head fit's dropout included) draws nothing
    from the training's random generators, and weighted pre-training fine-tunes from the untouched head."""
    script = PARADIGMS[paradigm]
    run_paradigm(script, tiny_data_dir, tiny_model_dir, tmp_path / "baseline", "--weighting", "fixed")
    run_paradigm(script, tiny_data_dir, tiny_model_dir, tmp_path / "weighted", "--inv_constant", "1e-12")
    baseline, weighted = weight_history(tmp_path / "baseline"), weight_history(tmp_path / "weighted")
    assert len(weighted["history"]) == 3 and weighted["weighting"] == "tawt"  # the update did run, twice
    assert all(entry["cosine_similarities"] is not None for entry in weighted["history"][1:])
    for entry in weighted["history"]:
        assert [f"{w:.6f}" for w in entry["weights"]] == [f"{w:.6f}" for w in baseline["history"][0]["weights"]]
    assert output_files(tmp_path / "weighted") == output_files(tmp_path / "baseline")


def test_head_fit_schedule_decays_to_zero_without_weight_decay():
    from argparse import Namespace

    import torch

    head = torch.nn.Linear(4, 3)
    args = Namespace(learning_rate=0.1, adam_epsilon=1e-8, weight_decay=0.0, warmup_steps=0)
    optimizer, scheduler = adamw_with_linear_schedule(head.parameters(), args, 4, torch.device("cpu"))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0]
    rates = []
    for _ in range(4):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.075, 0.05, 0.025]) and scheduler.get_last_lr()[0] == 0.0


def test_training_files_are_shuffled_per_task_unless_keep_order(tiny_data_dir, tiny_model_dir, tmp_path):
    from utils_cross_task import load_task_split, read_labels, read_sentences, task_file, training_order_seed
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    everything = read_sentences(task_file(tiny_data_dir, "train", "ner"))

    def first(task, seed, count=6):
        split = load_task_split(tiny_data_dir, task, "train", tokenizer, read_labels(tiny_data_dir, task), 32, count,
                                shuffle_seed=None if seed is None else training_order_seed(seed, task))
        return [" ".join(sentence.words) for sentence in split.sentences]

    in_file_order = [" ".join(sentence.words) for sentence in everything[:6]]
    assert first("ner", None) == in_file_order  # --keep_order: the file's first sentences
    shuffled = first("ner", 42)
    assert len(shuffled) == 6 and shuffled != in_file_order  # a random 6 of the 24
    assert set(shuffled) <= {" ".join(sentence.words) for sentence in everything}
    assert first("ner", 42) == shuffled and first("ner", 7) != shuffled  # seeded
    # The tiny tasks share their sentences; each task's file gets an order of its own.
    assert first("pos", 42) != shuffled

    # A run records the seed, and the main task's sentences follow it.
    output = tmp_path / "joint"
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "6",
        "--weighting", "fixed", "--num_train_epochs", "1"])
    recorded = json.loads((output / "run_args.json").read_text())["args"]
    assert recorded["data_seed"] == 42 and recorded["keep_order"] is False


def test_eval_main_task_only(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "main_only"
    summary = run_paradigm(run_weighted_joint, tiny_data_dir, tiny_model_dir, output, "--weighting", "fixed",
                           "--eval_main_task_only", "--num_train_epochs", "1")
    assert (output / "ner_test_predictions.txt").is_file() and (output / "ner_eval_results.txt").is_file()
    assert not list(output.glob("pos_*")) and not list(output.glob("chunking_*"))
    assert sorted(key for key in summary if key != "train_sentences") == ["ner_eval", "ner_test"]
    assert json.loads((output / "run_args.json").read_text())["args"]["eval_main_task_only"] is True
    assert np.isfinite(float(summary["ner_test"]["f1"]))
