"""(Weighted) pre-training and (weighted) normalized joint training, end to end on the tiny fixtures."""

import json

import numpy as np
import pytest
import torch

import run_weighted_normalized_joint
import run_weighted_pretraining
from tests.test_scripts import assert_run_outputs, common, weight_history

SOURCES = ["pos", "chunking"]
ALL_TASKS = SOURCES + ["ner"]


def pretraining(data_dir, model_dir, output_dir, *extra):
    return run_weighted_pretraining.main(common(data_dir, model_dir, output_dir) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "10",
        "--gradient_sampling_batch_size", "8", *extra])


def paradigm_of(output_dir):
    with open(output_dir / "run_args.json") as handle:
        return json.load(handle)["paradigm"]


def test_weighted_pretraining_weights_cover_sources_only(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "weighted_pretraining"
    pretraining(tiny_data_dir, tiny_model_dir, output, "--inv_constant", "10")
    assert_run_outputs(str(output), ALL_TASKS, tiny_data_dir)
    history = weight_history(output)
    assert history["tasks"] == SOURCES
    assert history["history"][0]["weights"] == pytest.approx([0.5, 0.5])
    assert len(history["history"]) == 3
    for entry in history["history"]:
        assert len(entry["weights"]) == 2 and sum(entry["weights"]) == pytest.approx(1.0)
        assert all(weight > 0 for weight in entry["weights"])
    assert history["history"][1]["weights"] != history["history"][0]["weights"]
    assert paradigm_of(output) == "weighted_pretraining"


def test_pretraining_variants_and_pre_train_only(tiny_data_dir, tiny_model_dir, tmp_path):
    plain = pretraining(tiny_data_dir, tiny_model_dir, tmp_path / "plain", "--weighting", "fixed")
    assert paradigm_of(tmp_path / "plain") == "pretraining"
    assert len(weight_history(tmp_path / "plain")["history"]) == 1
    fixed = pretraining(tiny_data_dir, tiny_model_dir, tmp_path / "fixed", "--weighting", "fixed",
                        "--task_weights", "0.9", "0.1")
    assert paradigm_of(tmp_path / "fixed") == "pretraining_fixed_weights"
    assert weight_history(tmp_path / "fixed")["history"][0]["weights"] == pytest.approx([0.9, 0.1])
    assert fixed["ner_test"] != plain["ner_test"]

    only = pretraining(tiny_data_dir, tiny_model_dir, tmp_path / "only", "--weighting", "fixed", "--pre_train_only")
    assert_run_outputs(str(tmp_path / "only"), ALL_TASKS, tiny_data_dir)
    # Without fine-tuning the main head is never trained, so the main task scores differently.
    assert only["ner_test"] != plain["ner_test"]
    training_log = (tmp_path / "only" / "training_log.jsonl").read_text()
    assert '"fine-tune"' not in training_log and '"pre-train"' in training_log
    assert '"fine-tune"' in (tmp_path / "plain" / "training_log.jsonl").read_text()


def test_normalized_weights_for_known_sizes():
    weights = run_weighted_normalized_joint.normalized_weights([9000, 9000, 9000, 500])
    assert weights == pytest.approx(np.array([1 / 9000] * 3 + [1 / 500]) / (3 / 9000 + 1 / 500))
    assert weights.round(2).tolist() == [0.05, 0.05, 0.05, 0.86]
    assert run_weighted_normalized_joint.ratio_weights(4, 2) == pytest.approx([0.25 / 1.5, 0.25 / 1.5, 1 / 1.5])


def test_normalized_joint_starts_from_sizes_actually_read(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "normalized"
    summary = run_weighted_normalized_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "6",
        "--weighting", "fixed"])
    assert_run_outputs(str(output), ALL_TASKS, tiny_data_dir)
    assert summary["train_sentences"] == {"pos": 24, "chunking": 24, "ner": 6}
    expected = np.array([1 / 24, 1 / 24, 1 / 6]) / (2 / 24 + 1 / 6)
    assert weight_history(output)["history"][0]["weights"] == pytest.approx(expected)
    assert paradigm_of(output) == "normalized_joint"


def test_ratio_analysis_cuts_sources_and_sets_weights(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "ratio"
    summary = run_weighted_normalized_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "4",
        "--auxiliary_main_ratio", "2", "--gradient_sampling_batch_size", "4"])
    assert summary["train_sentences"] == {"pos": 8, "chunking": 8, "ner": 4}
    history = weight_history(output)
    assert history["history"][0]["weights"] == pytest.approx([0.25, 0.25, 0.5])  # [1/2, 1/2, 1] / (2/2 + 1)
    assert len(history["history"]) == 3  # weighted: the weights moved after each epoch
    assert paradigm_of(output) == "weighted_normalized_joint"


def test_head_fit_trains_a_copy_and_leaves_the_model_alone(tiny_data_dir, tiny_model_dir, tmp_path):
    from argparse import Namespace

    from tawt.cross_task_training import Run, load_task_data, load_tokenizer
    from modeling_multi_bert import MultiTaskTagger
    from weighted_training_basics import fit_head_on_frozen_encoder

    args = Namespace(max_seq_length=32, do_eval=False, do_predict=False, per_gpu_eval_batch_size=8,
                     per_gpu_train_batch_size=4, learning_rate=1e-2, adam_epsilon=1e-8, max_grad_norm=1.0,
                     weight_decay=0.0, warmup_steps=0, legacy_adamw=False, seed=1, bf16=False, fp16=False, keep_order=True, data_seed=1)
    run = Run(args=args, paradigm="test", main_task="ner", tasks=["pos", "ner"], device=torch.device("cpu"),
              data_dir=tiny_data_dir, model_name_or_path=tiny_model_dir)
    data = load_task_data(run, load_tokenizer(run), {"ner": 10}, [])
    model = MultiTaskTagger.from_encoder(tiny_model_dir, {"pos": ["NN"], "ner": data.labels["ner"]})
    model_before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    random_state_before = torch.get_rng_state()
    head, loss = fit_head_on_frozen_encoder(model, "ner", data.train["ner"], run, torch.Generator().manual_seed(0))
    assert np.isfinite(loss)
    # The model, its main head included, is exactly as it was: the fit trained a copy.
    assert all(torch.equal(model_before[name], p) for name, p in model.state_dict().items())
    assert head is not model.head("ner") and not torch.equal(head.weight, model.head("ner").weight)
    assert all(p.grad is None for p in model.parameters())
    # The fit's dropout did not advance the global generator that training draws from.
    assert torch.equal(random_state_before, torch.get_rng_state())
    with model.replaced_heads({"ner": head}):
        assert model.head("ner") is head
    assert model.head("ner") is not head and torch.equal(model.head("ner").weight, model_before["heads.1.weight"])
