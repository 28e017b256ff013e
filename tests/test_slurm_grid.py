"""The experiment grid's Slurm backend (BACKEND=slurm): job arrays submitted to a real single-node Slurm.

The tests that submit need the test cluster of tests/slurm_cluster.sh (`.ci/run` installs and starts it);
without sbatch they are skipped, saying why, unless TAWT_REQUIRE_SLURM=1, where they fail instead.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.test_reliability import checkpoint_numbers
from tests.test_experiment_scripts import SCRIPTS, clean_environment, fake_python, flags, write_data_dir  # noqa: F401

SLURM_CLUSTER = os.path.join(ROOT, "tests", "slurm_cluster.sh")
TEST_CLUSTER_NAME = "tawt-tests"  # the ClusterName of the slurm.conf that tests/slurm_cluster.sh writes
GRID_JOB_NAMES = "tawt-grid,tawt-grid-next,tawt-summary"


def slurm_unavailable(reason):
    if os.environ.get("TAWT_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (TAWT_REQUIRE_SLURM=1: .ci/run installs and starts the test cluster)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    """The single-node test cluster, started here if it is not up (and then stopped after the tests)."""
    if not shutil.which("sbatch"):
        slurm_unavailable("sbatch is absent: to run the Slurm tests, `sh tests/slurm_cluster.sh install` (as root)")
    started = subprocess.run(["sh", SLURM_CLUSTER, "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        slurm_unavailable(f"no Slurm test cluster: tests/slurm_cluster.sh start said: {started.stderr.strip()}")
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    cluster = next((line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("ClusterName")),
                   None)
    if cluster != TEST_CLUSTER_NAME:
        slurm_unavailable(f"sbatch submits to cluster {cluster!r}, not to the test cluster of tests/slurm_cluster.sh; "
                          "no test jobs are sent there")
    yield
    if "up:" in started.stdout:  # this fixture started it
        subprocess.run(["sh", SLURM_CLUSTER, "stop"], capture_output=True, timeout=120)


def wait_for_grid_jobs(timeout=300):
    """Wait until no job of the grid (array, follow-up, summary) is pending or running."""
    deadline = time.time() + timeout
    while True:
        queued = subprocess.run(["squeue", "--noheader", "--name", GRID_JOB_NAMES, "--format", "%i %j %T %R"],
                                capture_output=True, text=True, timeout=60).stdout.strip()
        if not queued:
            return
        if time.time() > deadline:
            pytest.fail(f"grid jobs still queued after {timeout} s:\n{queued}")
        time.sleep(0.5)


def run_grid(*arguments, cwd, environment):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, "experiment_grid.py"), *arguments],
                          capture_output=True, text=True, env=environment, cwd=cwd, timeout=300)


def submissions(output_root):
    return sorted(os.path.join(output_root, "slurm", name) for name in os.listdir(os.path.join(output_root, "slurm")))


# ---------------------------------------------------------------------------------------------------------
# Without Slurm: the scripts a submission writes


def test_no_submit_writes_an_array_over_the_runs_not_done(tmp_path, fake_python):
    work = tmp_path / "work"
    write_data_dir(work / "data", 20000)
    finished = work / "outputs" / "main" / "joint" / "ner" / "seed_1" / "all_results.json"
    os.makedirs(finished.parent)
    finished.write_text("{}\n")
    environment = clean_environment(WORKING_DIR=work, PYTHON=fake_python, MAIN_TASKS="ner", INV_CONSTANTS="1",
                                    BACKEND="slurm", SBATCH_ARGS="--partition gpu --gres gpu:1 --comment 'two words'",
                                    SBATCH_SUMMARY_ARGS="--partition cpu", MAX_RUNNING="2")
    completed = run_grid("main", "--no_submit", cwd=tmp_path, environment=environment)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "main: 4 run(s) to submit, 1 done already" in completed.stdout
    [submission] = submissions(work / "outputs")
    jobs = [json.loads(line) for line in open(os.path.join(submission, "jobs.jsonl"))]
    assert len(jobs) == 4 and "main/joint/ner/seed_1" not in [job["name"] for job in jobs]
    array = open(os.path.join(submission, "array.sh")).read()
    assert "#SBATCH --array=0-3%2\n" in array and '--task "$SLURM_ARRAY_TASK_ID"' in array  # MAX_RUNNING
    submit = open(os.path.join(submission, "submit.sh")).read()
    assert "sbatch --parsable --partition gpu --gres gpu:1 --comment 'two words' " in submit
    assert "--dependency=afterany:$array --partition cpu " in submit
    summary = open(os.path.join(submission, "summary.sh")).read()
    assert "testing/collect_results.py" in summary and "significance_testing.py batch" in summary

    # An array task runs its line of the job list as the local queue does: the paradigm script, its log.
    task = subprocess.run(["sh", os.path.join(submission, "array.sh")], capture_output=True, text=True, timeout=60,
                          env={**environment, "SLURM_JOB_ID": "8", "SLURM_ARRAY_JOB_ID": "7",
                               "SLURM_ARRAY_TASK_ID": "1", "SLURMD_NODENAME": "node3"})
    assert task.returncode == 0, task.stdout + task.stderr
    log = open(jobs[1]["log"]).read()
    assert log.startswith(f"# {jobs[1]['command']}\n# on Slurm job 7_1 on node3") and "exit status 0" in log
    assert os.path.isfile(jobs[1]["done_file"])
    again = subprocess.run(["sh", os.path.join(submission, "array.sh")], capture_output=True, text=True, timeout=60,
                           env={**environment, "SLURM_ARRAY_TASK_ID": "1"})
    assert "0 finished, 1 skipped (already done)" in again.stdout  # a requeued task whose run finished
    wrong = subprocess.run(["sh", os.path.join(submission, "array.sh")], capture_output=True, text=True, timeout=60,
                           env={**environment, "SLURM_ARRAY_TASK_ID": "4"})
    assert wrong.returncode == 1 and "--task 4, but the list has 4 jobs (0 to 3)" in wrong.stderr


def test_bad_backend_settings_are_named(tmp_path):
    work = tmp_path / "work"
    write_data_dir(work / "data", 1)
    for settings, message in [({"BACKEND": "pbs"}, "BACKEND='pbs': choose local or slurm"),
                              ({}, "--no_submit writes a Slurm job array; give it with BACKEND=slurm"),
                              ({"BACKEND": "slurm", "SBATCH_ARGS": "--comment 'open"}, "SBATCH_ARGS: No closing"),
                              ({"BACKEND": "slurm", "MAX_RUNNING": "two"}, "MAX_RUNNING='two': give how many runs")]:
        completed = run_grid("main", "--no_submit", cwd=tmp_path,
                             environment=clean_environment(WORKING_DIR=work, **settings))
        assert completed.returncode != 0 and message in completed.stderr, completed.stderr


# ---------------------------------------------------------------------------------------------------------
# On the test cluster


def test_slurm_grid_plans_final_weights_after_the_array_and_resubmits_nothing(slurm_cluster, tmp_path, fake_python):
    work = tmp_path / "work"
    write_data_dir(work / "data", 20000)
    environment = clean_environment(WORKING_DIR=work, PYTHON=fake_python, MAIN_TASKS="ner", INV_CONSTANTS="1",
                                    BACKEND="slurm")
    arguments = ["main", "normalized", "final_weights", "--no_summary"]
    first = run_grid(*arguments, cwd=tmp_path, environment=environment)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "main normalized: 7 run(s) to submit, 0 done already" in first.stdout
    assert "submitted job array" in first.stdout and "planning and submitting final_weights" in first.stdout
    wait_for_grid_jobs()
    outputs = work / "outputs"
    # the follow-up job planned the re-runs from the weights the array's runs learned, and submitted them
    [_, follow_up] = submissions(outputs)
    assert len(open(os.path.join(follow_up, "jobs.jsonl")).readlines()) == 3
    rerun = json.loads((outputs / "final_weights" / "joint_fixed_weights" / "ner" / "seed_1" / "argv.json").read_text())
    # the fake run of weighted joint training with seed 1 ended on the weights (1, 2, 3, 4) / 10
    assert flags(rerun["argv"])["--task_weights"] == ["0.1", "0.2", "0.3", "0.4"]
    logs = [os.path.join(directory, name) for directory, _, names in os.walk(outputs / "logs") for name in names]
    assert len(logs) == 10 and all("exit status 0" in open(log).read() for log in logs)

    second = run_grid(*arguments, cwd=tmp_path, environment=environment)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "main normalized: 0 run(s) to submit, 7 done already" in second.stdout
    assert "final_weights: 0 run(s) to submit, 3 done already" in second.stdout
    assert "nothing submitted" in second.stdout and len(submissions(outputs)) == 2


def test_a_resubmission_waits_until_the_earlier_jobs_have_left_the_queue(slurm_cluster, tmp_path, fake_python):
    work = tmp_path / "work"
    write_data_dir(work / "data", 20000)
    environment = clean_environment(WORKING_DIR=work, PYTHON=fake_python, MAIN_TASKS="ner", INV_CONSTANTS="1",
                                    BACKEND="slurm", SBATCH_ARGS="--hold")  # held: the array stays queued
    first = run_grid("main", cwd=tmp_path, environment=environment)
    assert first.returncode == 0, first.stdout + first.stderr
    [submission] = submissions(work / "outputs")
    job_ids = open(os.path.join(submission, "job_ids")).read().split()
    assert len(job_ids) == 2  # the array and the summary after it

    again = run_grid("main", cwd=tmp_path, environment=environment)
    assert again.returncode != 0
    assert f"job(s) {' '.join(job_ids)} of an earlier submission ({submission}) are still queued" in again.stderr
    assert f"scancel {' '.join(job_ids)}" in again.stderr and len(submissions(work / "outputs")) == 1

    subprocess.run(["scancel", *job_ids], check=True, timeout=60)
    wait_for_grid_jobs()
    environment["SBATCH_ARGS"] = ""
    third = run_grid("main", "--no_summary", cwd=tmp_path, environment=environment)
    assert third.returncode == 0 and "submitted job array" in third.stdout, third.stdout + third.stderr
    wait_for_grid_jobs()
    assert "main: 0 run(s) to submit, 5 done already" in run_grid("main", cwd=tmp_path, environment=environment).stdout


def test_slurm_grid_resumes_a_cancelled_run_and_collects_the_table(slurm_cluster, tmp_path, tiny_data_dir,
                                                                   tiny_model_dir):
    output_root = tmp_path / "outputs"
    environment = clean_environment(DATA_DIR=tiny_data_dir, BERT_MODEL=tiny_model_dir, OUTPUT_ROOT=output_root,
                                    MAIN_TASKS="pos", MAX_LENGTH=32, BATCH_SIZE=8, NUM_EPOCHS=2,
                                    GRADIENT_SAMPLING_BATCH_SIZE=8, EXTRA_ARGS="--save_steps 1", BACKEND="slurm")
    weighted = output_root / "normalized" / "weighted_normalized_joint" / "pos" / "seed_1"
    first = run_grid("normalized", "--no_summary", cwd=tmp_path, environment=environment)
    assert first.returncode == 0, first.stdout + first.stderr
    # Pre-empted: cancelled once it has written a checkpoint (a whole one, not the temporary file of one)
    deadline = time.time() + 240
    while not checkpoint_numbers(weighted):
        assert time.time() < deadline, "no checkpoint after 240 s"
        time.sleep(0.1)
    subprocess.run(["scancel", "--name", "tawt-grid"], check=True, timeout=60)
    wait_for_grid_jobs()
    assert not (weighted / "pos_test_results.txt").exists()

    second = run_grid("normalized", cwd=tmp_path, environment=environment)
    assert second.returncode == 0, second.stdout + second.stderr
    wait_for_grid_jobs()
    log = (output_root / "logs" / "normalized" / "weighted_normalized_joint" / "pos" / "seed_1.log").read_text()
    assert "resuming from" in log and "exit status 0" in log
    assert (weighted / "pos_test_results.txt").is_file()
    table = (output_root / "summary" / "table1.md").read_text()
    assert "| Normalized joint training |" in table and "| Weighted normalized joint training |" in table
    significance = (output_root / "summary" / "significance.csv").read_text()
    assert "normalized/weighted_normalized_joint/pos/seed_1" in significance

    third = run_grid("normalized", cwd=tmp_path, environment=environment)
    assert "normalized: 0 run(s) to submit, 2 done already" in third.stdout and "nothing submitted" in third.stdout
