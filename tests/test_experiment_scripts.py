"""scripts/: the paradigm shell scripts, the job queue and the paper's experiment grid (docs/grid.md)."""

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tawt.scripts import experiment_grid, job_queue
from tests.conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")

# A stand-in for the Python interpreter of the paradigm scripts (PYTHON=...): it records the command line it
# was given and, like a finished run, writes the main task's test results and task_weights.json.
FAKE_PYTHON = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    if sys.argv[1] == "-c":  # the scripts' check that this interpreter has torch: the real one answers
        os.execv({python!r}, [{python!r}] + sys.argv[1:])
    script, argv = os.path.basename(sys.argv[1]), sys.argv[2:]
    def values(flag):
        if flag not in argv:
            return None
        start = argv.index(flag) + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
        return argv[start:end]
    output_dir = values("--output_dir")[0]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "argv.json"), "w") as handle:
        json.dump({{"script": script, "argv": argv, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}, handle)
    main_task = (values("--main_task") or values("--task"))[0]
    tasks = (values("--auxiliary_task_list") or []) + ([main_task] if "pretraining" not in script else [])
    seed = int(values("--seed")[0])
    final = [float(seed + index + ("normalized" in script)) for index in range(len(tasks))]
    # Two epochs: the weights of the first update trained the last epoch; the second update trained nothing.
    history = [{{"stage": "initial", "epoch": 0, "weights": [1 / len(tasks)] * len(tasks)}},
               {{"stage": "epoch", "epoch": 1, "weights": [weight / sum(final) for weight in final]}},
               {{"stage": "epoch", "epoch": 2, "weights": [weight / sum(final) for weight in reversed(final)]}}]
    with open(os.path.join(output_dir, "task_weights.json"), "w") as handle:
        json.dump({{"tasks": tasks, "history": history}}, handle)
    with open(os.path.join(output_dir, main_task + "_test_results.txt"), "w") as handle:
        handle.write("accuracy = 0.5\\n")
    with open(os.path.join(output_dir, "all_results.json"), "w") as handle:  # the last file a run writes
        handle.write("{{}}\\n")
""")


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def clean_environment(**settings):
    """The test process's environment without the grid's settings, plus `settings`; the scripts' Python is the
    one running the tests (PYTHON), also when its environment is not activated."""
    names = ("WORKING_DIR", "DATA_DIR", "BERT_MODEL", "MAX_LENGTH", "BATCH_SIZE", "NUM_EPOCHS", "SEED", "SEEDS",
             "OUTPUT_ROOT", "OUTPUT_DIR", "EXTRA_ARGS", "GRADIENT_SAMPLING_BATCH_SIZE", "PYTHON", "MAIN_TASKS",
             "INV_CONSTANTS", "SLOTS", "JOBS_PER_GPU", "CUDA_VISIBLE_DEVICES", "GRID", "GRID_FILE", "BACKEND",
             "SBATCH_ARGS", "SBATCH_SUMMARY_ARGS", "TARGET_GRADIENT_STEPS", "OLAUX_HORIZON")
    environment = {name: value for name, value in os.environ.items() if name not in names}
    environment.update({"PYTHON": sys.executable, **{name: str(value) for name, value in settings.items()}})
    return environment


def run_script(name, *arguments, cwd, **settings):
    return subprocess.run(["sh", os.path.join(SCRIPTS, name), *map(str, arguments)], cwd=cwd, capture_output=True,
                          text=True, env=clean_environment(**settings), timeout=120)


def flags(argv):
    """{flag: [values]} of a command line."""
    parsed, current = {}, None
    for argument in argv:
        if argument.startswith("--"):
            current = parsed.setdefault(argument, [])
        else:
            current.append(argument)
    return parsed


# The paradigm scripts: arguments -> (Python script, the flags they must become).
PARADIGM_CASES = [
    ("run_single.sh", ["pos", "12"], "run_single_task.py", {"--task": ["pos"], "--train_sent_num": ["12"]}),
    ("run_single.sh", [], "run_single_task.py", {"--task": ["ner"], "--train_sent_num": ["500"]}),
    ("run_single_analysis.sh", ["2000"], "run_single_task.py", {"--task": ["ner"], "--train_sent_num": ["2000"]}),
    ("run_pre_training_multi.sh", ["pos", "chunking", "ner", "10"], "run_weighted_pretraining.py",
     {"--auxiliary_task_list": ["pos", "chunking"], "--main_task": ["ner"], "--main_task_train_sent_num": ["10"],
      "--weighting": ["fixed"]}),
    ("run_pre_training_fixed_weights_multi.sh", ["pos", "chunking", "predicate", "ner", "0.92", "0.05", "0.04", "500"],
     "run_weighted_pretraining.py",
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--task_weights": ["0.92", "0.05", "0.04"], "--main_task_train_sent_num": ["500"], "--weighting": ["fixed"]}),
    ("run_weighted_pre_training_multi.sh", ["30", "pos", "chunking", "ner", "300"], "run_weighted_pretraining.py",
     {"--inv_constant": ["30"], "--auxiliary_task_list": ["pos", "chunking"], "--main_task": ["ner"],
      "--main_task_train_sent_num": ["300"], "--weighting": ["tawt"], "--gradient_sampling_batch_size": ["64"]}),
    ("run_joint_training_multi.sh", [], "run_weighted_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--main_task_train_sent_num": ["500"], "--weighting": ["fixed"]}),
    ("run_joint_training_fixed_weights_multi.sh", ["pos", "chunking", "predicate", "ner", "0.04", "0.04", "0.05",
                                                   "0.87", "500"], "run_weighted_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--task_weights": ["0.04", "0.04", "0.05", "0.87"], "--main_task_train_sent_num": ["500"],
      "--weighting": ["fixed"]}),
    ("run_weighted_joint_training_multi.sh", ["pos", "chunking", "ner", "300"], "run_weighted_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking"], "--main_task": ["ner"], "--main_task_train_sent_num": ["300"],
      "--weighting": ["tawt"], "--normalized_gradients": []}),
    ("run_joint_training_multi_normalized.sh", ["pos", "chunking", "predicate", "ner", "0.05", "0.05", "0.05",
                                                "0.85", "500"], "run_weighted_normalized_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--task_weights": ["0.05", "0.05", "0.05", "0.85"], "--main_task_train_sent_num": ["500"],
      "--weighting": ["fixed"]}),
    ("run_joint_training_multi_normalized.sh", ["pos", "chunking", "predicate", "ner", "500"],
     "run_weighted_normalized_joint.py",  # no weights: the script computes 1/size weights
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--main_task_train_sent_num": ["500"], "--weighting": ["fixed"]}),
    ("run_weighted_joint_training_multi_normalized.sh", ["pos", "ner", "0.2", "0.8", "100"],
     "run_weighted_normalized_joint.py",
     {"--auxiliary_task_list": ["pos"], "--main_task": ["ner"], "--task_weights": ["0.2", "0.8"],
      "--main_task_train_sent_num": ["100"], "--weighting": ["tawt"], "--normalized_gradients": []}),
    ("run_joint_training_multi_normalized_analysis.sh", ["500", "8"], "run_weighted_normalized_joint.py",
     {"--auxiliary_task_list": ["pos", "predicate"], "--main_task": ["ner"], "--main_task_train_sent_num": ["500"],
      "--auxiliary_main_ratio": ["8"], "--weighting": ["fixed"]}),
    ("run_weighted_joint_training_multi_normalized_analysis.sh", ["100", "2", "chunking", "pos"],
     "run_weighted_normalized_joint.py",
     {"--auxiliary_task_list": ["chunking"], "--main_task": ["pos"], "--main_task_train_sent_num": ["100"],
      "--auxiliary_main_ratio": ["2"], "--weighting": ["tawt"], "--normalized_gradients": []}),
    ("run_target_aware_baseline_multi.sh", ["gcs_weighted", "pos", "chunking", "ner", "300"], "run_weighted_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking"], "--main_task": ["ner"], "--main_task_train_sent_num": ["300"],
      "--weighting": ["gcs"], "--gcs_mode": ["weighted"], "--gradient_sampling_batch_size": ["64"],
      "--target_gradient_steps": ["1"]}),
    ("run_target_aware_baseline_multi.sh", ["olaux"], "run_weighted_joint.py",
     {"--auxiliary_task_list": ["pos", "chunking", "predicate"], "--main_task": ["ner"],
      "--main_task_train_sent_num": ["500"], "--weighting": ["olaux"], "--weight_update_steps": ["5"]}),
]


@pytest.mark.parametrize("script, arguments, python_script, expected", PARADIGM_CASES,
                         ids=[f"{case[0]}-{len(case[1])}" for case in PARADIGM_CASES])
def test_paradigm_scripts_pass_arguments_and_settings_through(tmp_path, fake_python, script, arguments,
                                                              python_script, expected):
    working_dir = tmp_path / "work dir"  # a space, to check the quoting
    completed = run_script(script, *arguments, cwd=tmp_path, PYTHON=fake_python, WORKING_DIR=working_dir,
                           BERT_MODEL="my-bert", MAX_LENGTH=48, BATCH_SIZE=4, NUM_EPOCHS=3, SEED=7,
                           EXTRA_ARGS="--learning_rate 3e-5 --fp16")
    assert completed.returncode == 0, completed.stderr
    [record_path] = [os.path.join(directory, "argv.json") for directory, _, files in os.walk(working_dir / "outputs")
                     if "argv.json" in files]
    with open(record_path) as handle:
        record = json.load(handle)
    assert record["script"] == python_script
    given = flags(record["argv"])
    assert {flag: given.get(flag) for flag in expected} == expected
    assert given["--data_dir"] == [str(working_dir / "data")] and given["--model_name_or_path"] == ["my-bert"]
    assert given["--max_seq_length"] == ["48"] and given["--num_train_epochs"] == ["3"] and given["--seed"] == ["7"]
    assert given["--per_gpu_train_batch_size"] == ["4"] and given["--per_gpu_eval_batch_size"] == ["4"]
    assert given["--learning_rate"] == ["3e-5"] and "--fp16" in given
    assert record["argv"][-3:] == ["--learning_rate", "3e-5", "--fp16"]  # last, so they override the script's
    assert {"--do_train", "--do_eval", "--do_predict"} <= set(given)
    assert os.path.dirname(record_path).endswith("-seed7")


def test_without_working_dir_the_scripts_use_the_embedded_default(tmp_path, fake_python):
    output_dir = tmp_path / "run"
    completed = run_script("run_single.sh", "pos", cwd=tmp_path, PYTHON=fake_python, OUTPUT_DIR=output_dir)
    assert completed.returncode == 0, completed.stderr
    given = flags(json.loads((output_dir / "argv.json").read_text())["argv"])
    assert "--data_dir" not in given and "--model_name_or_path" not in given
    assert "--train_sent_num" not in given  # a task without a size: the whole training file
    assert given["--max_seq_length"] == ["128"] and given["--per_gpu_train_batch_size"] == ["32"]
    assert given["--num_train_epochs"] == ["4"] and given["--seed"] == ["1"]


@pytest.mark.parametrize("script, arguments, message", [
    ("run_joint_training_fixed_weights_multi.sh", ["pos", "chunking", "ner", "0.5", "0.5", "100"], "got 6 arguments"),
    ("run_pre_training_fixed_weights_multi.sh", ["pos", "ner", "heavy", "100"], "'heavy' is not a number"),
    ("run_weighted_pre_training_multi.sh", [], "give INV_CONSTANT"),
    ("run_joint_training_multi.sh", ["ner", "500"], "at least one source task"),
    ("run_single_analysis.sh", ["many"], "TRAIN_SENT_NUM 'many' is not a number"),
    ("run_target_aware_baseline_multi.sh", ["pcgrad", "pos", "ner"], "METHOD 'pcgrad' is not gcs, gcs_weighted, olaux or forkmerge"),
])
def test_bad_arguments_print_the_usage(tmp_path, fake_python, script, arguments, message):
    completed = run_script(script, *arguments, cwd=tmp_path, PYTHON=fake_python)
    assert completed.returncode == 2
    assert message in completed.stderr and "usage: sh scripts/" + script in completed.stderr
    assert not (tmp_path / "outputs").exists()


def test_shell_scripts_run_the_paradigms_on_the_tiny_fixtures(tiny_data_dir, tiny_model_dir, tmp_path):
    settings = dict(DATA_DIR=tiny_data_dir, BERT_MODEL=tiny_model_dir, MAX_LENGTH=32, BATCH_SIZE=8, NUM_EPOCHS=1,
                    SEED=3, GRADIENT_SAMPLING_BATCH_SIZE=8)
    weighted = run_script("run_weighted_joint_training_multi.sh", "pos", "chunking", "ner", "10", cwd=tmp_path,
                          OUTPUT_DIR=tmp_path / "weighted_joint", **settings)
    assert weighted.returncode == 0, weighted.stderr[-2000:]
    record = json.loads((tmp_path / "weighted_joint" / "run_args.json").read_text())
    assert record["paradigm"] == "weighted_joint" and record["seed"] == 3
    assert record["args"]["auxiliary_task_list"] == ["pos", "chunking"] and record["args"]["main_task"] == "ner"
    assert record["args"]["main_task_train_sent_num"] == 10 and record["args"]["normalized_gradients"]
    assert record["args"]["max_seq_length"] == 32 and record["args"]["gradient_sampling_batch_size"] == 8
    history = json.loads((tmp_path / "weighted_joint" / "task_weights.json").read_text())["history"]
    assert len(history) == 2  # the starting weights and one update: one epoch
    assert (tmp_path / "weighted_joint" / "ner_test_results.txt").is_file()

    fixed = run_script("run_joint_training_fixed_weights_multi.sh", "pos", "chunking", "ner", "0.5", "0.25", "0.25",
                       "10", cwd=tmp_path, OUTPUT_DIR=tmp_path / "fixed", **settings)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    record = json.loads((tmp_path / "fixed" / "run_args.json").read_text())
    assert record["paradigm"] == "joint_fixed_weights"
    assert record["args"]["task_weights"] == [0.5, 0.25, 0.25] and record["args"]["main_task_train_sent_num"] == 10
    history = json.loads((tmp_path / "fixed" / "task_weights.json").read_text())["history"]
    assert [entry["weights"] for entry in history] == [[0.5, 0.25, 0.25]]  # held fixed
    assert (tmp_path / "fixed" / "ner_test_results.txt").is_file()


# ---------------------------------------------------------------------------------------------------------
# The job queue


def recording_job(tmp_path, index, seconds=0.3):
    """A job that records the GPU it was given and when it ran, and marks itself done."""
    done_file = tmp_path / f"job{index}" / "ner_test_results.txt"
    code = ("import json, os, sys, time; start = time.time(); time.sleep(%s); "
            "os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
            "open(sys.argv[1], 'w').write(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), start, time.time()]))"
            % seconds)
    return job_queue.Job(command=f"{sys.executable} -c \"{code}\" {done_file}", done_file=str(done_file),
                         log=str(tmp_path / "logs" / f"job{index}.log"), name=f"job{index}")


def intervals(jobs):
    return [json.loads(open(job.done_file).read()) for job in jobs]


def test_queue_runs_every_job_with_at_most_one_per_gpu(tmp_path):
    slots = job_queue.detect_slots({"CUDA_VISIBLE_DEVICES": "3,5"})
    assert [slot.gpu for slot in slots] == ["3", "5"]
    jobs = [recording_job(tmp_path, index) for index in range(6)]
    report = job_queue.run_jobs(jobs, slots, echo=lambda message: None)
    assert report.ok and len(report.finished) == 6
    runs = intervals(jobs)
    assert {gpu for gpu, _, _ in runs} == {"3", "5"}
    for gpu in ("3", "5"):
        on_gpu = sorted((start, end) for used, start, end in runs if used == gpu)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(on_gpu, on_gpu[1:]))  # never two at once
    overlapping = max(sum(start <= moment < end for _, start, end in runs) for _, moment, _ in runs)
    assert overlapping == 2  # both GPUs were busy at once
    for job in jobs:
        log = open(job.log).read()
        assert log.startswith(f"# {job.command}") and "exit status 0" in log


def test_queue_runs_one_job_at_a_time_without_gpus(tmp_path):
    slots = job_queue.detect_slots({"CUDA_VISIBLE_DEVICES": ""})
    assert [slot.gpu for slot in slots] == [None]
    jobs = [recording_job(tmp_path, index, seconds=0.1) for index in range(3)]
    assert job_queue.run_jobs(jobs, slots, echo=lambda message: None).ok
    runs = sorted((start, end) for _, start, end in intervals(jobs))
    assert all(end <= next_start for (_, end), (next_start, _) in zip(runs, runs[1:]))
    assert all(gpu is None for gpu, _, _ in intervals(jobs))


def test_slot_settings():
    assert job_queue.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    shared = job_queue.detect_slots({"CUDA_VISIBLE_DEVICES": "0,1", "JOBS_PER_GPU": "2"})
    assert [slot.gpu for slot in shared] == ["0", "1", "0", "1"]
    assert len(job_queue.detect_slots({"CUDA_VISIBLE_DEVICES": "", "SLOTS": "3"})) == 3
    with pytest.raises(job_queue.JobListError, match="SLOTS='two'"):
        job_queue.detect_slots({"CUDA_VISIBLE_DEVICES": "", "SLOTS": "two"})


def test_queue_skips_finished_jobs_and_reports_failures(tmp_path):
    jobs = [recording_job(tmp_path, index, seconds=0) for index in range(3)]
    os.makedirs(os.path.dirname(jobs[0].done_file))
    open(jobs[0].done_file, "w").write("finished before")
    failing = job_queue.Job(command="echo broken model >&2; exit 3", log=str(tmp_path / "logs" / "failing.log"),
                            done_file=str(tmp_path / "never"), name="failing")
    silent = job_queue.Job(command="true", log=str(tmp_path / "logs" / "silent.log"), done_file=str(tmp_path / "none"),
                           name="silent")
    job_list = tmp_path / "jobs.jsonl"
    job_queue.write_job_list([jobs[0], failing, jobs[1], silent, jobs[2]], job_list)
    completed = subprocess.run([sys.executable, os.path.join(SCRIPTS, "job_queue.py"), str(job_list)],
                               capture_output=True, text=True, env=clean_environment(CUDA_VISIBLE_DEVICES=""),
                               timeout=60)
    assert completed.returncode == 1
    assert "2 finished, 1 skipped (already done), 2 failed" in completed.stdout
    assert "FAILED (exit status 3): failing" in completed.stdout and "| broken model" in completed.stdout
    assert f"FAILED (exit status 0 but no {tmp_path / 'none'}): silent" in completed.stdout
    assert open(jobs[0].done_file).read() == "finished before"  # not run again
    assert all(os.path.isfile(job.done_file) for job in jobs[1:])  # the failure did not stop the others
    # the run times archived with results (testing/archive_results.py) are read back from these logs
    assert [job_queue.logged_seconds(job.log) for job in jobs[1:]] == [0, 0]
    assert job_queue.logged_seconds(failing.log) is None and job_queue.logged_seconds(jobs[0].log) is None


def test_stopping_the_queue_stops_its_running_job(tmp_path):
    marker = tmp_path / "started"
    job = job_queue.Job(command=f"{sys.executable} -c \"import os, time; open('{marker}', 'w').write(str(os.getpid())); "
                                "time.sleep(60)\"", log=str(tmp_path / "long.log"), done_file=str(tmp_path / "never"))
    job_list = tmp_path / "jobs.jsonl"
    job_queue.write_job_list([job], job_list)
    queue = subprocess.Popen([sys.executable, os.path.join(SCRIPTS, "job_queue.py"), str(job_list)],
                             stdout=subprocess.PIPE, text=True, env=clean_environment(CUDA_VISIBLE_DEVICES=""))
    for _ in range(300):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.1)
    queue.terminate()  # SIGTERM, as `kill` sends
    output, _ = queue.communicate(timeout=30)
    assert queue.returncode == 1
    assert "interrupted; run the same command again to resume" in output and "1 not started" in output
    assert not process_lives(int(marker.read_text()))  # the job's own process is gone too


def process_lives(pid, seconds=10):
    """Whether `pid` still runs after up to `seconds` (a killed process may take a moment to be reaped)."""
    for _ in range(int(seconds * 10)):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(")")[-1].split()[0] == "Z":
                    return False  # killed, waiting only to be reaped
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------------------------------------------
# The grid


def write_data_dir(data_dir, sentences, tasks=("pos", "chunking", "predicate", "ner")):
    """Task files of `tasks` with `sentences` one-word sentences each (the grid only counts them)."""
    os.makedirs(data_dir)
    for task in tasks:
        for split in ("train", "dev", "test"):
            (data_dir / f"{split}_{task}.txt").write_text("word X\n\n" * sentences)


def paper_settings(tmp_path, **extra):
    return experiment_grid.settings_from_environment(
        {"WORKING_DIR": str(tmp_path / "work"), "CUDA_VISIBLE_DEVICES": "", **extra})


def test_paper_grid_has_every_run_of_spec_section_9_once(tmp_path):
    settings = paper_settings(tmp_path, SEEDS="1 2")
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    main = experiment_grid.main_section_jobs(maker, settings)
    normalized = experiment_grid.normalized_section_jobs(maker, settings)
    analysis = experiment_grid.analysis_section_jobs(maker, settings)
    assert len(main) == 4 * (4 + 4) * 2  # 4 main tasks x (single, joint, weighted joint, pre-training, 4 inv_constants)
    assert len(normalized) == 4 * 2 * 2
    assert len([job for job in analysis if "single_task" not in job.name]) == (8 + 5 + 4) * 2 * 2
    planned = experiment_grid.plan(maker, settings, ["main", "normalized", "analysis"])
    assert len(planned) == len(main) + len(normalized) + len(analysis) - 2  # single-task ner 500: one run per seed
    assert len({job.done_file for job in planned}) == len(planned)
    assert all(job.command.count("BERT_MODEL=bert-base-cased") == 1 for job in main)
    commands = {job.name: job.command for job in planned}
    assert commands["normalized/weighted_normalized_joint/predicate/seed_2"].endswith(
        "run_weighted_joint_training_multi_normalized.sh pos chunking ner predicate 0.03 0.03 0.03 0.91 300")
    assert commands["main/weighted_pretraining_ic30/chunking/seed_1"].endswith(
        "run_weighted_pre_training_multi.sh 30 pos predicate ner chunking 100")
    assert commands["analysis/single_task_n64500/ner/seed_1"].endswith("run_single_analysis.sh 64500 ner")
    assert commands["main/single_task/ner/seed_1"].endswith("run_single.sh ner 500")
    assert "MAX_LENGTH=128 BATCH_SIZE=32 NUM_EPOCHS=4" in commands["main/joint/pos/seed_1"]
    assert f"DATA_DIR={tmp_path / 'work' / 'data'}" in commands["main/joint/pos/seed_1"]


def test_grid_runs_skips_finished_runs_and_reruns_final_weights(tmp_path, fake_python):
    work = tmp_path / "work"
    write_data_dir(work / "data", 20000)
    environment = clean_environment(WORKING_DIR=work, PYTHON=fake_python, SEEDS="1 2", MAIN_TASKS="ner",
                                    INV_CONSTANTS="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, os.path.join(SCRIPTS, "experiment_grid.py"), "main", "normalized", "final_weights",
               "--no_summary"]
    first = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    outputs = work / "outputs"
    assert (outputs / "logs" / "main" / "weighted_joint" / "ner" / "seed_2.log").is_file()
    # seed 1 ended on weights (1, 2, 3, 4)/10, seed 2 on (2, 3, 4, 5)/14: the re-run holds their mean fixed
    rerun = json.loads((outputs / "final_weights" / "joint_fixed_weights" / "ner" / "seed_1" / "argv.json").read_text())
    assert rerun["script"] == "run_weighted_joint.py"
    mean = [(1 / 10 + 2 / 14) / 2, (2 / 10 + 3 / 14) / 2, (3 / 10 + 4 / 14) / 2, (4 / 10 + 5 / 14) / 2]
    assert [float(weight) for weight in flags(rerun["argv"])["--task_weights"]] == pytest.approx(mean, rel=1e-5)
    assert flags(rerun["argv"])["--weighting"] == ["fixed"]
    pretraining = json.loads((outputs / "final_weights" / "pretraining_fixed_weights_ic1" / "ner" / "seed_2" /
                              "argv.json").read_text())
    assert len(flags(pretraining["argv"])["--task_weights"]) == 3  # sources only
    assert (outputs / "final_weights" / "normalized_joint_fixed_weights" / "ner" / "seed_2" / "argv.json").is_file()
    # 2 seeds x (5 main-section runs + 2 normalized), then 2 seeds x 3 fixed-weight re-runs
    assert "14 finished, 0 skipped" in first.stdout and "6 finished, 0 skipped" in first.stdout

    second = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert second.returncode == 0
    assert "0 finished, 14 skipped" in second.stdout and "0 finished, 6 skipped" in second.stdout
    assert "[1/" not in second.stdout  # nothing started again


def test_final_weights_waits_for_the_weighted_runs(tmp_path, capsys):
    settings = paper_settings(tmp_path, MAIN_TASKS="pos", INV_CONSTANTS="10")
    maker = experiment_grid.JobMaker(settings)
    assert experiment_grid.final_weights_section_jobs(maker, settings) == []
    printed = capsys.readouterr().out
    assert "skipping final_weights/joint_fixed_weights/pos: no finished run in main/weighted_joint/pos" in printed
    assert "final_weights/pretraining_fixed_weights_ic10/pos" in printed


def test_run_experiments_lists_the_grid_from_any_directory(tmp_path):
    work = tmp_path / "work"
    write_data_dir(work / "data", 1)
    completed = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "normalized", "--list"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=60,
                               env=clean_environment(WORKING_DIR=work, CUDA_VISIBLE_DEVICES=""))
    assert completed.returncode == 0, completed.stderr
    listed = [line for line in completed.stdout.splitlines() if line.startswith("SEED=")]
    assert len(listed) == 8
    assert not (work / "outputs" / "normalized").exists()  # listed, not run

    missing = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "main"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=60,
                             env=clean_environment(WORKING_DIR=tmp_path / "nowhere", CUDA_VISIBLE_DEVICES=""))
    assert missing.returncode != 0 and "train_chunking.txt: file not found" in missing.stderr


@pytest.mark.parametrize("grid", ["medium", "paper"])
def test_listing_the_embedded_default_data_builds_and_writes_nothing(grid, tmp_path):
    """--list names the default data (or the grid's slice of it) without building it or slicing it into
    OUTPUT_ROOT: listing an archive's grid must not add files to the archive."""
    completed = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "--list"], capture_output=True,
                               text=True, cwd=tmp_path, timeout=60,
                               env=clean_environment(GRID=grid, OUTPUT_ROOT=tmp_path / "archive", BERT_MODEL="m",
                                                     TAWT_CACHE_DIR=tmp_path / "empty_cache", CUDA_VISIBLE_DEVICES=""))
    assert completed.returncode == 0, completed.stderr
    assert any(line.startswith("SEED=") for line in completed.stdout.splitlines())
    assert not (tmp_path / "archive").exists() and not (tmp_path / "empty_cache").exists()


def test_grid_resumes_interrupted_runs_from_their_checkpoints(tmp_path):
    """Every grid run checkpoints; one with checkpoints resumes (no --overwrite_output_dir, which would start
    it afresh), one interrupted before its first checkpoint starts again."""
    settings = paper_settings(tmp_path, MAIN_TASKS="ner", INV_CONSTANTS="1")
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    run_dir = os.path.join(settings.output_root, "main", "joint", "ner", "seed_1")

    def joint_command():
        jobs = experiment_grid.main_section_jobs(maker, settings)
        return next(job.command for job in jobs if job.name == "main/joint/ner/seed_1")

    assert "--save_steps" in joint_command() and "--overwrite_output_dir" not in joint_command()
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    with open(os.path.join(run_dir, "task_weights.json"), "w") as handle:
        handle.write("{}\n")
    with open(os.path.join(run_dir, "checkpoints", "checkpoint-00000004.pt"), "wb") as handle:
        handle.write(b"state")
    assert "--overwrite_output_dir" not in joint_command()  # the same command resumes it
    os.remove(os.path.join(run_dir, "checkpoints", "checkpoint-00000004.pt"))
    assert "--overwrite_output_dir" in joint_command()  # nothing to resume from: start again


def test_medium_grid_lists_table_1_for_two_main_tasks_with_an_inv_constant_sweep_on_the_first_seed(tmp_path):
    data = tmp_path / "data"
    write_data_dir(data, 1, tasks=("pos", "chunking", "predicate", "ner", "brown_pos"))
    completed = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "--list"], capture_output=True,
                               text=True, cwd=tmp_path, timeout=60,
                               env=clean_environment(GRID="medium", DATA_DIR=data, BERT_MODEL="m",
                                                     CUDA_VISIBLE_DEVICES=""))
    assert completed.returncode == 0, completed.stderr
    assert "sections main normalized baselines gcs_du forkmerge, seeds 1 2 3" in completed.stdout  # three seeds
    listed = [line for line in completed.stdout.splitlines() if "SEED=" in line and not line.startswith("#")]
    # per main task: 3 seeds x (single, joint, weighted joint, pre-training, weighted pre-training, normalized
    # joint, weighted normalized joint, GCS, weighted GCS, OL-AUX, GCS and weighted GCS as Du et al. define
    # them, and ForkMerge), and the sweep's two other inv_constants with seed 1
    assert len(listed) == 2 * (3 * 13 + 2)
    for main_task, sources in (("ner", "pos chunking predicate"), ("brown_pos", "pos chunking ner")):
        assert sum(f"/baselines/joint_forkmerge/{main_task}/seed_" in line and line.endswith(
            f"run_target_aware_baseline_multi.sh forkmerge {sources} {main_task} 100") for line in listed) == 3
    baselines = [line for line in listed if "run_target_aware_baseline_multi.sh" in line]
    for method, directory, variant in (("gcs", "joint_gcs", "gated"), ("gcs_weighted", "joint_gcs_weighted", "gated"),
                                       ("olaux", "joint_olaux", None), ("gcs", "joint_gcs_du", "du"),
                                       ("gcs_weighted", "joint_gcs_weighted_du", "du")):
        for main_task, sources in (("ner", "pos chunking predicate"), ("brown_pos", "pos chunking ner")):
            runs = [line for line in baselines if f"/baselines/{directory}/{main_task}/seed_" in line]
            assert len(runs) == 3 and all(
                line.endswith(f"run_target_aware_baseline_multi.sh {method} {sources} {main_task} 100")
                and (f"--gcs_variant {variant}" in line if variant else "--gcs_variant" not in line) for line in runs)
    sweep = [line for line in listed if "run_weighted_pre_training_multi.sh" in line]
    assert len(sweep) == 2 * (3 + 2)
    assert [line.split()[0] for line in sweep if "brown_pos/" in line] == ["SEED=1"] * 3 + ["SEED=2", "SEED=3"]
    assert any(line.endswith("run_weighted_pre_training_multi.sh 100 pos chunking ner brown_pos 100") for line in sweep)
    assert any(line.endswith("run_single.sh ner 100") for line in listed)
    shared = next(line for line in completed.stdout.splitlines() if line.startswith("# every job runs with"))
    assert "--eval_main_task_only" in shared and "MAX_LENGTH=64" in shared and "BATCH_SIZE=8" in shared
    assert "TARGET_GRADIENT_STEPS=8" in shared

    unknown = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "--list"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=60, env=clean_environment(GRID="huge", DATA_DIR=data))
    assert unknown.returncode != 0 and "GRID=huge: no such grid; choose from genre large medium paper reduced" in unknown.stderr


def test_large_grid_lists_table_1_with_the_papers_inv_constants_and_the_original_optimizer_rows(tmp_path):
    data = tmp_path / "data"
    write_data_dir(data, 1, tasks=("pos", "chunking", "predicate", "ner", "brown_pos"))
    completed = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "--list"], capture_output=True,
                               text=True, cwd=tmp_path, timeout=60,
                               env=clean_environment(GRID="large", DATA_DIR=data, BERT_MODEL="m",
                                                     CUDA_VISIBLE_DEVICES=""))
    assert completed.returncode == 0, completed.stderr
    assert ("sections main normalized baselines ablation gcs_du more_seeds noise_source forkmerge, seeds 1 2 3"
            in completed.stdout)
    listed = [line for line in completed.stdout.splitlines() if "SEED=" in line and not line.startswith("#")]
    forkmerge = [line for line in listed if "/baselines/joint_forkmerge/" in line]
    for main_task, arguments in (("brown_pos", "pos chunking ner brown_pos 100"), ("ner", "pos chunking predicate ner 500")):
        assert sorted(re.search(r"\bSEED=(\d+) ", line).group(1) for line in forkmerge if f"/{main_task}/seed_" in line
                      and line.endswith(f"run_target_aware_baseline_multi.sh forkmerge {arguments}")) == ["1", "2", "3"]
    assert len(forkmerge) == 2 * 3
    listed = [line for line in listed if line not in forkmerge]
    noise = [line for line in listed if "/noise_source/" in line]
    assert len(noise) == 2 * 3 * 2 and all("--noise_source pos" in line for line in noise)
    for row, script in (("joint_pos_noise", "run_joint_training_multi.sh"),
                        ("weighted_joint_pos_noise", "run_weighted_joint_training_multi.sh")):
        assert sum(f"/noise_source/{row}/ner/seed_" in line and line.endswith(f"{script} pos chunking predicate ner 500")
                   for line in noise) == 3
    listed = [line for line in listed if line not in noise]
    more_seeds = [line for line in listed if re.search(r"\bSEED=[45] ", line)]
    # per main task and seed: single-task, joint, weighted joint, normalized joint, weighted normalized joint and
    # the two ablation rows, in the directories of seeds 1 to 3
    assert len(more_seeds) == 2 * 2 * 7
    for row in ("main/single_task", "main/joint", "main/weighted_joint", "normalized/normalized_joint",
                "normalized/weighted_normalized_joint", "ablation/weighted_joint_ablated",
                "ablation/weighted_normalized_joint_ablated"):
        for main_task in ("brown_pos", "ner"):
            assert sorted(re.search(r"\bSEED=(\d) ", line).group(1) for line in more_seeds
                          if f"/{row}/{main_task}/seed_" in line) == ["4", "5"]
    listed = [line for line in listed if line not in more_seeds]
    gcs_du = [line for line in listed if "_du/" in line]
    assert len(gcs_du) == 2 * 3 * 2 and all("--gcs_variant du --log_update_norms" in line for line in gcs_du)
    # Du et al.'s update: a fresh target gradient at every step, from a main-task batch of the training batch's size
    batch_size = re.search(r"\bBATCH_SIZE=(\d+)", completed.stdout).group(1)
    assert all(f"TARGET_GRADIENT_STEPS=1 GRADIENT_SAMPLING_BATCH_SIZE={batch_size} SEED=" in line for line in gcs_du)
    assert not any("TARGET_GRADIENT_STEPS=1 " in line for line in listed if "_du/" not in line)
    assert sum("/baselines/joint_gcs_weighted_du/ner/seed_" in line and line.endswith(
        "run_target_aware_baseline_multi.sh gcs_weighted pos chunking predicate ner 500") for line in gcs_du) == 3
    paper_rows = [line for line in listed if "/ablation/" not in line and line not in gcs_du]
    # per main task and seed: single, joint, weighted joint, both with the original's optimizer, pre-training,
    # weighted pre-training at two inv_constants, normalized joint, weighted normalized joint, and the three
    # target-aware baselines
    assert len(paper_rows) == 2 * 3 * 13
    ablation = [line for line in listed if "/ablation/" in line]
    assert len(ablation) == 2 * 3 * 2 and all("--ablate_source_cosines" in line for line in ablation)
    for main_task, arguments in (("brown_pos", "pos chunking ner brown_pos 100"),
                                 ("ner", "pos chunking predicate ner 500")):
        for row, script in (("weighted_joint_ablated", "run_weighted_joint_training_multi.sh"),
                            ("weighted_normalized_joint_ablated", "run_weighted_joint_training_multi_normalized.sh")):
            assert sorted(re.search(r"\bSEED=(\d+) ", line).group(1) for line in ablation
                          if f"/ablation/{row}/{main_task}/seed_" in line and line.endswith(f"{script} {arguments}")
                          ) == ["1", "2", "3"]
    assert not any("--ablate_source_cosines" in line for line in paper_rows)
    assert sum(line.endswith("run_target_aware_baseline_multi.sh olaux pos chunking ner brown_pos 100")
               for line in listed) == 3
    assert sum(line.endswith("run_weighted_pre_training_multi.sh 30 pos chunking ner brown_pos 100") for line in listed) == 3
    assert sum(line.endswith("run_weighted_pre_training_multi.sh 100 pos chunking predicate ner 500") for line in listed) == 3
    original = [line for line in listed if "_original_optimizer/" in line]
    assert len(original) == 2 * 3 * 2
    assert all("--zero_grad_in_place --legacy_adamw" in line for line in original)
    assert not any("--zero_grad_in_place" in line for line in listed if line not in original)
    # A section named alone lists only its runs; a finished run is listed as done.
    done = tmp_path / "outputs" / "ablation" / "weighted_joint_ablated" / "ner" / "seed_2"
    done.mkdir(parents=True)
    (done / "all_results.json").write_text("{}\n")
    alone = subprocess.run(["sh", os.path.join(SCRIPTS, "run_experiments.sh"), "ablation", "--list"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60,
                           env=clean_environment(GRID="large", DATA_DIR=data, BERT_MODEL="m", CUDA_VISIBLE_DEVICES=""))
    assert alone.returncode == 0, alone.stderr
    jobs = [line for line in alone.stdout.splitlines() if "SEED=" in line and not line.startswith("# every")]
    assert len(jobs) == len(ablation) and [line for line in jobs if line.startswith("# done: ")] == [
        line for line in jobs if "/weighted_joint_ablated/ner/seed_2" in line]
    shared = next(line for line in completed.stdout.splitlines() if line.startswith("# every job runs with"))
    assert "MAX_LENGTH=128" in shared and "BATCH_SIZE=32" in shared and "NUM_EPOCHS=4" in shared
    assert "--learning_rate 5e-4" in shared and "--eval_main_task_only" in shared and "TARGET_GRADIENT_STEPS=2" in shared


def test_paper_grid_computes_with_the_original_optimizer_and_reseeding(tmp_path):
    settings = paper_settings(tmp_path, MAIN_TASKS="ner", INV_CONSTANTS="100")
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    jobs = experiment_grid.main_section_jobs(maker, settings)
    assert all("--zero_grad_in_place --legacy_adamw" in job.command for job in jobs)
    assert [("--reseed_each_update" in job.command) for job in jobs] == [
        "run_weighted_pre_training_multi.sh" in job.command for job in jobs]
    collect = experiment_grid.summary_commands(settings)[0]
    assert collect[-4:] == ["--inv_constant_choice", "paper", "--table1_optimizer", "original"]
