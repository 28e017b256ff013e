"""ForkMerge on the tiny model: a copy of the main task is kept by the merge, a source of random labels
gets less, an interrupted run resumes across a merge to identical results, and one branch is plain training."""

import json
import os

import pytest

from tests.conftest import start_heads_as_copies, write_task_files, write_twin_and_noise

# pos, the main task, with 8 of its sentences; `twin` is pos's files (all 48 training sentences) under another
# name, `noise` pos's sentences with random pos labels. Learning rate 3e-3: the tiny model learns pos in two epochs.
TRAINING = ["--max_seq_length", "32", "--per_gpu_train_batch_size", "8", "--per_gpu_eval_batch_size", "32",
            "--num_train_epochs", "2", "--learning_rate", "3e-3", "--main_task_train_sent_num", "8",
            "--eval_main_task_only", "--do_train", "--do_eval", "--do_predict"]


@pytest.fixture(scope="module")
def twin_data_dir(tmp_path_factory):
    data_dir = write_task_files(tmp_path_factory.mktemp("forkmerge_data"), {"train": 48, "dev": 32, "test": 8}, seed=1)
    return write_twin_and_noise(data_dir, "pos")


@pytest.fixture
def copied_heads(monkeypatch):
    """The twin's and the noise's heads start as copies of pos's: the twin is then pos itself, on more sentences."""
    start_heads_as_copies(monkeypatch, "pos", ["twin", "noise"])


class Interrupted(Exception):
    """Stands for a crash right after a checkpoint was written."""


def train(data_dir, model_dir, output, sources, flags, script="run_weighted_joint", stop_after_merge=None,
          monkeypatch=None):
    """Train `sources` -> pos in this process; returns task_weights.json. With `stop_after_merge`, raises
    Interrupted right after the checkpoint written at that merge."""
    import importlib

    from tawt import training_loop
    if stop_after_merge is not None:
        save_checkpoint = training_loop.save_checkpoint

        def save_and_stop(run, model, trainer, epoch, batches_done, task_weights):
            save_checkpoint(run, model, trainer, epoch, batches_done, task_weights)
            if run.target_aware_baseline.merges == stop_after_merge:
                raise Interrupted

        monkeypatch.setattr(training_loop, "save_checkpoint", save_and_stop)
    importlib.import_module(script).main(
        ["--auxiliary_task_list", *sources, "--main_task", "pos", "--data_dir", data_dir, "--model_name_or_path",
         model_dir, "--output_dir", str(output), *flags, *TRAINING])
    if stop_after_merge is not None:
        monkeypatch.setattr(training_loop, "save_checkpoint", save_checkpoint)
    with open(os.path.join(output, "task_weights.json")) as handle:
        return json.load(handle)


def merges(record):
    return [entry for entry in record["history"] if entry["stage"] == "merge"]


def outputs(output):
    """What a run leaves: its weights, training log, predictions and results."""
    return tuple((output / name).read_text() for name in ("task_weights.json", "training_log.jsonl",
                                                         "pos_test_predictions.txt", "all_results.json"))


def test_the_merge_keeps_a_copy_of_the_main_task_and_gives_random_labels_less(twin_data_dir, tiny_model_dir,
                                                                             tmp_path, copied_heads):
    pytest.importorskip("tensorboard", reason="setup.sh installs tensorboard (the tensorboard extra): pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    twin = train(twin_data_dir, tiny_model_dir, tmp_path / "twin", ["twin"],
                 ["--weighting", "forkmerge", "--report_to", "tensorboard"])
    noise = train(twin_data_dir, tiny_model_dir, tmp_path / "noise", ["noise"],
                  ["--weighting", "forkmerge", "--report_to", "none"])
    assert twin["weighting"] == "forkmerge" and len(merges(twin)) == 2  # once per epoch
    for entry in merges(twin):
        assert entry["forkmerge_branches"] == ["target", "all"]
        assert entry["forkmerge_branch_weights"] == [[0.0, 1.0], [0.5, 0.5]]
        assert entry["forkmerge_coefficients"][1] > 0  # the twin's branch is kept
        # the weights the merge stands for: lambda_target (0, 1) + lambda_all (0.5, 0.5)
        assert entry["weights"] == pytest.approx([entry["forkmerge_coefficients"][1] / 2,
                                                  1 - entry["forkmerge_coefficients"][1] / 2])
        assert entry["forkmerge_metric"] == "accuracy"
        assert entry["forkmerge_dev"] == max([*entry["forkmerge_branch_dev"],
                                              *[candidate["dev"] for candidate in entry["forkmerge_candidates"]]])
    # The branch of random labels scores lower on dev, so the merge gives it less.
    for twin_entry, noise_entry in zip(merges(twin), merges(noise)):
        assert noise_entry["forkmerge_coefficients"][1] < twin_entry["forkmerge_coefficients"][1]
        assert noise_entry["forkmerge_branch_dev"][1] < twin_entry["forkmerge_branch_dev"][1]
    with open(tmp_path / "twin" / "run_args.json") as handle:
        assert json.load(handle)["paradigm"] == "joint_forkmerge"

    events = EventAccumulator(str(tmp_path / "twin" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = [event.value for event in events.Scalars("forkmerge_coefficient/all")]
    assert logged == pytest.approx([entry["forkmerge_coefficients"][1] for entry in merges(twin)])
    assert {"train_target/loss", "train_all/loss", "forkmerge_dev/merged"} <= set(events.Tags()["scalars"])


def test_topk_ranks_the_copy_of_the_main_task_above_random_labels(twin_data_dir, tiny_model_dir, tmp_path,
                                                                  copied_heads):
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "topk", ["noise", "twin"],
                   ["--weighting", "forkmerge", "--forkmerge_branches", "target,topk:1", "--report_to", "none"])
    first = merges(record)[0]
    noise_score, twin_score, main = first["forkmerge_ranking_dev"]
    assert main is None and twin_score > noise_score
    assert first["forkmerge_branch_weights"][1] == [0.0, 0.5, 0.5]  # topk:1 trains the twin with pos
    assert "forkmerge_ranking_dev" not in merges(record)[1]


@pytest.mark.parametrize("script", ["run_weighted_joint", "run_weighted_normalized_joint"])
def test_an_interrupted_run_resumes_across_a_merge_to_identical_results(twin_data_dir, tiny_model_dir, tmp_path,
                                                                        copied_heads, monkeypatch, script):
    flags = ["--weighting", "forkmerge", "--forkmerge_branches", "target,topk:1,all", "--forkmerge_merge_steps", "7",
             "--save_steps", "1", "--report_to", "none"]
    whole = train(twin_data_dir, tiny_model_dir, tmp_path / "whole", ["twin", "noise"], flags, script)
    assert [entry["step"] for entry in merges(whole)] == [7, 14, 21, 26]  # 2 epochs of 1 + 6 + 6 batches
    with pytest.raises(Interrupted):
        train(twin_data_dir, tiny_model_dir, tmp_path / "resumed", ["twin", "noise"], flags, script,
              stop_after_merge=2, monkeypatch=monkeypatch)
    assert not (tmp_path / "resumed" / "all_results.json").exists()
    train(twin_data_dir, tiny_model_dir, tmp_path / "resumed", ["twin", "noise"], flags, script)
    with open(tmp_path / "resumed" / "run_args.json") as handle:
        record = json.load(handle)
    assert record["resumed_from_checkpoint"] is not None
    assert record["paradigm"] == {"run_weighted_joint": "joint_forkmerge",
                                  "run_weighted_normalized_joint": "normalized_joint_forkmerge"}[script]
    assert outputs(tmp_path / "resumed") == outputs(tmp_path / "whole")


@pytest.mark.parametrize("script,plain", [("run_weighted_joint", ["--weighting", "fixed"]),
                                          ("run_weighted_normalized_joint", ["--weighting", "fixed"])])
def test_one_branch_is_plain_training(twin_data_dir, tiny_model_dir, tmp_path, script, plain):
    """ForkMerge with the all branch alone trains the batches, dropout masks and updates of plain (normalized)
    joint training, and its merges, which only score it on dev, change nothing."""
    from safetensors.torch import load_file

    train(twin_data_dir, tiny_model_dir, tmp_path / "plain", ["twin", "noise"], plain + ["--report_to", "none"], script)
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "one", ["twin", "noise"],
                   ["--weighting", "forkmerge", "--forkmerge_branches", "all", "--report_to", "none"], script)
    assert [entry["forkmerge_coefficients"] for entry in merges(record)] == [[1.0], [1.0]]
    for name in ("pos_test_predictions.txt", "all_results.json"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "plain" / name).read_text()
    for name in ("model.safetensors", "task_heads.safetensors"):
        one, plain_model = load_file(tmp_path / "one" / name), load_file(tmp_path / "plain" / name)
        assert one.keys() == plain_model.keys() and all(one[key].equal(plain_model[key]) for key in one)


def test_bad_forkmerge_flags_are_refused_before_anything_runs(tmp_path, monkeypatch):
    import run_weighted_joint
    from tawt.errors import UsageError

    base = ["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--output_dir", str(tmp_path / "out"),
            "--do_train", "--do_eval", "--weighting", "forkmerge"]
    for flags, message in ((["--forkmerge_branches", "target,best"], "'best' is not a branch"),
                           (["--forkmerge_branches", "topk:2"], "topk:2 with 2 source"),
                           (["--forkmerge_branches", "all,all"], "a branch is named twice"),
                           (["--forkmerge_merge_steps", "0"], "--forkmerge_merge_steps 0"),
                           (["--forkmerge_alphas", "0", "-0.5"], "--forkmerge_alphas 0.0 -0.5"),
                           (["--weight_update_steps", "3"], "leave --weight_update_steps out"),
                           (["--eval_strategy", "steps", "--eval_steps", "2"], "use --eval_strategy epoch")):
        with pytest.raises(UsageError, match=message):
            run_weighted_joint.parse_arguments(base + flags)
    with pytest.raises(UsageError, match="add --do_eval"):
        run_weighted_joint.parse_arguments([argument for argument in base if argument != "--do_eval"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    with pytest.raises(UsageError, match="one process only"):
        run_weighted_joint.parse_arguments(base)
    assert not (tmp_path / "out").exists()
