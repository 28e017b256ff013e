"""Reliability, third round: silent wrong results, shared output directories, the grid's idea of "done",
and the messages of damaged or unusual input (each case as a user or a hostile one would meet it)."""

import json
import os
import subprocess
import sys

import pytest

from tawt.scripts import experiment_grid
from tests.conftest import ROOT
from tests.test_scripts import TINY_TRAINING, common

QUICK = ["--num_train_epochs", "1"]  # after TINY_TRAINING's 2 epochs: given twice, the last is used


def single_task_command(data_dir, model_dir, output_dir, *extra):
    return [sys.executable, "run_single_task.py", "--task", "pos", *common(data_dir, model_dir, output_dir), *extra]


def run_args(output_dir):
    with open(os.path.join(output_dir, "run_args.json")) as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------------------
# 1. A user's EXTRA_ARGS adds to the preset's flags


@pytest.mark.parametrize("grid, preset_flags", [
    ("reduced", "--learning_rate 2e-4"),
    ("medium", "--learning_rate 5e-4 --per_gpu_eval_batch_size 64 --eval_main_task_only"),
])
def test_extra_args_add_to_the_presets_flags(grid, preset_flags):
    settings = experiment_grid.settings_from_environment({"GRID": grid, "EXTRA_ARGS": "--save_steps 5 --bf16"},
                                                         prepare_data=False)
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    # The grid's checkpoints, the preset's flags, then the user's: the user's --save_steps comes last and wins.
    assert maker.shared["EXTRA_ARGS"] == f"--save_steps 1000 {preset_flags} --save_steps 5 --bf16"
    job = experiment_grid.main_section_jobs(maker, settings)[0]
    assert preset_flags in job.command and "--bf16" in job.command


@pytest.fixture(scope="module")
def recorded_run(tiny_data_dir, tiny_model_dir, tmp_path_factory):
    """A single-task run started as a user starts one, with two threads: (its stderr, its output directory)."""
    output = tmp_path_factory.mktemp("recorded")
    completed = subprocess.run(single_task_command(tiny_data_dir, tiny_model_dir, output, *QUICK), cwd=ROOT,
                               capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stderr, output


def test_a_flag_given_twice_takes_the_last_and_the_run_records_both(recorded_run):
    stderr, output = recorded_run
    assert "--num_train_epochs is given 2 times ('2', '1'): the last is used" in stderr
    recorded = run_args(output)
    assert recorded["args"]["num_train_epochs"] == 1
    assert recorded["repeated_flags"] == {"--num_train_epochs": ["2", "1"]}


# ---------------------------------------------------------------------------------------------------------
# 8 and 9. The grid's idea of "done"; an OUTPUT_ROOT that cannot be created


def test_a_run_stopped_before_its_last_file_is_not_done(tmp_path, capsys):
    from tawt.testing.output_tree import find_runs

    settings = experiment_grid.settings_from_environment({"OUTPUT_ROOT": str(tmp_path / "grid")}, prepare_data=False)
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    job = experiment_grid.main_section_jobs(maker, settings)[1]
    run_dir = os.path.dirname(job.done_file)
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    # Killed between the main task's results and its predictions: results, no all_results.json, a checkpoint.
    for name, text in (("pos_test_results.txt", "accuracy = 0.5\n"), ("run.log", ""),
                       ("checkpoints/checkpoint-00000003.pt", "state"),
                       ("run_args.json", json.dumps({"paradigm": "joint", "main_task": "pos", "tasks": ["pos"],
                                                     "seed": 1, "args": {}}))):
        with open(os.path.join(run_dir, name), "w") as handle:
            handle.write(text)
    assert not job.is_done()
    assert "--overwrite_output_dir" not in job.command  # it resumes from its checkpoint
    with pytest.raises(Exception, match="holds no run_args.json"):
        find_runs(settings.output_root)  # the tables and the significance batch do not read it
    assert f"skipping {run_dir}: its run has not finished" in capsys.readouterr().err
    with open(os.path.join(run_dir, "all_results.json"), "w") as handle:
        handle.write("{}\n")
    assert job.is_done() and [run.directory for run in find_runs(settings.output_root)] == [run_dir]


@pytest.mark.parametrize("where", ["a file", "/proc/x"])
def test_an_output_root_that_cannot_be_created_fails(tiny_data_dir, tmp_path, capsys, where):
    output_root = "/proc/x" if where == "/proc/x" else str(tmp_path / "a_file")
    if where == "a file":
        open(output_root, "w").close()
    environ = {"OUTPUT_ROOT": output_root, "DATA_DIR": tiny_data_dir, "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(SystemExit, match=f"error: OUTPUT_ROOT={output_root}: cannot be created"):
        experiment_grid.main(["main", "--no_summary"], environ=environ)


def test_a_job_whose_log_cannot_be_written_fails_the_queue(tmp_path):
    from tawt.scripts import job_queue

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    job = job_queue.Job(command="true", log=str(blocker / "logs" / "run.log"), done_file=str(tmp_path / "never"))
    report = job_queue.run_jobs([job], [job_queue.Slot(label="CPU")], echo=lambda message: None)
    assert not report.ok and report.failed[0][0] is job and "not run" in report.failed[0][1]


# ---------------------------------------------------------------------------------------------------------
# 7. Two runs, one directory


JOINT = ["run_weighted_joint.py", "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner",
         "--main_task_train_sent_num", "10", "--gradient_sampling_batch_size", "8"]


def checkpoints_in(output_dir):
    directory = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return [name for name in os.listdir(directory) if name.startswith("checkpoint-")]


def test_a_second_run_into_a_busy_directory_is_refused_until_the_first_dies(tiny_data_dir, tiny_model_dir, tmp_path):
    import signal
    import time

    import run_weighted_joint
    from tawt.errors import UsageError

    output = tmp_path / "shared"
    flags = JOINT[1:] + common(tiny_data_dir, tiny_model_dir, output) + ["--save_steps", "1", "--num_train_epochs", "4"]
    first = subprocess.Popen([sys.executable, JOINT[0], *flags], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not checkpoints_in(output):
            assert first.poll() is None and time.time() < deadline, "the first run ended before it was joined"
            time.sleep(0.05)
        with pytest.raises(UsageError, match=rf"--output_dir {output} is in use by another run \(pid {first.pid} "
                                             rf"on .*run_weighted_joint.py"):
            run_weighted_joint.main(flags + ["--seed", "2"])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (output / "ner_test_results.txt").exists()
    # The operating system released the dead run's lock: the same command resumes it.
    run_weighted_joint.main(flags)
    assert run_args(output)["resumed_from_checkpoint"] is not None and run_args(output)["seed"] == 1
    assert not (output / ".tawt.lock").exists()


def test_a_second_grid_on_a_busy_output_root_is_refused(tiny_data_dir, tmp_path):
    root = tmp_path / "grid"
    root.mkdir()
    hold = f"import time; from tawt import output_lock; output_lock.lock_directory({str(root)!r}); print('held', flush=True); "
    holder = subprocess.Popen([sys.executable, "-c", hold + "time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        environ = {"OUTPUT_ROOT": str(root), "DATA_DIR": tiny_data_dir, "CUDA_VISIBLE_DEVICES": ""}
        with pytest.raises(SystemExit, match=rf"OUTPUT_ROOT={root} is in use by another grid \(pid {holder.pid} "):
            experiment_grid.main(["main", "--no_summary"], environ=environ)
    finally:
        holder.kill()
        holder.wait()
    assert not (root / "logs").exists()  # nothing of the busy tree was touched


# ---------------------------------------------------------------------------------------------------------
# 4 and 5. A resumption must be of the same paradigm, on the same data


class Interrupted(Exception):
    """Stands for a kill right after the first checkpoint was written."""


def interrupted_run(script, flags, monkeypatch):
    """Run `script` in this process and stop it right after its first checkpoint, as a kill would."""
    from tawt import training_loop
    save_checkpoint = training_loop.save_checkpoint

    def save_then_stop(*arguments):
        save_checkpoint(*arguments)
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(training_loop, "save_checkpoint", save_then_stop)
        with pytest.raises(Interrupted):
            script.main(flags)


def joint_flags(data_dir, model_dir, output):
    return JOINT[1:] + common(data_dir, model_dir, output) + ["--save_steps", "2"]


def test_resuming_with_another_paradigms_script_is_refused(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    import run_weighted_joint
    import run_weighted_normalized_joint
    from tawt.errors import UsageError

    flags = joint_flags(tiny_data_dir, tiny_model_dir, tmp_path / "joint")
    interrupted_run(run_weighted_joint, flags, monkeypatch)
    with pytest.raises(UsageError, match=r"checkpoint-00000001.pt was written by a weighted_joint run, and this is "
                                         r"a weighted_normalized_joint run"):
        run_weighted_normalized_joint.main(flags)
    assert checkpoints_in(tmp_path / "joint")  # nothing lost: the right script still resumes it


def test_resuming_on_changed_training_data_is_refused(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    import run_weighted_joint
    from tawt.errors import UsageError

    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    flags = joint_flags(str(data), tiny_model_dir, tmp_path / "joint")
    interrupted_run(run_weighted_joint, flags, monkeypatch)
    recorded = run_args(tmp_path / "joint")["training_data"]
    assert set(recorded) == {"pos", "chunking", "ner"} and recorded["ner"]["sentences"] == 10
    train = data / "train_chunking.txt"
    train.write_text(train.read_text().replace("B-NP", "I-NP", 1))  # same size, other contents
    with pytest.raises(UsageError, match=r"was made on other training data: .*train_chunking.txt has changed since "
                                         r"\(the same size, other contents\)"):
        run_weighted_joint.main(flags)
    train.write_text(train.read_text().replace("I-NP", "B-NP", 1))  # put back: the run can resume
    before = (data / "train_pos.txt").stat().st_size
    with open(data / "train_pos.txt", "a") as handle:
        handle.write("the DT\ndog NN\n\n")  # one more sentence: 15 bytes
    with pytest.raises(UsageError, match=rf"train_pos.txt has changed since \({before} bytes then, {before + 15} "
                                         rf"now\)"):
        run_weighted_joint.main(flags)


# ---------------------------------------------------------------------------------------------------------
# 2 and 3. Weights that overflow; a ratio that empties the sources, or is not a number


def test_huge_task_weights_normalise_without_overflow():
    import numpy as np

    from tawt.run_arguments import initial_task_weights

    weights = initial_task_weights([1e308, 1e308, 1, 1], ["pos", "chunking", "predicate", "ner"])
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(1.0)
    assert weights[:2].tolist() == [0.5, 0.5]
    assert initial_task_weights([1e-320, 3e-320], ["pos", "ner"]).tolist() == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize("ratio, message", [
    ("0.1", r"--auxiliary_main_ratio 0.1 with --main_task_train_sent_num 4 cuts every source to 0 sentences; "
            r"give a ratio of at least 0.25"),
    ("nan", r"--auxiliary_main_ratio nan: give a finite positive ratio"),
    ("inf", r"--auxiliary_main_ratio inf: give a finite positive ratio"),
    ("1e308", r"overflows; give a smaller ratio"),
])
def test_a_ratio_that_empties_the_sources_or_is_not_finite_is_refused(tmp_path, ratio, message):
    import run_weighted_normalized_joint
    from tawt.errors import UsageError

    with pytest.raises(UsageError, match=message):
        run_weighted_normalized_joint.parse_arguments(
            ["--auxiliary_task_list", "pos", "--main_task", "ner", "--main_task_train_sent_num", "4",
             "--auxiliary_main_ratio", ratio, "--output_dir", str(tmp_path / "out"), "--do_train"])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# 6. What an identical rerun needs is recorded


def test_run_args_record_the_thread_count_and_the_device(recorded_run):
    recorded = run_args(recorded_run[1])
    assert recorded["torch_threads"] == 2 and recorded["device"] == "cpu"
    assert isinstance(recorded["device_name"], str) and recorded["device_name"]


# ---------------------------------------------------------------------------------------------------------
# 11. A task name cannot lead out of the data or output directory


@pytest.mark.parametrize("script, flags", [
    ("run_single_task", ["--task", "x/../../escaped"]),
    ("run_weighted_joint", ["--auxiliary_task_list", "pos", "--main_task", "..\\escaped"]),
    ("run_weighted_joint", ["--auxiliary_task_list", "pos,a/b", "--main_task", "ner"]),
])
def test_a_task_name_with_a_path_separator_is_refused_before_anything_runs(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                           script, flags):
    import importlib

    from tawt.errors import UsageError

    with pytest.raises(UsageError, match=r"a task name must be a plain name without '/' or '\\'"):
        importlib.import_module(script).main(flags + common(tiny_data_dir, tiny_model_dir, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# 10. A full disk: one line naming the file and the space needed; the model whole or not at all


def run_with_file_size_limit(argv, limit_bytes):
    """Run `argv` with writes past `limit_bytes` in any one file failing (EFBIG), as a full disk fails them."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit)


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_temporary(tiny_data_dir, tiny_model_dir,
                                                                                  tmp_path):
    output = tmp_path / "full"
    completed = run_with_file_size_limit(single_task_command(tiny_data_dir, tiny_model_dir, output, "--save_steps",
                                                             "2"), 200_000)  # a checkpoint takes about 330 KB
    assert completed.returncode == 1, completed.stderr[-2000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {output}/checkpoints/checkpoint-00000001.pt: cannot be written (File too large); "
                           "it needs about ") and " are free there: free some space" in last
    assert "Traceback" not in completed.stderr
    assert os.listdir(output / "checkpoints") == []  # no temporary left behind


def test_a_model_that_cannot_be_written_leaves_none_of_its_files(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "full"
    completed = run_with_file_size_limit(single_task_command(tiny_data_dir, tiny_model_dir, output), 50_000)
    assert completed.returncode == 1, completed.stderr[-2000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {output}: cannot be written (") and "it needs about" in last
    assert "Traceback" not in completed.stderr
    left = set(os.listdir(output))
    assert not left & {"config.json", "model.safetensors", "tokenizer.json", "task_heads.json", "vocab.txt"}
    assert not [name for name in left if name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------------------------
# 12, 13 and 16. Damaged saved models and checkpoints, and the messages about them


@pytest.fixture(scope="module")
def saved_model(tiny_data_dir, tiny_model_dir, tmp_path_factory):
    import run_single_task

    output = tmp_path_factory.mktemp("saved")
    run_single_task.main(["--task", "pos", *common(tiny_data_dir, tiny_model_dir, output), *QUICK])
    return output


def evaluate(model_dir, data_dir, output_dir):
    import run_single_task

    return run_single_task.main(["--task", "pos", "--model_name_or_path", str(model_dir), "--data_dir", data_dir,
                                 "--output_dir", str(output_dir), "--do_eval", "--max_seq_length", "32"])


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda model: open(model / "tokenizer.json", "w").close(), r"tokenizer.json: the file is damaged \(it is empty\)"),
    (lambda model: truncate(model / "model.safetensors"), r"model.safetensors: the file is damaged \(.*truncated\?\)"),
    (lambda model: os.remove(model / "task_heads.safetensors"),
     r"task_heads.safetensors: file not found, so the saved model is incomplete"),
    (lambda model: truncate(model / "task_heads.json"), r"task_heads.json: the file is damaged \(not valid JSON"),
])
def test_a_damaged_saved_model_is_named(saved_model, tiny_data_dir, tmp_path, damage, message):
    import shutil

    from tawt.errors import UsageError

    model = shutil.copytree(saved_model, tmp_path / "model")
    damage(model)
    with pytest.raises(UsageError, match=message):
        evaluate(model, tiny_data_dir, tmp_path / "evaluation")


def test_resuming_from_a_file_that_is_not_a_checkpoint_is_refused(saved_model, tiny_data_dir, tiny_model_dir, tmp_path):
    import run_single_task
    from tawt.errors import UsageError

    with pytest.raises(UsageError, match=r"model.safetensors: (not a checkpoint of these scripts|cannot be read as a "
                                         r"checkpoint .*give another checkpoint with --resume_from_checkpoint)"):
        run_single_task.main(["--task", "pos", *common(tiny_data_dir, tiny_model_dir, tmp_path / "out"),
                              "--resume_from_checkpoint", str(saved_model / "model.safetensors")])
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "not_ours.pt")
    with pytest.raises(UsageError, match=r"not_ours.pt: not a checkpoint of these scripts"):
        run_single_task.main(["--task", "pos", *common(tiny_data_dir, tiny_model_dir, tmp_path / "out"),
                              "--resume_from_checkpoint", str(tmp_path / "not_ours.pt")])


def test_a_damaged_only_checkpoint_and_then_none_are_explained(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    import run_weighted_joint
    from tawt.errors import UsageError

    output = tmp_path / "joint"
    flags = joint_flags(tiny_data_dir, tiny_model_dir, output)
    interrupted_run(run_weighted_joint, flags, monkeypatch)
    [name] = checkpoints_in(output)
    truncate(output / "checkpoints" / name)
    with pytest.raises(UsageError, match=r"cannot be read as a checkpoint .*it is the only one, so the run cannot be "
                                         r"resumed: pass --overwrite_output_dir"):
        run_weighted_joint.main(flags)
    os.remove(output / "checkpoints" / name)
    with pytest.raises(UsageError, match=r"already holds a run \(an unfinished one whose checkpoints are gone"):
        run_weighted_joint.main(flags)


def test_a_broken_link_and_a_data_dir_that_is_a_file_are_named(tiny_data_dir, tiny_model_dir, tmp_path):
    import shutil

    import run_single_task
    from tawt.errors import TaskDataError, UsageError

    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    os.remove(data / "dev_pos.txt")
    os.symlink(tmp_path / "elsewhere" / "dev_pos.txt", data / "dev_pos.txt")
    with pytest.raises(TaskDataError, match=r"dev_pos.txt: a symbolic link to .*elsewhere/dev_pos.txt, which does "
                                            r"not exist"):
        run_single_task.main(["--task", "pos", *common(str(data), tiny_model_dir, tmp_path / "out")])
    with pytest.raises(UsageError, match=r"--data_dir .*train_pos.txt is a file; give the directory"):
        run_single_task.main(["--task", "pos", *common(str(data / "train_pos.txt"), tiny_model_dir, tmp_path / "out")])


# ---------------------------------------------------------------------------------------------------------
# 14. One damaged task_weights.json costs its plot, not the table


def test_a_damaged_task_weights_file_costs_only_its_plot(tmp_path, caplog):
    from tawt.testing import collect_results
    from tests.conftest import write_task_files
    from tests.test_collect_results import write_run

    data_dir = write_task_files(tmp_path / "data", sizes={"train": 2, "dev": 2, "test": 2})
    root = tmp_path / "out"
    runs = [write_run(str(root), data_dir, "weighted_joint", "ner", seed, 0.5 + seed / 10, 0.5,
                      weights=[[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]], weighting="tawt") for seed in (1, 2)]
    with open(os.path.join(runs[1], "task_weights.json"), "r+") as handle:
        text = handle.read()
        handle.seek(0)
        handle.truncate()
        handle.write(text[:len(text) // 2])
    collect_results.main([str(root)])
    assert (root / "summary" / "table1.md").is_file()
    assert f"no task-weight plot for {runs[1]}: {runs[1]}/task_weights.json line 1: not valid JSON" in caplog.text
    assert len(os.listdir(root / "summary" / "task_weights")) == 1


# ---------------------------------------------------------------------------------------------------------
# 15. process_data.py with an --output_dir that is a file


def test_process_data_refuses_an_output_dir_that_is_a_file(tmp_path):
    from tawt.data import process_data

    corpus = tmp_path / "train_conll"
    corpus.write_text("bc/cnn/00/cnn_0001 0 0 Hello UH (TOP*) - - - - * -\n\n")
    before = corpus.read_text()
    with pytest.raises(SystemExit, match=rf"^error: --output_dir {corpus} is a file; give the directory"):
        process_data.main(["ontonotes", "--train", str(corpus), "--output_dir", str(corpus)])
    assert corpus.read_text() == before
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    with pytest.raises(SystemExit, match=r"^error: .*blocked.*: Not a directory; choose another --output_dir"):
        process_data.main(["ontonotes", "--train", str(corpus), "--output_dir", str(blocked / "data")])


# ---------------------------------------------------------------------------------------------------------
# 17. Smaller: a refused run's new directory, the weight log's wording, the probe's time, identical batches


def test_a_refused_run_leaves_no_new_output_directory(tiny_data_dir, tiny_model_dir, tmp_path):
    import shutil

    import run_single_task
    from tawt.errors import TaskDataError

    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    os.remove(data / "dev_pos.txt")
    with pytest.raises(TaskDataError, match="dev_pos.txt: file not found"):
        run_single_task.main(["--task", "pos", *common(str(data), tiny_model_dir, tmp_path / "new" / "out")])
    assert not (tmp_path / "new" / "out").exists()


def test_weight_log_names_the_epoch_and_identical_sampled_batches_are_warned(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                              caplog):
    import logging

    import run_weighted_joint

    caplog.set_level(logging.INFO, logger="tawt")
    run_weighted_joint.main(JOINT[1:] + common(tiny_data_dir, tiny_model_dir, tmp_path / "out") +
                            ["--gradient_sampling_batches", "2", "--gradient_sampling_batch_size", "16",
                             "--weight_update_steps", "2", "--max_steps", "3", "--do_eval", "--eval_main_task_only"])
    assert ("ner has 10 training sentences, no more than --gradient_sampling_batch_size 16: its 2 sampled batches "
            "are identical") in caplog.text
    assert "pos has 24" not in caplog.text  # larger than a batch: M different batches
    assert "task weights (initial): pos 0.3333" in caplog.text
    assert "task weights (within epoch 1, step 2): " in caplog.text
    assert "task weights (after epoch 1, step 3): " in caplog.text


def test_the_probes_time_is_shown_in_tenths_of_a_second():
    from tawt.testing.task_affinity import seconds_text

    assert seconds_text(2.34) == "2.3 s" and seconds_text(0.04) == "0.0 s" and seconds_text(150) == "2.5 min"
