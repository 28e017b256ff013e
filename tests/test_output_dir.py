"""The output directory: a run is never silently overwritten, --overwrite_output_dir starts clean, an
interrupted run resumes with the same command (also when killed during its final evaluation)."""

import json
import os
import stat

import pytest

from tawt import evaluation
from tawt import output_files
import run_single_task
from tawt.cross_task_training import run_main
from tawt.testing import output_tree
from tests.test_scripts import common

SINGLE = ["--task", "pos", "--max_steps", "2"]


def single(data_dir, model_dir, output, *extra, flags=common):
    return run_single_task.main(flags(data_dir, model_dir, output) + SINGLE + list(extra))


def train_only(data_dir, model_dir, output):
    return ["--data_dir", data_dir, "--model_name_or_path", model_dir, "--output_dir", str(output),
            "--max_seq_length", "32", "--per_gpu_train_batch_size", "8", "--do_train"]


def refused(capsys, main):
    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_trained_model_counts_as_a_run(tiny_data_dir, tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "trained"
    single(tiny_data_dir, tiny_model_dir, output, flags=train_only)
    model = (output / "model.safetensors").read_bytes()
    error = refused(capsys, lambda: single(tiny_data_dir, tiny_model_dir, output, "--seed", "2", flags=train_only))
    assert f"--output_dir {output} already holds a run" in error and "--overwrite_output_dir" in error
    assert (output / "model.safetensors").read_bytes() == model


def test_evaluating_a_model_in_its_own_directory_keeps_the_record_of_its_training(tiny_data_dir, tiny_model_dir,
                                                                                    tmp_path, capsys):
    output = tmp_path / "trained"
    single(tiny_data_dir, tiny_model_dir, output, "--seed", "5", "--train_sent_num", "12", "--logging_steps", "1",
           flags=train_only)
    record = {name: (output / name).read_bytes() for name in ("run_args.json", "training_log.jsonl", "run.log")}

    def evaluate(*extra):
        return run_single_task.main(["--data_dir", tiny_data_dir, "--model_name_or_path", str(output), "--output_dir",
                                     str(output), "--task", "pos", "--do_eval", "--do_predict", "--max_seq_length",
                                     "32", "--per_gpu_eval_batch_size", "4", *extra])

    first = evaluate()
    assert {name: (output / name).read_bytes() for name in record} == record  # the training's, untouched
    evaluation_args = json.loads((output / "evaluation_args.json").read_text())
    assert evaluation_args["args"]["do_train"] is False and evaluation_args["args"]["per_gpu_eval_batch_size"] == 4
    assert "pos test: accuracy" in (output / "evaluation.log").read_text()
    run = output_tree.read_run(str(output))  # what the tables read: the training's seed and size
    assert (run.seed, run.main_train_size, run.paradigm) == (5, 12, "single_task")
    assert run.gold_file() == os.path.join(tiny_data_dir, "test_pos.txt")

    assert "already holds a run" in refused(capsys, evaluate)  # its results are there now
    again = evaluate("--overwrite_output_dir")
    assert again["pos_test"] == first["pos_test"]
    assert {name: (output / name).read_bytes() for name in record} == record
    assert (output / "model.safetensors").is_file() and (output / "pos_test_predictions.txt").is_file()


@pytest.mark.parametrize("left_behind", ["all_results.json", "task_weights.json"])
def test_results_or_task_weights_count_as_a_run(tiny_data_dir, tiny_model_dir, tmp_path, capsys, left_behind):
    output = tmp_path / "taken"
    output.mkdir()
    (output / left_behind).write_text("{}\n")
    error = refused(capsys, lambda: single(tiny_data_dir, tiny_model_dir, output))
    assert "already holds a run" in error
    assert (output / left_behind).read_text() == "{}\n"


def test_overwrite_starts_clean_and_a_failed_rerun_leaves_the_old_run_alone(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                             capsys):
    output = tmp_path / "rerun"
    single(tiny_data_dir, tiny_model_dir, output, "--logging_steps", "1", "--save_steps", "100")
    # What the earlier run could have left (weights, checkpoints: it claimed those names before writing), and
    # files no run wrote, whatever their names: kept.
    (output / "task_weights.json").write_text("{}\n")
    (output / "checkpoints").mkdir()
    (output / "checkpoints" / "checkpoint-00000001.pt").write_bytes(b"old")
    (output / "ner_test_results.txt").write_text("f1 = 0.5\n")
    (output / "my_notes.md").write_text("mine\n")
    recorded = (output / "run_args.json").read_text()

    # A typo in the rerun: it fails on the data, and the old run's files are as they were.
    error = refused(capsys, lambda: run_single_task.main(
        common(tiny_data_dir, tiny_model_dir, output) + ["--task", "poss", "--overwrite_output_dir"]))
    assert "train_poss.txt: file not found" in error
    assert (output / "run_args.json").read_text() == recorded
    assert (output / "ner_test_results.txt").is_file()

    single(tiny_data_dir, tiny_model_dir, output, "--overwrite_output_dir", "--seed", "3", "--logging_steps", "1")
    names = set(os.listdir(output))
    assert "task_weights.json" not in names and "checkpoints" not in names
    assert {"pos_test_results.txt", "my_notes.md", "ner_test_results.txt", "model.safetensors"} <= names
    assert json.loads((output / "run_args.json").read_text())["seed"] == 3
    assert len((output / "training_log.jsonl").read_text().splitlines()) == 2  # this run's 2 steps only
    assert (output / "run.log").read_text().count("single_task: tasks") == 1


def test_run_killed_during_its_final_evaluation_resumes(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    reference = single(tiny_data_dir, tiny_model_dir, tmp_path / "uninterrupted")
    output = tmp_path / "killed"
    evaluate = evaluation.evaluate_and_write

    def killed_after_the_dev_set(run, model, task, split, split_name):
        if split_name == "test":
            raise KeyboardInterrupt  # as a kill: nothing after this point runs
        return evaluate(run, model, task, split, split_name)

    monkeypatch.setattr(evaluation, "evaluate_and_write", killed_after_the_dev_set)
    with pytest.raises(KeyboardInterrupt):
        single(tiny_data_dir, tiny_model_dir, output, "--save_steps", "1")
    monkeypatch.setattr(evaluation, "evaluate_and_write", evaluate)
    assert (output / "pos_eval_results.txt").is_file() and (output / "model.safetensors").is_file()
    assert not (output / "all_results.json").exists()

    resumed = single(tiny_data_dir, tiny_model_dir, output, "--save_steps", "1")  # the same command
    assert resumed == reference
    assert json.loads((output / "run_args.json").read_text())["resumed_from_checkpoint"] is not None
    assert (output / "pos_test_predictions.txt").read_text() == (
        tmp_path / "uninterrupted" / "pos_test_predictions.txt").read_text()
    assert not (output / "checkpoints").exists()  # removed once the results were written


def test_result_files_get_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        output_files.write_text_atomic(str(tmp_path / "pos_test_results.txt"), "accuracy = 1\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "pos_test_results.txt").st_mode) == 0o644
