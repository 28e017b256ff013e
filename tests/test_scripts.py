"""The paradigm scripts end to end on the tiny fixtures: every output a run writes (docs/outputs.md)."""

import glob
import json
import os
import subprocess
import sys
import tomllib

import pytest

import run_single_task
import run_weighted_joint
from tests.conftest import ROOT

TINY_TRAINING = ["--max_seq_length", "32", "--per_gpu_train_batch_size", "8", "--per_gpu_eval_batch_size", "16",
                 "--num_train_epochs", "2", "--learning_rate", "1e-3", "--do_train", "--do_eval", "--do_predict"]


def common(data_dir, model_dir, output_dir):
    return ["--data_dir", data_dir, "--model_name_or_path", model_dir, "--output_dir", str(output_dir)] + TINY_TRAINING


def read_results(path):
    with open(path) as handle:
        return dict(line.rstrip("\n").split(" = ", 1) for line in handle if line.strip())


def assert_run_outputs(output_dir, tasks, data_dir):
    names = set(os.listdir(output_dir))
    for required in ("config.json", "model.safetensors", "task_heads.json", "task_heads.safetensors",
                     "tokenizer.json", "run_args.json", "all_results.json"):
        assert required in names, required
    for task in tasks:
        for split in ("eval", "test"):
            results = read_results(os.path.join(output_dir, f"{task}_{split}_results.txt"))
            assert "loss" in results and ("f1" in results or "accuracy" in results)
        with open(os.path.join(output_dir, f"{task}_test_predictions.txt")) as handle:
            predicted = handle.read().splitlines()
        with open(os.path.join(data_dir, f"test_{task}.txt")) as handle:
            gold = handle.read().splitlines()
        assert len(predicted) == len(gold)
        for predicted_line, gold_line in zip(predicted, gold):
            assert predicted_line.split()[:-1] == gold_line.split()[:-1]  # same words, blank lines kept


def weight_history(output_dir):
    with open(os.path.join(output_dir, "task_weights.json")) as handle:
        return json.load(handle)


def test_single_task_end_to_end_and_reload(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "single"
    summary = run_single_task.main(common(tiny_data_dir, tiny_model_dir, output) + ["--task", "pos", "--train_sent_num", "12"])
    assert_run_outputs(str(output), ["pos"], tiny_data_dir)
    with open(output / "run_args.json") as handle:
        recorded = json.load(handle)
    assert recorded["paradigm"] == "single_task" and recorded["args"]["train_sent_num"] == 12
    assert "torch" in recorded["versions"] and "git_commit" in recorded

    # The saved directory evaluates to the same numbers without training.
    again = tmp_path / "reloaded"
    reloaded = run_single_task.main(["--data_dir", tiny_data_dir, "--model_name_or_path", str(output),
                                     "--output_dir", str(again), "--task", "pos", "--do_predict",
                                     "--max_seq_length", "32"])
    assert reloaded["pos_test"]["accuracy"] == summary["pos_test"]["accuracy"]
    assert (again / "pos_test_predictions.txt").read_text() == (output / "pos_test_predictions.txt").read_text()


def test_weighted_joint_moves_weights_towards_main_task(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "weighted_joint"
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num", "10",
        "--gradient_sampling_batch_size", "8"])
    tasks = ["pos", "chunking", "ner"]
    assert_run_outputs(str(output), tasks, tiny_data_dir)
    history = weight_history(output)
    assert history["tasks"] == tasks and history["weighting"] == "tawt"
    assert [entry["stage"] for entry in history["history"]] == ["initial", "epoch", "epoch"]
    main_weights = [entry["weights"][-1] for entry in history["history"]]
    assert main_weights[0] == pytest.approx(1 / 3)
    assert main_weights[1] > main_weights[0] and main_weights[2] > main_weights[1]
    for entry in history["history"]:
        assert sum(entry["weights"]) == pytest.approx(1.0)
    assert history["history"][1]["cosine_similarities"][-1] == 1.0
    with open(output / "run_args.json") as handle:
        assert json.load(handle)["paradigm"] == "weighted_joint"


def test_uniform_fixed_weights_equal_plain_joint_training(tiny_data_dir, tiny_model_dir, tmp_path):
    arguments = ["--auxiliary_task_list", "pos,chunking", "--main_task", "ner", "--main_task_train_sent_num", "10",
                 "--weighting", "fixed"]
    plain = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "joint") + arguments)
    fixed = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "fixed") + arguments
                                    + ["--task_weights", "1", "1", "1"])  # normalised to uniform
    assert plain == fixed
    assert weight_history(tmp_path / "joint")["history"] == weight_history(tmp_path / "fixed")["history"]
    assert len(weight_history(tmp_path / "fixed")["history"]) == 1  # only the starting weights
    skewed = run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "skewed") + arguments
                                     + ["--task_weights", "0.1", "0.1", "0.8"])
    assert skewed != plain
    with open(tmp_path / "skewed" / "run_args.json") as handle:
        assert json.load(handle)["paradigm"] == "joint_fixed_weights"


def run_cli(*arguments):
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_documents_every_flag():
    for script, flags in (
        ("run_single_task.py", ["--task", "--train_sent_num"]),
        ("run_weighted_joint.py", ["--auxiliary_task_list", "--main_task", "--main_task_train_sent_num",
                                   "--task_weights", "--weight_lr", "--normalized_gradients",
                                   "--gradient_sampling_batch_size", "--inv_constant", "--weighting"]),
    ):
        completed = run_cli(script, "--help")
        assert completed.returncode == 0
        for flag in flags + ["--data_dir", "--model_type", "--model_name_or_path", "--output_dir", "--max_seq_length",
                             "--do_train", "--do_eval", "--do_predict", "--per_gpu_train_batch_size",
                             "--per_gpu_eval_batch_size", "--learning_rate", "--weight_decay", "--adam_epsilon",
                             "--max_grad_norm", "--num_train_epochs", "--max_steps", "--warmup_steps",
                             "--logging_steps", "--save_steps", "--seed", "--no_cuda", "--overwrite_output_dir",
                             "--fp16", "--bf16"]:
            assert flag in completed.stdout, (script, flag)


@pytest.mark.parametrize("extra, message", [
    (["--auxiliary_task_list", "pos", "ner", "--main_task", "ner"], "--main_task ner is also in --auxiliary_task_list"),
    (["--auxiliary_task_list", "pos", "pos", "--main_task", "ner"], "names ['pos'] more than once"),
    (["--auxiliary_task_list", "pos", "--main_task", "ner", "--task_weights", "1", "2", "3"], "has 3 values but"),
    (["--auxiliary_task_list", "pos", "--main_task", "ner", "--task_weights", "0", "0"], "all zero"),
    (["--auxiliary_task_list", "pos", "--main_task", "ner", "--task_weights", "-1", "2"], "non-negative"),
    (["--auxiliary_task_list", "pos", "--main_task", "ner", "--inv_constant", "0"], "would freeze"),
])
def test_bad_command_lines_fail_with_one_clear_line(tiny_data_dir, tiny_model_dir, tmp_path, capsys, extra, message):
    from tawt.cross_task_training import run_main

    argv = ["--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"),
            "--do_train", *extra]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_weighted_joint.main(argv))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_user_errors_print_no_traceback(tiny_data_dir, tiny_model_dir, tmp_path):
    completed = run_cli("run_single_task.py", "--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir,
                        "--output_dir", str(tmp_path / "out"), "--do_train", "--task", "missing_task")
    assert completed.returncode == 2
    assert "train_missing_task.txt: file not found" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_output_directory_with_results_is_protected(tiny_data_dir, tiny_model_dir, tmp_path, capsys):
    from tawt.cross_task_training import run_main

    output = tmp_path / "taken"
    output.mkdir()
    (output / "pos_test_results.txt").write_text("accuracy = 0.5\n")
    argv = ["--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir, "--output_dir", str(output),
            "--do_train", "--task", "pos"]
    with pytest.raises(SystemExit):
        run_main(lambda: run_single_task.main(argv))
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert (output / "pos_test_results.txt").read_text() == "accuracy = 0.5\n"


def test_group_by_length_trains_end_to_end(tiny_data_dir, tiny_model_dir, tmp_path):
    summary = run_single_task.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "grouped")
                                   + ["--task", "ner", "--group_by_length"])
    assert summary["train_sentences"] == {"ner": 24}
    assert json.loads((tmp_path / "grouped" / "run_args.json").read_text())["args"]["group_by_length"] is True


def test_every_forward_path_gives_the_same_run(tiny_data_dir, tmp_path):
    """The forward path changes what is computed, not the results: without dropout, a weighted joint run
    with --padded_forward (the encoder's own forward) or --forward_path bucketed has the same weights,
    losses and predictions as the default (unpadded on a CPU); run_args.json records the path taken."""
    from tests.conftest import write_tiny_bert

    model_dir = write_tiny_bert(tmp_path / "no_dropout_bert", hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
    runs = {}
    for name, extra in (("unpadded", []), ("encoder", ["--padded_forward"]),
                        ("bucketed", ["--forward_path", "bucketed"])):
        output = tmp_path / name
        runs[name] = run_weighted_joint.main(common(tiny_data_dir, model_dir, output) + [
            "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--gradient_sampling_batch_size", "8",
            "--dropout", "0", "--logging_steps", "1", *extra])
        with open(output / "run_args.json") as handle:
            recorded = json.load(handle)
        assert recorded["args"]["padded_forward"] == (name == "encoder")
        assert recorded["forward_path"] == name and recorded["torch_compile"] is False
    histories = [weight_history(tmp_path / name)["history"] for name in runs]
    assert len(histories[0]) == 3 and histories[0][-1]["weights"] != histories[0][0]["weights"]
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / name / "training_log.jsonl")] for name in runs]
    predictions = [[(tmp_path / name / f"{task}_test_predictions.txt").read_text() for task in ("ner", "pos", "chunking")]
                   for name in runs]
    for other in (1, 2):
        for unpadded, padded in zip(histories[0], histories[other]):
            assert unpadded["weights"] == pytest.approx(padded["weights"], abs=1e-5)
        assert losses[0] == pytest.approx(losses[other], rel=1e-4)
        assert predictions[0] == predictions[other]


ENTRY_POINTS_IN_FOLDERS = ["benchmarks/gpu_check.py", "benchmarks/gpu_session.py", "benchmarks/method_costs.py",
                           "benchmarks/run_benchmarks.py",
                           "data/make_default_data.py", "data/preprocess_max_len.py", "data/process_data.py",
                           "scripts/experiment_grid.py",
                           "scripts/job_queue.py", "testing/archive_results.py", "testing/collect_results.py", "testing/compare_optimizers.py",
                           "testing/significance_testing.py", "testing/task_affinity.py"]


def without_pythonpath():
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed_here(tmp_path_factory):
    """The editable install that setup.sh makes points at this checkout (checked once for the module)."""
    where = subprocess.run([sys.executable, "-c", "import utils_cross_task; print(utils_cross_task.__file__)"],
                           cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=60,
                           env=without_pythonpath())
    installed = where.stdout.strip() or where.stderr.strip().splitlines()[-1]
    assert installed == os.path.join(ROOT, "utils_cross_task.py"), (
        f"the editable install does not point at this checkout ({installed}): run `bash setup.sh` here, or "
        f"`pip install --no-deps -e {ROOT}`")


@pytest.mark.parametrize("entry_point", ENTRY_POINTS_IN_FOLDERS)
def test_entry_points_in_folders_run_from_any_directory(installed_here, tmp_path, entry_point):
    """Through the editable install that setup.sh makes, with no PYTHONPATH: the way users run them."""
    completed = subprocess.run([sys.executable, os.path.join(ROOT, entry_point), "--help"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, env=without_pythonpath())
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout
    source = open(os.path.join(ROOT, entry_point)).read()
    assert "sys.path" not in source  # one way to find the modules: the install (or PYTHONPATH), not the script


DESIGN_MODULES = sorted([
    "modeling_multi_bert", "run_single_task", "run_weighted_joint", "run_weighted_normalized_joint",
    "run_weighted_pretraining", "utils_cross_task", "weighted_training_basics",
])


def test_every_entry_point_in_a_folder_is_checked():
    found = sorted(os.path.relpath(path, ROOT) for folder in ("benchmarks", "data", "scripts", "testing")
                   for path in glob.glob(os.path.join(ROOT, folder, "*.py"))
                   if 'if __name__ == "__main__":' in open(path).read())
    assert found == sorted(ENTRY_POINTS_IN_FOLDERS)


def test_the_install_adds_tawt_and_the_design_modules_only():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        listed = tomllib.load(handle)["tool"]["setuptools"]
    modules = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith(".py"))
    folders = sorted(name for name in os.listdir(ROOT) if name != "tests"
                     and os.path.isfile(os.path.join(ROOT, name, "__init__.py")))
    # A module with a generic name (errors, evaluation, ...) belongs in tawt/, not at the top level.
    assert modules == DESIGN_MODULES, "a top-level module that is not one of the design's goes into tawt/"
    assert listed["py-modules"] == modules, "pyproject.toml's py-modules must list every top-level module"
    assert listed["packages"] == ["tawt"], "the folders are reached as tawt.data, tawt.testing, ..., not installed"
    assert folders == ["benchmarks", "data", "scripts", "tawt", "testing"]
