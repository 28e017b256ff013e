"""Interrupted runs resume exactly; multi-process (DDP, gloo) runs agree on their task weights."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.test_scripts import TINY_TRAINING

PRETRAINING = ["run_weighted_pretraining.py", "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner",
               "--main_task_train_sent_num", "10", "--gradient_sampling_batch_size", "8", "--save_steps", "1"]


def command(script_and_flags, data_dir, model_dir, output_dir):
    return [sys.executable, *script_and_flags, "--data_dir", data_dir, "--model_name_or_path", model_dir,
            "--output_dir", str(output_dir), *TINY_TRAINING]


def checkpoint_numbers(output_dir):
    directory = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return [int(name[len("checkpoint-"):-3]) for name in os.listdir(directory) if name.startswith("checkpoint-")]


def outputs(output_dir):
    with open(os.path.join(output_dir, "task_weights.json")) as handle:
        weights = json.load(handle)
    predictions = {task: open(os.path.join(output_dir, f"{task}_test_predictions.txt")).read()
                   for task in ("pos", "chunking", "ner")}
    with open(os.path.join(output_dir, "all_results.json")) as handle:
        results = json.load(handle)
    return weights, predictions, results


@pytest.fixture(scope="module")
def uninterrupted(tiny_data_dir, tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(command(PRETRAINING, tiny_data_dir, tiny_model_dir, output), cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    assert checkpoint_numbers(output) == []  # removed once the results were written
    return outputs(output)


# Weighted pre-training: 2 epochs of 6 source batches (+2 epoch-end checkpoints), then 2 epochs of 2
# main-task batches. Checkpoint 3 falls in pre-training, checkpoint 16 in fine-tuning.
@pytest.mark.parametrize("kill_at_checkpoint", [3, 16])
def test_run_killed_with_sigkill_resumes_to_identical_results(tiny_data_dir, tiny_model_dir, tmp_path,
                                                              uninterrupted, kill_at_checkpoint):
    output = tmp_path / "interrupted"
    argv = command(PRETRAINING, tiny_data_dir, tiny_model_dir, output)
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while max(checkpoint_numbers(output), default=0) < kill_at_checkpoint:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "ner_test_results.txt").exists()

    resumed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    weights, predictions, results = outputs(output)
    assert weights == uninterrupted[0]
    assert predictions == uninterrupted[1]
    assert results == uninterrupted[2]
    with open(output / "run_args.json") as handle:
        assert json.load(handle)["resumed_from_checkpoint"] >= kill_at_checkpoint


def test_resume_refuses_a_different_command(tiny_data_dir, tiny_model_dir, tmp_path):
    from tawt.cross_task_training import UsageError
    import run_weighted_pretraining

    output = tmp_path / "changed"
    base = PRETRAINING[1:] + ["--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir,
                              "--output_dir", str(output)] + TINY_TRAINING
    run_weighted_pretraining.main(base + ["--pre_train_only", "--max_steps", "2"])
    # A finished run removes its checkpoints; leave one behind as an interrupted run would.
    os.remove(output / "ner_test_results.txt")
    for name in os.listdir(output):
        if name.endswith("_results.txt") or name == "all_results.json":
            os.remove(output / name)
    os.makedirs(output / "checkpoints", exist_ok=True)
    import torch
    torch.save({"args": {"learning_rate": 1.0}}, output / "checkpoints" / "checkpoint-00000001.pt")
    with pytest.raises(UsageError, match="written by a different command"):
        run_weighted_pretraining.main(base)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_gloo_processes(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "ddp"
    argv = command(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                    "--master_port", str(free_port()), "run_weighted_joint.py", "--auxiliary_task_list", "pos",
                    "chunking", "--main_task", "ner", "--main_task_train_sent_num", "10",
                    "--gradient_sampling_batch_size", "8"], tiny_data_dir, tiny_model_dir, output)
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(output / "run_args.json") as handle:
        assert json.load(handle)["world_size"] == 2
    with open(output / "task_weights.json") as handle:
        history = json.load(handle)["history"]
    assert len(history) == 3 and history[-1]["weights"][-1] > history[0]["weights"][-1]
    for task in ("pos", "chunking", "ner"):
        predicted = (output / f"{task}_test_predictions.txt").read_text().splitlines()
        gold = open(os.path.join(tiny_data_dir, f"test_{task}.txt")).read().splitlines()
        assert len(predicted) == len(gold)  # every test sentence predicted exactly once


class Interrupted(Exception):
    """Stands for a crash right after a checkpoint was written."""


# Weighted joint training with updates within the epochs: 8 steps per epoch (3 + 3 + 2 batches), updates
# after steps 3 and 6 (step 8 ends the epoch: the update after the epoch is made there), 9, 12 and 15.
WITHIN_EPOCH = {
    "joint": (["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num",
               "10", "--weight_update_steps", "3"], 4),
    # Pre-training: 6 steps per epoch, updates after steps 2, 4, 6 (the epoch's end), 8, 10 and 12.
    "pretraining": (["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num",
                     "10", "--weight_update_steps", "2"], 9),
}


def run_within_epoch(paradigm, data_dir, model_dir, output, monkeypatch, stop_at_step=None):
    """Run in this process with --save_steps 1; returns {global step: weights} of every checkpoint written,
    and raises Interrupted right after the checkpoint of `stop_at_step`."""
    import run_weighted_joint
    import run_weighted_pretraining
    from tawt import training_loop
    written = {}
    save_checkpoint = training_loop.save_checkpoint

    def save_and_maybe_stop(run, model, trainer, epoch, batches_done, task_weights):
        save_checkpoint(run, model, trainer, epoch, batches_done, task_weights)
        written.setdefault((trainer.stage, trainer.global_step), [float(w) for w in task_weights])
        if trainer.global_step == stop_at_step:
            raise Interrupted

    monkeypatch.setattr(training_loop, "save_checkpoint", save_and_maybe_stop)
    script = {"joint": run_weighted_joint, "pretraining": run_weighted_pretraining}[paradigm]
    flags, _ = WITHIN_EPOCH[paradigm]
    script.main(flags + ["--data_dir", data_dir, "--model_name_or_path", model_dir, "--output_dir", str(output),
                         "--gradient_sampling_batch_size", "8", "--gradient_sampling_batches", "2", "--save_steps",
                         "1", *TINY_TRAINING])
    return written


@pytest.mark.parametrize("paradigm", sorted(WITHIN_EPOCH))
def test_updates_within_an_epoch_resume_exactly(paradigm, tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    _, stop_at_step = WITHIN_EPOCH[paradigm]
    checkpoints = run_within_epoch(paradigm, tiny_data_dir, tiny_model_dir, tmp_path / "whole", monkeypatch)
    weights, predictions, results = outputs(tmp_path / "whole")
    history = weights["history"]
    stage = {"joint": "joint", "pretraining": "pre-train"}[paradigm]
    updates = [entry for entry in history if entry["stage"] == "step"]
    update_steps = {"joint": [3, 6, 9, 12, 15], "pretraining": [2, 4, 8, 10]}[paradigm]
    assert [entry["step"] for entry in updates] == update_steps
    assert [entry["step"] for entry in history if entry["stage"] == "epoch"] == {"joint": [8, 16],
                                                                                 "pretraining": [6, 12]}[paradigm]
    assert all(len(entry["cosine_batch_std"]) == len(weights["tasks"]) for entry in history[1:])
    # The checkpoint written at an update's step holds the weights that update made.
    for entry in updates:
        assert checkpoints[(stage, entry["step"])] == entry["weights"]
    assert checkpoints[(stage, 1)] == history[0]["weights"]

    # A crash right after the checkpoint between two updates, then the same command again.
    with pytest.raises(Interrupted):
        run_within_epoch(paradigm, tiny_data_dir, tiny_model_dir, tmp_path / "resumed", monkeypatch, stop_at_step)
    assert not (tmp_path / "resumed" / "ner_test_results.txt").exists()
    run_within_epoch(paradigm, tiny_data_dir, tiny_model_dir, tmp_path / "resumed", monkeypatch)
    with open(tmp_path / "resumed" / "run_args.json") as handle:
        assert json.load(handle)["resumed_from_checkpoint"] is not None
    assert outputs(tmp_path / "resumed") == (weights, predictions, results)
