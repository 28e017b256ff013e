"""The experiment grid as Slurm job arrays: `BACKEND=slurm sh scripts/run_experiments.sh` submits it.

A submission writes, in OUTPUT_ROOT/slurm/<time>/:
  jobs.jsonl   the runs not yet done, as the local queue lists them (scripts/job_queue.py)
  array.sh     one array task per run: `job_queue.py jobs.jsonl --task $SLURM_ARRAY_TASK_ID`, so each task
               runs its run exactly as the local queue does (the paradigm script, its log under
               OUTPUT_ROOT/logs/, skipped when its results exist)
  summary.sh   testing/collect_results.py and the significance batch, once the array has ended
               (--dependency=afterany: whatever its runs' exit status)
  next.sh      instead of summary.sh when final_weights is to follow: once the array has ended, plans the
               fixed-weight re-runs from the weights the array's runs learned and submits them the same way
  submit.sh    the sbatch commands; BACKEND=slurm runs it, --no_submit leaves it to be read and run by hand
  job_ids      written by submit.sh: the ids of the jobs it submitted (the array first)

A submission is refused while a job that an earlier one submitted for the same OUTPUT_ROOT is still queued
or running (its runs would be submitted twice); MAX_RUNNING=K lets at most K tasks of an array run at once.

Slurm places the tasks; nothing here schedules. Site options come from SBATCH_ARGS (every job) and
SBATCH_SUMMARY_ARGS (summary.sh and next.sh, default SBATCH_ARGS), e.g.
SBATCH_ARGS="--partition gpu --gres gpu:1 --time 4:00:00" SBATCH_SUMMARY_ARGS="--partition cpu".
"""

import glob
import os
import shlex
import shutil
import subprocess
import sys
import time

from tawt.scripts.job_queue import say, write_job_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The grid's settings, written into next.sh so that the follow-up plans the same grid whoever runs it (with
# the grid's training settings, MAX_LENGTH and the like).
GRID_VARIABLES = ("GRID", "GRID_FILE", "WORKING_DIR", "DATA_DIR", "OUTPUT_ROOT", "SEEDS", "MAIN_TASKS",
                  "INV_CONSTANTS", "BERT_MODEL", "PYTHON", "SBATCH_ARGS", "SBATCH_SUMMARY_ARGS", "MAX_RUNNING")
JOB_IDS_FILE = "job_ids"


def array_range(job_count, environ):
    """sbatch's --array value: every task, at most MAX_RUNNING of them at once when it is set."""
    limit = environ.get("MAX_RUNNING", "").strip()
    if limit and not (limit.isdigit() and int(limit) > 0):
        raise ValueError(f"MAX_RUNNING={limit!r}: give how many runs of an array may run at once, e.g. MAX_RUNNING=8")
    return f"0-{job_count - 1}" + (f"%{int(limit)}" if limit else "")


def still_queued(output_root, environ):
    """The jobs that earlier submissions for `output_root` made and Slurm still holds: [(job id, directory)].

    The job that asks (a follow-up job submitting the next stage) does not count.
    """
    recorded = {}
    for ids_file in sorted(glob.glob(os.path.join(output_root, "slurm", "*", JOB_IDS_FILE))):
        with open(ids_file, encoding="utf-8") as handle:
            for job_id in handle.read().split():
                recorded[job_id] = os.path.dirname(ids_file)
    recorded.pop(environ.get("SLURM_JOB_ID", ""), None)
    if not recorded:
        return []
    # %F: an array's job id for each of its tasks (the job id for a job outside an array)
    listed = subprocess.run(["squeue", "--noheader", "--format=%F", f"--jobs={','.join(recorded)}"],
                            capture_output=True, text=True, timeout=120)
    if listed.returncode != 0:
        if "Invalid job id" not in listed.stderr:
            say(f"[slurm] could not ask squeue whether earlier jobs are queued ({listed.stderr.strip()}); submitting")
        return []  # else Slurm has forgotten every one of them: none is queued
    queued = set(listed.stdout.split())
    return [(job_id, directory) for job_id, directory in recorded.items() if job_id in queued]


def sbatch_options(environ, name):
    """The sbatch options in environ[name], split as the shell would; a one-line error if they cannot be."""
    try:
        return shlex.split(environ.get(name, ""))
    except ValueError as error:
        raise ValueError(f"{name}: {error}; give options as on the sbatch command line, e.g. "
                         f"{name}=\"--partition gpu --time 4:00:00\"") from None


def submission_directory(output_root):
    """A new OUTPUT_ROOT/slurm/<time>: a resubmission never rewrites the job list of an array still queued."""
    base = os.path.join(output_root, "slurm", time.strftime("%Y%m%d-%H%M%S"))
    directory, number = base, 1
    while os.path.exists(directory):
        number += 1
        directory = f"{base}-{number}"
    os.makedirs(directory)
    return directory


def batch_script(name, output, body_lines, extra_directives=()):
    directives = [f"--job-name={name}", f"--output={output}", f"--chdir={os.getcwd()}", *extra_directives]
    return "\n".join(["#!/bin/sh", *(f"#SBATCH {directive}" for directive in directives), *body_lines]) + "\n"


def write_script(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return path


def command_line(argv):
    return " ".join(map(shlex.quote, argv))


def write_submission(jobs, settings, summary_commands, follow_up_sections, environ):
    """Write the scripts of one submission (see the module's docstring); return the path of submit.sh.

    `follow_up_sections`: the sections to plan once the array has ended (next.sh), or none: summary.sh, with
    `summary_commands` (none: no summary job).
    """
    sbatch_args = sbatch_options(environ, "SBATCH_ARGS")
    summary_args = sbatch_options(environ, "SBATCH_SUMMARY_ARGS") if environ.get("SBATCH_SUMMARY_ARGS") else sbatch_args
    directory = submission_directory(settings.output_root)
    job_list = os.path.join(directory, "jobs.jsonl")
    write_job_list(jobs, job_list)
    queue = [sys.executable, os.path.join(ROOT, "scripts", "job_queue.py"), job_list, "--task"]
    array = write_script(directory, "array.sh", batch_script(
        "tawt-grid", os.path.join(directory, "%A_%a.out"),
        ["# One run of the experiment grid per task: the task's line of jobs.jsonl, run as the local queue runs it.",
         f'exec {command_line(queue)} "$SLURM_ARRAY_TASK_ID"'],
        [f"--array={array_range(len(jobs), environ)}"]))
    if follow_up_sections:
        exports = {name: environ[name] for name in (*GRID_VARIABLES, *settings.grid.training) if environ.get(name)}
        exports.update(OUTPUT_ROOT=settings.output_root, BACKEND="slurm")
        if settings.data_dir:
            exports["DATA_DIR"] = settings.data_dir
        grid = [sys.executable, os.path.join(ROOT, "scripts", "experiment_grid.py"), *follow_up_sections,
                "--after_array"] + ([] if summary_commands else ["--no_summary"])
        after = write_script(directory, "next.sh", batch_script(
            "tawt-grid-next", os.path.join(directory, "next_%j.out"),
            ["# The sections that need the array's results (final_weights reads the learned weights), planned and",
             "# submitted once the array has ended.",
             *(f"export {name}={shlex.quote(value)}" for name, value in exports.items()),
             f"exec {command_line(grid)}"]))
        after_what = "planning and submitting " + " ".join(follow_up_sections)
    elif summary_commands:
        after = write_script(directory, "summary.sh", batch_script(
            "tawt-summary", os.path.join(directory, "summary_%j.out"),
            ["# The Table-1 summary and the significance tests of the whole output tree; a failure of one",
             "# still runs the other.", "status=0",
             *(f"{command_line(command)} || status=1" for command in summary_commands), 'exit "$status"']))
        after_what = "the summary"
    else:
        after = None
    submit_lines = [
        "#!/bin/sh", f"# Submits {os.path.basename(directory)}: the array of {len(jobs)} run(s)"
        + (f", then {after_what} once it has ended." if after else "."), "set -e",
        f"array=$(sbatch --parsable {command_line(sbatch_args + [array])})",
        'array=${array%%;*}  # --parsable prints "id" or "id;cluster"',
        f'echo "$array" >> {shlex.quote(os.path.join(directory, JOB_IDS_FILE))}  # what a resubmission waits for',
        f'echo "[slurm] submitted job array $array: {len(jobs)} run(s), logs in {settings.output_root}/logs/"',
    ]
    if after:
        submit_lines += [
            f"after=$(sbatch --parsable --dependency=afterany:$array {command_line(summary_args + [after])})",
            f'echo "${{after%%;*}}" >> {shlex.quote(os.path.join(directory, JOB_IDS_FILE))}',
            f'echo "[slurm] submitted job ${{after%%;*}}: {after_what} once the array has ended"',
        ]
    return write_script(directory, "submit.sh", "\n".join(submit_lines) + "\n")


def submit(submit_script, no_submit):
    """Run submit.sh (or, with no_submit, say how to); return the exit status."""
    if no_submit or not shutil.which("sbatch"):
        if not no_submit:
            say("[slurm] sbatch not found: run this on a machine that submits to the cluster (a login node)")
        say(f"[slurm] wrote the scripts to {os.path.dirname(submit_script)}; submit them with: sh {submit_script}")
        return 0 if no_submit else 1
    say(f"[slurm] sh {submit_script}")
    status = subprocess.run(["sh", submit_script]).returncode
    if status != 0:
        say(f"[slurm] submission failed (exit status {status}); the sbatch error is above. Fix SBATCH_ARGS or "
            f"edit the scripts in {os.path.dirname(submit_script)}, then run: sh {submit_script}")
    return status
