"""Reliability, fourth round: files a run did not write, stale environments, a grid that loses its terminal,
and scripts started by an interpreter without the project's packages."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, write_tiny_bert
from tests.test_reliability import free_port
from tests.test_scripts import common

QUICK = ["--num_train_epochs", "1", "--report_to", "none"]


def single_task(data_dir, model_dir, output_dir, *extra, env=None):
    """run_single_task.py on pos as a user starts it: the completed process."""
    command = [sys.executable, "run_single_task.py", "--task", "pos", *common(data_dir, model_dir, output_dir),
               *QUICK, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def one_line_error(completed, *fragments):
    """The run failed with a single `error:` line holding every fragment (no traceback)."""
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-2000:]
    line = completed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), completed.stderr[-2000:]
    for fragment in fragments:
        assert fragment in line, line
    return line


def snapshot(directory):
    """Every file below `directory` with its bytes (symbolic links as their target)."""
    found = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            relative = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[relative] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as handle:
                    found[relative] = handle.read()
    return found


# ---------------------------------------------------------------------------------------------------------
# 1. A run removes or overwrites only what a run wrote


def write_files(directory, contents):
    for name, text in contents.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


def test_a_fresh_run_leaves_the_folders_and_files_it_does_not_write(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "out"
    users = {"checkpoints/best_model.pt": "mine", "tensorboard/notes.txt": "mine", "ner_test_predictions.txt": "mine",
             "notes.txt": "mine"}
    write_files(output, users)
    completed = single_task(tiny_data_dir, tiny_model_dir, output)  # no checkpoints, no TensorBoard
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert {name: text for name, text in snapshot(output).items() if name in users} == {
        name: text.encode() for name, text in users.items()}
    assert (output / "pos_test_predictions.txt").is_file()


def test_a_run_refuses_to_overwrite_files_no_run_wrote(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "out"
    write_files(output, {"vocab.txt": "mine", "config.json": "{}", "run.log": "mine", "checkpoints/best_model.pt": "x"})
    before = snapshot(output)
    completed = single_task(tiny_data_dir, tiny_model_dir, output, "--save_steps", "5")
    one_line_error(completed, f"--output_dir {output} holds checkpoints/, config.json, run.log, vocab.txt, which this "
                              "run would write, and no run wrote there", "choose another --output_dir")
    assert snapshot(output) == before and sorted(os.listdir(output)) == ["checkpoints", "config.json", "run.log",
                                                                          "vocab.txt"]


def test_overwriting_a_run_removes_only_what_it_wrote(tiny_data_dir, tiny_model_dir, tmp_path):
    output, elsewhere = tmp_path / "out", tmp_path / "scratch"
    first = single_task(tiny_data_dir, tiny_model_dir, output, "--save_steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (output / "checkpoints").exists()  # the finished run removed its checkpoints
    # After the run: a user's files beside it, and its checkpoint folder now a link to scratch space.
    write_files(output, {"ner_test_predictions.txt": "mine", "notes.txt": "mine"})
    write_files(elsewhere, {"keep.pt": "mine", "checkpoint-00000009.pt": "an earlier run's, left there"})
    os.symlink(elsewhere, output / "checkpoints")
    again = single_task(tiny_data_dir, tiny_model_dir, output, "--save_steps", "2", "--overwrite_output_dir",
                        "--seed", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (output / "ner_test_predictions.txt").read_text() == "mine" and (output / "notes.txt").read_text() == "mine"
    assert os.path.islink(output / "checkpoints") and sorted(os.listdir(elsewhere)) == ["keep.pt"]
    with open(output / "run_args.json") as handle:
        assert json.load(handle)["seed"] == 2


# ---------------------------------------------------------------------------------------------------------
# 2. --output_dir equal to --model_name_or_path


@pytest.mark.parametrize("weights, extra", [("pytorch_model.bin", []),
                                            ("model.safetensors", ["--overwrite_output_dir"])])
def test_training_into_the_model_it_reads_is_refused(tiny_data_dir, tmp_path, weights, extra):
    model = tmp_path / "encoder"
    write_tiny_bert(model)
    if weights == "pytorch_model.bin":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
        os.remove(model / "model.safetensors")
    before = snapshot(model)
    completed = single_task(tiny_data_dir, str(model), model, *extra)
    one_line_error(completed, f"--output_dir {model} is the --model_name_or_path directory", "another --output_dir")
    assert snapshot(model) == before


# ---------------------------------------------------------------------------------------------------------
# 3. A .tawt.lock that is a symbolic link


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tiny_data_dir, tiny_model_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    output = tmp_path / "out"
    output.mkdir()
    os.symlink(victim, output / ".tawt.lock")
    completed = single_task(tiny_data_dir, tiny_model_dir, output)
    one_line_error(completed, f"{output / '.tawt.lock'}: a symbolic link", "remove the link")
    assert victim.read_text() == "precious\n"
    assert sorted(os.listdir(output)) == [".tawt.lock"]


def test_a_grid_whose_lock_file_is_a_link_is_refused(tiny_data_dir, tmp_path):
    from tawt.scripts import experiment_grid

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    root = tmp_path / "grid"
    root.mkdir()
    os.symlink(victim, root / ".tawt.lock")
    environ = {"OUTPUT_ROOT": str(root), "DATA_DIR": tiny_data_dir, "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(SystemExit, match="a symbolic link"):
        experiment_grid.main(["main", "--no_summary"], environ=environ)
    assert victim.read_text() == "precious\n"


# ---------------------------------------------------------------------------------------------------------
# 4. An archive never replaces another grid's runs


def fake_finished_run(root, relative, seed, data_dir):
    directory = os.path.join(root, relative)
    os.makedirs(directory)
    record = {"paradigm": "single_task", "main_task": "pos", "tasks": ["pos"], "seed": seed,
              "data_dir": data_dir, "args": {}}
    for name, text in (("run_args.json", json.dumps(record)), ("pos_eval_results.txt", "accuracy = 0.5\n"),
                       ("pos_test_results.txt", f"accuracy = 0.{seed}\n"), ("all_results.json", "{}\n")):
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(text)


def test_archiving_another_grid_into_an_archive_is_refused(tiny_data_dir, tmp_path):
    from tawt.testing import archive_results
    from tawt.testing.output_tree import OutputTreeError

    first, second, archive = tmp_path / "first", tmp_path / "second", tmp_path / "archive"
    fake_finished_run(first, "single/pos/seed_1", 1, tiny_data_dir)
    fake_finished_run(second, "single/pos/seed_1", 2, tiny_data_dir)
    archive_results.archive(str(first), str(archive))
    before = snapshot(archive)
    archive_results.archive(str(first), str(archive))  # the same grid again: an update, allowed
    assert snapshot(archive) == before
    with pytest.raises(OutputTreeError, match="the archive holds another run in this place"):
        archive_results.archive(str(second), str(archive))
    assert snapshot(archive) == before
    with pytest.raises(OutputTreeError, match="would be written over the runs it archives"):
        archive_results.archive(str(first), str(first))


# ---------------------------------------------------------------------------------------------------------
# 13. --torch_compile without a compiler is refused before anything is written


def test_torch_compile_without_a_compiler_is_refused_first(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "compiled"
    completed = single_task(tiny_data_dir, tiny_model_dir, output, "--torch_compile",
                            env={"CXX": "no-such-compiler", "PATH": os.path.dirname(sys.executable)})
    one_line_error(completed, "--torch_compile: no C++ compiler found", "leave --torch_compile out")
    assert not output.exists()


# ---------------------------------------------------------------------------------------------------------
# 11. A distributed environment left in a shell


def test_a_stale_world_size_waits_a_bounded_time_and_says_so(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "alone"
    arguments = ["--task", "pos", *common(tiny_data_dir, tiny_model_dir, output), *QUICK]
    # The run as a user starts it, with the wait shortened from its two minutes.
    code = ("import sys, run_single_task; from tawt import distributed; from tawt.cross_task_training import run_main; "
            "distributed.RENDEZVOUS_SECONDS = 3; run_main(lambda: run_single_task.main(sys.argv[1:]))")
    environment = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(free_port())}
    completed = subprocess.run([sys.executable, "-c", code, *arguments], cwd=ROOT, capture_output=True, text=True,
                               timeout=120, env=environment)
    assert "WORLD_SIZE=2 RANK=0 in the environment, without torchrun: waiting up to 3 s" in completed.stderr
    one_line_error(completed, "did not all meet at 127.0.0.1", "within 3 s", "unset WORLD_SIZE")
    assert not output.exists()


@pytest.mark.parametrize("environment, message", [
    ({"WORLD_SIZE": "x"}, "WORLD_SIZE='x' in the environment: not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": ""}, "WORLD_SIZE=2 in the environment, but no MASTER_ADDR"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK=2 in the environment"),
])
def test_a_broken_distributed_environment_is_one_line(tiny_data_dir, tiny_model_dir, tmp_path, environment, message):
    completed = single_task(tiny_data_dir, tiny_model_dir, tmp_path / "out", env=environment)
    one_line_error(completed, message, "unset WORLD_SIZE")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# 12. The grid's terminal closes (SIGHUP), or the grid is killed outright


def quiet_jobs(tmp_path, count=2):
    """`count` jobs that write their Python process's id and wait silently, each below a shell of its own (as
    the grid's `sh scripts/run_*.sh` starts python): (job list path, marker paths)."""
    from tawt.scripts import job_queue

    jobs, markers = [], []
    for index in range(count):
        marker = tmp_path / f"started_{index}"
        script = tmp_path / f"job_{index}.py"
        script.write_text(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
        jobs.append(job_queue.Job(command=f"sh -c '{sys.executable} {script}; true'",
                                  log=str(tmp_path / f"job_{index}.log"), done_file=str(tmp_path / f"done_{index}")))
        markers.append(marker)
    job_list = tmp_path / "jobs.jsonl"
    job_queue.write_job_list(jobs, job_list)
    return job_list, markers


def start_queue(job_list, markers):
    """The queue in a session of its own, as from a terminal, once every job has started."""
    from tests.test_experiment_scripts import clean_environment

    queue = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "job_queue.py"), str(job_list)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                             env=clean_environment(CUDA_VISIBLE_DEVICES="", SLOTS=len(markers)))
    deadline = time.time() + 120
    while not all(marker.exists() and marker.read_text() for marker in markers):
        assert queue.poll() is None and time.time() < deadline, "the jobs did not start"
        time.sleep(0.1)
    return queue


def test_a_hangup_stops_the_queue_and_its_runs(tmp_path):
    from tests.test_experiment_scripts import process_lives

    job_list, markers = quiet_jobs(tmp_path)
    queue = start_queue(job_list, markers)
    queue.send_signal(signal.SIGHUP)
    output, _ = queue.communicate(timeout=90)
    assert queue.returncode == 1, output
    assert "interrupted; run the same command again to resume" in output and "2 not started" in output
    assert not any(process_lives(int(marker.read_text())) for marker in markers)


def test_runs_die_with_a_queue_killed_outright(tmp_path):
    from tests.test_experiment_scripts import process_lives

    job_list, markers = quiet_jobs(tmp_path)
    queue = start_queue(job_list, markers)
    queue.kill()
    queue.wait()
    survivors = [marker for marker in markers if process_lives(int(marker.read_text()), seconds=30)]
    for marker in survivors:  # not left running after the test either
        os.kill(int(marker.read_text()), signal.SIGKILL)
    assert not survivors


# ---------------------------------------------------------------------------------------------------------
# 14. The scripts started by an interpreter without the project's packages


def test_a_script_whose_python_has_no_torch_says_so_before_any_run(tiny_data_dir, tiny_model_dir, tmp_path):
    from tests.test_experiment_scripts import run_script

    bare = tmp_path / "bare_python"  # this Python without its site-packages: no torch, as an unactivated venv's
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    bare.chmod(0o755)
    output = tmp_path / "run"
    completed = run_script("run_single.sh", "pos", "10", cwd=tmp_path, PYTHON=bare, DATA_DIR=tiny_data_dir,
                           BERT_MODEL=tiny_model_dir, OUTPUT_DIR=output)
    assert completed.returncode == 2
    assert f"PYTHON={bare} ({bare}) cannot import torch" in completed.stderr
    assert "PYTHON=venv/bin/python sh" in completed.stderr
    assert not output.exists()


def test_the_tests_start_scripts_with_their_own_interpreter():
    from tests.test_experiment_scripts import clean_environment

    assert clean_environment(PATH="/nowhere")["PYTHON"] == sys.executable
    assert clean_environment(PYTHON="other")["PYTHON"] == "other"


# ---------------------------------------------------------------------------------------------------------
# 13. Tracebacks: a gzip-compressed training file, a tokenizer larger than the encoder's embeddings


def test_a_training_file_stored_gzip_compressed_trains(tiny_data_dir, tiny_model_dir, tmp_path):
    import gzip

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    with open(data / "train_pos.txt", "rb") as source, gzip.open(data / "train_pos.txt.gz", "wb") as target:
        target.write(source.read())
    os.remove(data / "train_pos.txt")
    completed = single_task(str(data), tiny_model_dir, tmp_path / "out")
    assert completed.returncode == 0, completed.stderr[-2000:]
    with open(tmp_path / "out" / "run_args.json") as handle:
        assert json.load(handle)["training_data"]["pos"]["file"] == str(data / "train_pos.txt.gz")


def test_a_tokenizer_larger_than_the_embeddings_is_refused(tiny_data_dir, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "encoder"
    write_tiny_bert(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens(["zebra", "giraffe"])
    tokenizer.save_pretrained(model)
    completed = single_task(tiny_data_dir, str(model), tmp_path / "out")
    one_line_error(completed, f"its tokenizer has {len(tokenizer)} tokens and the encoder embeds {len(tokenizer) - 2}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting, value, message", [
    ("INV_CONSTANTS", "1 x", "INV_CONSTANTS: 'x' is not a positive number"),
    ("INV_CONSTANTS", "1 -10", "INV_CONSTANTS: '-10' is not a positive number"),
    ("MAX_LENGTH", "abc", "MAX_LENGTH='abc': give a whole number >= 1"),
    ("BATCH_SIZE", "0", "BATCH_SIZE='0': give a whole number >= 1"),
])
def test_a_grid_setting_every_run_would_fail_on_is_refused_first(tmp_path, setting, value, message):
    from tawt.scripts import experiment_grid

    with pytest.raises(experiment_grid.GridError, match=message):
        experiment_grid.settings_from_environment({"OUTPUT_ROOT": str(tmp_path), setting: value}, prepare_data=False)


def test_the_same_seed_or_inv_constant_twice_is_one_run(tmp_path):
    from tawt.scripts import experiment_grid

    settings = experiment_grid.settings_from_environment(
        {"OUTPUT_ROOT": str(tmp_path), "SEEDS": "1 01 2", "INV_CONSTANTS": "10 10.0 1e1 30"}, prepare_data=False)
    assert settings.seeds == ["1", "2"]
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    jobs = experiment_grid.main_section_jobs(maker, settings)
    assert len({job.done_file for job in jobs}) == len(jobs)
    weighted_pretraining = sorted(job.name for job in jobs if "weighted_pretraining" in job.name)
    assert weighted_pretraining == [f"main/weighted_pretraining_ic{constant}/pos/seed_{seed}"
                                    for constant in ("10", "30") for seed in ("1", "2")]
