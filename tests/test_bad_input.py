"""Bad input stops with one clear line naming the file, line or flag and the fix (and loses nothing)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run_single_task
import run_weighted_joint
from tawt.cross_task_training import UsageError, run_main
from tawt.run_arguments import initial_task_weights
from tests.test_scripts import common
from utils_cross_task import TaskDataError, read_sentences
from weighted_training_basics import exponentiated_gradient_step


def single(data_dir, model_dir, output, *extra):
    return run_single_task.main(common(data_dir, model_dir, output) + ["--task", "pos", *extra])


def copy_data(tiny_data_dir, tmp_path):
    return shutil.copytree(tiny_data_dir, tmp_path / "data")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: open(d / "train_pos.txt", "w").close(), "train_pos.txt: holds no sentence"),
    (lambda d: os.remove(d / "dev_pos.txt"), "dev_pos.txt: file not found"),
    (lambda d: open(d / "test_pos.txt", "a").write("word\n"), "test_pos.txt line"),
    (lambda d: open(d / "dev_pos.txt", "a").write("word XYZ\n"), "label 'XYZ' is not in the task's label list"),
    (lambda d: open(d / "train_pos.txt", "ab").write(b"caf\xe9 NN\n"), "is not UTF-8"),
])
def test_bad_task_files(tiny_data_dir, tiny_model_dir, tmp_path, mutate, message):
    data = copy_data(tiny_data_dir, tmp_path)
    mutate(data)
    with pytest.raises(TaskDataError, match=message):
        single(str(data), tiny_model_dir, tmp_path / "out")


def test_main_task_size_larger_than_file_warns_and_uses_all(tiny_data_dir, tiny_model_dir, tmp_path, caplog):
    summary = single(tiny_data_dir, tiny_model_dir, tmp_path / "out", "--train_sent_num", "1000",
                     "--max_steps", "1")
    assert summary["train_sentences"] == {"pos": 24}
    assert "fewer than the 1000 asked for: using all of them" in caplog.text


def test_weights_not_summing_to_one_are_normalised_with_a_warning(caplog):
    weights = initial_task_weights([2, 1, 1], ["a", "b", "c"])
    assert weights.tolist() == [0.5, 0.25, 0.25]
    assert "sum to 4, not 1" in caplog.text


def test_unknown_model_name_offline(tiny_data_dir, tmp_path):
    with pytest.raises(UsageError, match="--model_name_or_path no-such-model-here: not a model directory here"):
        single(tiny_data_dir, "no-such-model-here", tmp_path / "out")


def test_max_seq_length_above_position_limit(tiny_data_dir, tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match="--max_seq_length 512 exceeds the model's 128 positions"):
        single(tiny_data_dir, tiny_model_dir, tmp_path / "out", "--max_seq_length", "512")


def test_diverging_loss_stops_with_step_task_and_batch_and_keeps_checkpoint(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                             capsys):
    output = tmp_path / "diverged"
    argv = common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", "pos", "--main_task", "ner", "--learning_rate", "1e30", "--save_steps", "1",
        "--weighting", "fixed", "--max_grad_norm", "1e30"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_weighted_joint.main(argv))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "step" in error and "the loss of task" in error and "training sentences [" in error
    checkpoints = os.listdir(output / "checkpoints")
    assert len(checkpoints) == 1 and checkpoints[0].startswith("checkpoint-")
    state = torch.load(output / "checkpoints" / checkpoints[0], weights_only=False)  # intact and readable
    assert state["stage"] == "joint" and state["trainer"]["global_step"] >= 1
    assert not any(name.endswith("_results.txt") for name in os.listdir(output))


def test_same_command_and_seed_give_identical_weights_and_predictions(tiny_data_dir, tiny_model_dir, tmp_path):
    argv = ["--auxiliary_task_list", "pos", "--main_task", "ner", "--main_task_train_sent_num", "10",
            "--gradient_sampling_batch_size", "4"]
    first = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "a") + argv)
    second = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "b") + argv)
    assert first == second
    for name in ("task_weights.json", "ner_test_predictions.txt", "pos_test_predictions.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    recorded = json.loads((tmp_path / "a" / "run_args.json").read_text())
    assert recorded["versions"]["torch"] == torch.__version__
    assert "git_commit" in recorded and recorded["args"]["seed"] == 1


def test_bf16_autocast_runs_on_cpu(tiny_data_dir, tiny_model_dir, tmp_path):
    summary = single(tiny_data_dir, tiny_model_dir, tmp_path / "bf16", "--bf16", "--max_steps", "2")
    assert np.isfinite(summary["pos_test"]["loss"])


# ---------------------------------------------------------------------------------------------------------
# Property-based tests


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_reader_accepts_or_rejects_arbitrary_bytes_with_its_documented_error(tmp_path, content):
    path = tmp_path / "train_any.txt"
    path.write_bytes(content)
    try:
        sentences = read_sentences(str(path))
    except TaskDataError as error:
        assert str(path) in str(error)
        return
    assert sentences and all(len(s.words) == len(s.labels) > 0 for s in sentences)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.floats(1e-300, 1.0), min_size=n, max_size=n),
    st.lists(st.one_of(st.none(), finite), min_size=n, max_size=n),
    st.floats(0.0, 1e6),
)))
def test_weight_update_stays_finite_positive_and_normalised(case):
    raw_weights, gradients, step_size = case
    weights = np.asarray(raw_weights) / np.sum(raw_weights)
    updated = exponentiated_gradient_step(weights, gradients, step_size)
    assert np.all(np.isfinite(updated)) and np.all(updated > 0)
    assert updated.sum() == pytest.approx(1.0)


def test_results_are_written_atomically(tmp_path, monkeypatch):
    from tawt import output_files
    path = tmp_path / "ner_test_results.txt"
    path.write_text("f1 = 0.5\n")

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(output_files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        output_files.write_text_atomic(str(path), "f1 = 0.9\n")
    assert path.read_text() == "f1 = 0.5\n"  # the old file, whole
    assert os.listdir(tmp_path) == ["ner_test_results.txt"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------------
# Flag values that would run to a meaningless end: refused before anything is read, trained or written


JOINT = ["--auxiliary_task_list", "pos", "--main_task", "ner"]


@pytest.mark.parametrize("extra, message", [
    (["--per_gpu_train_batch_size", "-1"], "--per_gpu_train_batch_size -1: give at least 1"),
    (["--per_gpu_train_batch_size", "0"], "--per_gpu_train_batch_size 0: give at least 1"),
    (["--per_gpu_eval_batch_size", "-1"], "--per_gpu_eval_batch_size -1: give at least 1"),
    (["--per_gpu_eval_batch_size", "0"], "--per_gpu_eval_batch_size 0: give at least 1"),
    (["--main_task_train_sent_num", "0"], "--main_task_train_sent_num 0: give at least 1"),
    (["--max_grad_norm", "-1"], "--max_grad_norm -1.0: give a finite value >= 0"),
    (["--learning_rate", "0"], "--learning_rate 0.0: give a finite positive value"),
    (["--learning_rate=-1e-3"], "--learning_rate -0.001: give a finite positive value"),
    (["--max_seq_length", "0"], "--max_seq_length 0: give a positive length"),
    (["--max_seq_length", "2"], "--max_seq_length 2 leaves no room for a word after the special tokens; give at least 3"),
    (["--weight_lr", "-1"], "--weight_lr -1.0: give a finite positive step size"),
    (["--weight_lr", "nan"], "--weight_lr nan: give a finite positive step size"),
    (["--inv_constant", "nan"], "--inv_constant nan: give a finite number"),
    (["--inv_constant", "inf"], "--inv_constant inf: give a finite number"),
    (["--inv_constant", "1e308", "--weight_lr", "10"], "overflows"),
])
def test_bad_flag_values_stop_before_training(tiny_data_dir, tiny_model_dir, tmp_path, capsys, extra, message):
    output = tmp_path / "out"
    argv = common(tiny_data_dir, tiny_model_dir, output) + JOINT + extra
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_weighted_joint.main(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not output.exists() or os.listdir(output) == []  # nothing written


def test_single_task_size_must_be_positive(tiny_data_dir, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: single(tiny_data_dir, tiny_model_dir, tmp_path / "out", "--train_sent_num", "0"))
    assert exit_info.value.code == 2
    assert "--train_sent_num 0: give at least 1" in capsys.readouterr().err


def test_max_grad_norm_zero_turns_clipping_off(tiny_data_dir, tiny_model_dir, tmp_path):
    """0 means no clipping (as in Hugging Face's Trainer), not clipping every gradient to zero."""
    unclipped = single(tiny_data_dir, tiny_model_dir, tmp_path / "zero", "--max_grad_norm", "0", "--max_steps", "3")
    huge = single(tiny_data_dir, tiny_model_dir, tmp_path / "huge", "--max_grad_norm", "1e30", "--max_steps", "3")
    assert unclipped["pos_test"]["loss"] == huge["pos_test"]["loss"]
    untrained = single(tiny_data_dir, tiny_model_dir, tmp_path / "none", "--learning_rate", "1e-30", "--max_steps", "3")
    assert unclipped["pos_test"]["loss"] != untrained["pos_test"]["loss"]


def test_huge_step_sizes_still_move_the_weights():
    """A finite step size, however large, takes the exact step: the weight goes to the most similar task."""
    cosines = [0.005, 0.5, 0.3, 1.0]
    updated = exponentiated_gradient_step([0.25] * 4, [-cosine for cosine in cosines], 1e308)
    assert updated[-1] == pytest.approx(1.0) and np.all(updated[:-1] < 1e-300)
    # The same step as the plain formula wherever the plain formula does not overflow.
    step = 300.0
    plain = 0.25 * np.exp(step * np.array(cosines))
    assert exponentiated_gradient_step([0.25] * 4, [-c for c in cosines], step) == pytest.approx(plain / plain.sum())


@pytest.mark.parametrize("task, labels, message", [
    ("predicate", "-\npredicate\nother\n", "a binary task needs exactly one label besides '-' or 'O'"),
    ("ner", "O\nPER\nB-LOC\n", "span F1, which needs BIO labels"),
])
def test_labels_that_do_not_fit_the_metric_stop_while_reading(tiny_data_dir, tiny_model_dir, tmp_path, task,
                                                               labels, message):
    data = copy_data(tiny_data_dir, tmp_path)
    (data / f"{task}_labels.txt").write_text(labels)
    output = tmp_path / "out"
    with pytest.raises(TaskDataError, match=f"{task}_labels.txt: .*{message}"):
        run_weighted_joint.main(common(str(data), tiny_model_dir, output) + [
            "--auxiliary_task_list", "pos", "--main_task", task])
    assert not output.exists() or os.listdir(output) == []  # stopped before training: no model


@pytest.mark.parametrize("make_output, message", [
    (lambda tmp_path: (tmp_path / "a_file").write_text("x") and tmp_path / "a_file", "is a file; give a directory"),
    (lambda tmp_path: (tmp_path / "a_file").write_text("x") and tmp_path / "a_file" / "out", "cannot be created"),
])
def test_output_dir_that_cannot_be_a_directory(tiny_data_dir, tiny_model_dir, tmp_path, capsys, make_output, message):
    output = make_output(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: single(tiny_data_dir, tiny_model_dir, output))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"--output_dir {output} {message}" in error and "Traceback" not in error
