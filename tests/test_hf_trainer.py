"""TAWT in a real Hugging Face Trainer (tawt/hf_trainer.py, examples/hf_trainer_tawt.py) on the tiny model:
the weights' updates, logging, checkpoints, a resume equal to an uninterrupted run, bfloat16, and two
processes through the Trainer's own distributed set-up."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT

pytest.importorskip("accelerate", reason="the Trainer needs accelerate: pip install -e '.[hf]'")

EXAMPLE = os.path.join(ROOT, "examples", "hf_trainer_tawt.py")
# 24 sentences of pos and chunking and 8 of ner, 4 a batch: 14 one-task batches an epoch.
COMMON = ["--main_task", "ner", "--auxiliary_task_list", "pos", "chunking", "--main_task_train_sent_num", "8",
          "--per_device_train_batch_size", "4", "--gradient_sampling_batch_size", "8", "--weight_update_steps", "4",
          "--max_steps", "12", "--save_steps", "6", "--logging_steps", "2", "--use_cpu", "--report_to", "none",
          "--disable_tqdm", "true"]


def run_example(model_dir, data_dir, output_dir, *extra, launcher=(sys.executable,)):
    command = [*launcher, EXAMPLE, "--model_name_or_path", model_dir, "--data_dir", data_dir,
               "--output_dir", str(output_dir), *COMMON, *extra]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(os.path.join(output_dir, "task_weights.json")) as handle:
        return json.load(handle)


def test_example_updates_logs_checkpoints_and_resumes_as_uninterrupted(tiny_model_dir, tiny_data_dir, tmp_path):
    uninterrupted = run_example(tiny_model_dir, tiny_data_dir, tmp_path / "whole")
    assert uninterrupted["tasks"] == ["pos", "chunking", "ner"] and uninterrupted["main_task"] == "ner"
    history = uninterrupted["history"]
    assert [(entry["stage"], entry["step"]) for entry in history] == [("initial", 0), ("step", 4), ("step", 8),
                                                                      ("step", 12)]
    assert history[0]["weights"] == pytest.approx([1 / 3] * 3)
    for entry in history[1:]:
        assert sum(entry["weights"]) == pytest.approx(1.0)
        assert entry["cosine_similarities"][2] == 1.0  # the main task's own
    assert history[-1]["weights"] != history[1]["weights"]

    checkpoint = tmp_path / "whole" / "checkpoint-12"
    with open(checkpoint / "trainer_state.json") as handle:
        logged = [entry for entry in json.load(handle)["log_history"] if "task_weight/ner" in entry]
    assert [entry["step"] for entry in logged] == [0, 4, 8, 12]
    assert [entry["task_weight/ner"] for entry in logged] == pytest.approx([e["weights"][2] for e in history])
    assert (tmp_path / "whole" / "checkpoint-6" / "tawt_weighting.pt").is_file()
    with open(tmp_path / "whole" / "eval_results.json") as handle:
        assert 0.0 <= json.load(handle)["dev_ner_f1"] <= 1.0

    # Resumed at step 6, between two updates: the weights of step 4 and the sampler's state come back.
    resumed = run_example(tiny_model_dir, tiny_data_dir, tmp_path / "resumed", "--resume_from_checkpoint",
                          str(tmp_path / "whole" / "checkpoint-6"))
    assert resumed["history"] == history
    whole_model = load_file(tmp_path / "whole" / "model.safetensors")
    resumed_model = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all((whole_model[name] - resumed_model[name]).abs().max() <= 1e-6 for name in whole_model)


def test_two_processes_through_the_trainers_own_distributed_set_up(tiny_model_dir, tiny_data_dir, tmp_path):
    weights = run_example(tiny_model_dir, tiny_data_dir, tmp_path / "two", "--max_steps", "8",
                          launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"))
    # Two processes share the 14 batches of an epoch: it ends at step 7, with an update of its own.
    assert [(entry["stage"], entry["step"]) for entry in weights["history"]] == [
        ("initial", 0), ("step", 4), ("epoch", 7), ("step", 8)]
    assert weights["history"][-1]["weights"][2] > 1 / 3


def load_example():
    spec = importlib.util.spec_from_file_location("hf_trainer_tawt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_trainer(model_dir, data_dir, output_dir, **training):
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, TrainingArguments

    from tawt import TAWT, MultiTaskDataset, TAWTTrainer
    from utils_cross_task import load_task_split, read_labels

    example = load_example()
    tasks = ["pos", "ner"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = {task: read_labels(data_dir, task) for task in tasks}
    train = {task: example.as_examples(load_task_split(data_dir, task, "train", tokenizer, labels[task], 64))
             for task in tasks}
    model = example.MultiTaskTokenClassifier(model_dir, labels)
    arguments = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none", disable_tqdm=True,
                                  per_device_train_batch_size=8, **training)
    return TAWTTrainer(model=model, args=arguments, train_dataset=MultiTaskDataset(train),
                       data_collator=DataCollatorForTokenClassification(tokenizer),
                       weighting=TAWT(tasks, "ner", model.encoder.parameters(), gradient_sampling_batch_size=8))


def test_an_update_after_each_epoch_under_bfloat16(tiny_model_dir, tiny_data_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tiny_data_dir, tmp_path, num_train_epochs=2, bf16=True,
                           save_strategy="no")
    trainer.train()
    history = trainer.weighting.history
    assert [(entry["stage"], entry["step"]) for entry in history] == [("initial", 0), ("epoch", 6), ("epoch", 12)]
    assert all(isinstance(cosine, float) for entry in history[1:] for cosine in entry["cosine_similarities"])
    assert history[-1]["weights"][1] > 0.5
    assert [entry["step"] for entry in trainer.state.log_history if "task_weight/ner" in entry] == [0, 6, 12]


def test_a_checkpoint_without_the_weighting_state_is_refused(tiny_model_dir, tiny_data_dir, tmp_path):
    foreign = tmp_path / "checkpoint-3"
    foreign.mkdir()
    trainer = tiny_trainer(tiny_model_dir, tiny_data_dir, tmp_path, max_steps=3)
    with pytest.raises(FileNotFoundError, match="tawt_weighting.pt is missing"):
        trainer.train(resume_from_checkpoint=str(foreign))
