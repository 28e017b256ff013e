"""Run a list of jobs over the machine's GPUs, one job per GPU at a time (one at a time on a CPU-only machine).

A job is a shell command with a log file and, optionally, a file whose presence means the job is done
(for a training run: `all_results.json`, the last file it writes). Jobs already done are skipped, so
running the same list again after an interruption resumes it. A job that fails does not stop the others;
the failures are listed at the end and the exit status is 1.

Slots (how many jobs run at once, and where):
  * GPUs: CUDA_VISIBLE_DEVICES if set (a comma list; empty or -1: none), else `nvidia-smi -L`, else
    torch.cuda.device_count(). Each job sees only its slot's GPU, through CUDA_VISIBLE_DEVICES.
  * JOBS_PER_GPU (default 1): jobs sharing one GPU, for small models.
  * SLOTS (or --slots): the number of jobs at once, overriding the above; GPUs are dealt round-robin.
  * No GPU: one CPU slot (a training run uses every core already).

The job list (`python scripts/job_queue.py JOBS.jsonl`) has one JSON object per line:
    {"command": "sh scripts/run_single.sh ner 500", "log": "outputs/logs/single_ner.log",
     "done_file": "outputs/single/all_results.json", "name": "single ner"}

`--task N` runs only the N-th job (from 0), in the slot the caller was given: a task of a Slurm job array
(scripts/slurm_grid.py) runs its run this way, so it is logged, skipped and checked as in the local queue.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

JOB_FIELDS = ("command", "log", "done_file", "name")


def say(message):
    """Print a progress line now, also when stdout is a file (the default echo of the queue). A terminal that
    was closed (the hangup that stops the queue) takes no more lines: the queue still stops its jobs."""
    try:
        print(message, flush=True)
    except OSError:
        pass


def exit_line(status, seconds):
    """The last line of a job's log: how it ended and after how long (logged_seconds reads it back)."""
    return f"# exit status {status} after {seconds:.0f} s\n"


EXIT_LINE = re.compile(r"^# exit status (\S+) after (\d+) s$")


def logged_seconds(log_path):
    """The wall time, in seconds, of a job whose log says it ended with status 0; None for any other log."""
    if not os.path.isfile(log_path):
        return None
    seconds = None
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            ended = EXIT_LINE.match(line.rstrip("\n"))
            if ended and ended.group(1) == "0":
                seconds = int(ended.group(2))
    return seconds


@dataclass
class Job:
    command: str  # run with /bin/sh -c
    log: str  # stdout and stderr of the job go here (replaced on every attempt)
    done_file: str = None  # when it exists, the job is finished and is skipped
    name: str = None  # shown in progress lines; default: the log file's name

    def __post_init__(self):
        self.name = self.name or os.path.splitext(os.path.basename(self.log))[0]

    def is_done(self):
        return self.done_file is not None and os.path.isfile(self.done_file)


@dataclass
class Slot:
    label: str  # what progress lines call it: "GPU 1" or "CPU"
    gpu: str = None  # the CUDA_VISIBLE_DEVICES value its jobs get; None: the environment is left alone


@dataclass
class QueueReport:
    finished: list = field(default_factory=list)  # jobs run now that exited 0
    skipped: list = field(default_factory=list)  # jobs done before this call
    failed: list = field(default_factory=list)  # (job, exit status)
    not_started: list = field(default_factory=list)  # left when the queue was interrupted

    @property
    def ok(self):
        return not self.failed and not self.not_started


class JobListError(ValueError):
    """A job list line that cannot be read; the message names the file, the line and the fix."""


def read_job_list(path):
    """The jobs of a JSON-lines job list (blank lines and lines starting with # are ignored)."""
    jobs = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise JobListError(f"{path} line {line_number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict) or "command" not in record or "log" not in record:
                raise JobListError(f"{path} line {line_number}: a job needs at least \"command\" and \"log\"")
            unknown = set(record) - set(JOB_FIELDS)
            if unknown:
                raise JobListError(f"{path} line {line_number}: unknown fields {sorted(unknown)}; "
                                   f"a job has {', '.join(JOB_FIELDS)}")
            jobs.append(Job(**record))
    return jobs


def write_job_list(jobs, path):
    with open(path, "w", encoding="utf-8") as handle:
        for job in jobs:
            handle.write(json.dumps({name: getattr(job, name) for name in JOB_FIELDS}) + "\n")


def visible_gpus(environ=None):
    """The GPU ids jobs can be given: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi or torch finds."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [gpu.strip() for gpu in environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
        # CUDA stops at the first invalid id; -1 is the usual way to hide every GPU.
        return [] if not ids or ids[0].startswith("-") else ids
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            listing = None
        if listing is not None and listing.returncode == 0:
            return [str(index) for index, line in enumerate(
                line for line in listing.stdout.splitlines() if line.startswith("GPU "))]
    try:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    except ImportError:
        return []


def positive_int(environ, name):
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise JobListError(f"{name}={value!r}: give a whole number >= 1")
    return int(value)


def detect_slots(environ=None, slots=None):
    """The queue's slots: one per GPU (times JOBS_PER_GPU), or `slots`/SLOTS of them; one CPU slot without GPUs."""
    environ = os.environ if environ is None else environ
    gpus = visible_gpus(environ)
    count = slots or positive_int(environ, "SLOTS")
    if not gpus:
        return [Slot(label=f"CPU {index}" if (count or 1) > 1 else "CPU") for index in range(count or 1)]
    count = count or len(gpus) * (positive_int(environ, "JOBS_PER_GPU") or 1)
    return [Slot(label=f"GPU {gpus[index % len(gpus)]}", gpu=gpus[index % len(gpus)]) for index in range(count)]


def scheduler_slot_label(environ=None):
    """What a job's log says it ran on when a scheduler placed it: "Slurm job 12_3 on node7"."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ:
        return "this machine"
    job = environ.get("SLURM_ARRAY_JOB_ID", environ["SLURM_JOB_ID"])
    if "SLURM_ARRAY_TASK_ID" in environ:
        job += "_" + environ["SLURM_ARRAY_TASK_ID"]
    return f"Slurm job {job} on {environ.get('SLURMD_NODENAME', 'its node')}"


def _tail(path, lines=5):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def run_jobs(jobs, slots, echo=say):
    """Run `jobs` over `slots` (at most one job per slot at any time); return a QueueReport."""
    report = QueueReport()
    pending, seen = [], set()
    for job in jobs:
        key = job.done_file or job.log
        if key in seen:
            echo(f"[queue] {job.name}: listed twice; running it once")
            continue
        seen.add(key)
        if job.is_done():
            report.skipped.append(job)
        else:
            pending.append(job)
    if report.skipped:
        echo(f"[queue] skipping {len(report.skipped)} job(s) whose results already exist")
    total = len(pending)
    echo(f"[queue] {total} job(s) to run on {len(slots)} slot(s): {', '.join(slot.label for slot in slots)}")
    lock = threading.Lock()
    running = {}  # slot index -> Popen
    watchdog = Watchdog()
    stop = threading.Event()
    started = [0]

    def next_job():
        with lock:
            if stop.is_set() or not pending:
                return None, 0
            started[0] += 1
            return pending.pop(0), started[0]

    def work(index, slot):
        while True:
            job, number = next_job()
            if job is None:
                return
            environment = dict(os.environ)
            if slot.gpu is not None:
                environment["CUDA_VISIBLE_DEVICES"] = slot.gpu
            echo(f"[{number}/{total}] start on {slot.label}: {job.name}")
            began = time.time()
            try:
                os.makedirs(os.path.dirname(os.path.abspath(job.log)), exist_ok=True)
                with open(job.log, "w", encoding="utf-8") as log:
                    log.write(f"# {job.command}\n# on {slot.label}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                    log.flush()
                    # Its own process group, so that stopping the queue stops the job and everything it started.
                    process = subprocess.Popen(["/bin/sh", "-c", job.command], stdout=log, stderr=subprocess.STDOUT,
                                               env=environment, start_new_session=True)
                    with lock:
                        running[index] = process
                        watchdog.watch(process.pid)
                    status = process.wait()
                    with lock:
                        running.pop(index, None)
                        watchdog.forget(process.pid)
                    seconds = time.time() - began
                    log.write(exit_line(status, seconds))
            except OSError as error:  # the log cannot be written (a full disk, a read-only tree): a failure
                status, seconds = f"not run: {job.log}: {error.strerror}", time.time() - began
            if status == 0 and job.done_file and not job.is_done():
                status = f"0 but no {job.done_file}"  # a run that ended without its results did not finish
            with lock:
                if status == 0:
                    report.finished.append(job)
                    echo(f"[{number}/{total}] done in {seconds:.0f} s: {job.name}")
                elif stop.is_set():  # stopped by the interruption, not failed
                    report.not_started.append(job)
                else:
                    report.failed.append((job, status))
                    echo(f"[{number}/{total}] FAILED (exit status {status}) after {seconds:.0f} s: {job.name}; "
                         f"log: {job.log}")

    workers = [threading.Thread(target=work, args=(index, slot), daemon=True) for index, slot in enumerate(slots)]
    for worker in workers:
        worker.start()
    # `kill` (SIGTERM) and a closed terminal or dropped ssh session (SIGHUP) stop the queue as Ctrl-C does:
    # the running jobs are ended too, not left orphaned (each runs in a session of its own, out of the
    # terminal's reach).
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for stop_signal in (signal.SIGTERM, signal.SIGHUP):
            previous_handlers[stop_signal] = signal.signal(stop_signal, _raise_keyboard_interrupt)
    try:
        # Polled with sleep rather than join: an interrupted Thread.join can leave the thread looking finished.
        while any(worker.is_alive() for worker in workers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop.set()
        with lock:
            for process in running.values():
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 60
        while any(worker.is_alive() for worker in workers) and time.time() < deadline:
            time.sleep(0.1)
        report.not_started.extend(pending)
        echo("[queue] interrupted; run the same command again to resume (finished jobs are skipped)")
    finally:
        for stop_signal, handler in previous_handlers.items():
            signal.signal(stop_signal, handler)
        watchdog.close()
    return report


def _raise_keyboard_interrupt(signal_number, frame):
    raise KeyboardInterrupt


# The watchdog's program: it reads "+PGID" (a job started) and "-PGID" (it ended) from its stdin, a pipe only
# the queue holds; the pipe's end (the queue ended, however it ended: a kill -9 too) stops the jobs left.
WATCHDOG_PROGRAM = """
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
def signal_groups(number):
    for group in list(groups):
        try:
            os.killpg(group, number)
        except OSError:
            groups.discard(group)
signal_groups(signal.SIGTERM)
deadline = time.time() + 30
while groups and time.time() < deadline:
    time.sleep(0.5)
    signal_groups(0)
signal_groups(signal.SIGKILL)
"""


class Watchdog:
    """A small process that stops the queue's running jobs when the queue dies without stopping them itself
    (SIGKILL, a crash): a job is in a session of its own, so nothing else would, and it would run on, owned by
    init, while a second queue started the same job again."""

    def __init__(self):
        read_end, write_end = os.pipe()  # not inherited by the jobs: only the queue holds the write end
        try:
            self.process = subprocess.Popen([sys.executable, "-c", WATCHDOG_PROGRAM], stdin=read_end,
                                            start_new_session=True)
        finally:
            os.close(read_end)
        self.pipe = os.fdopen(write_end, "w")

    def _tell(self, line):
        try:
            self.pipe.write(line + "\n")
            self.pipe.flush()
        except (OSError, ValueError):  # the watchdog is gone: the queue still runs its jobs
            pass

    def watch(self, pid):
        self._tell(f"+{pid}")

    def forget(self, pid):
        self._tell(f"-{pid}")

    def close(self):
        try:
            self.pipe.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass


def summarize(report, echo=say):
    echo(f"[queue] {len(report.finished)} finished, {len(report.skipped)} skipped (already done), "
         f"{len(report.failed)} failed" + (f", {len(report.not_started)} not started" if report.not_started else ""))
    for job, status in report.failed:
        echo(f"[queue] FAILED (exit status {status}): {job.name}\n    command: {job.command}\n    log: {job.log}")
        for line in _tail(job.log):
            echo(f"    | {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_list", help="a JSON-lines file, one job per line")
    parser.add_argument("--slots", type=int, default=None, help="jobs at once (default: one per GPU, else 1)")
    parser.add_argument("--task", type=int, default=None, metavar="N",
                        help="run only the N-th job (from 0), leaving CUDA_VISIBLE_DEVICES as it is "
                        "(a task of a Slurm job array)")
    args = parser.parse_args(argv)
    try:
        jobs = read_job_list(args.job_list)
        if args.task is None:
            slots = detect_slots(slots=args.slots)
        elif not 0 <= args.task < len(jobs):
            raise JobListError(f"{args.job_list}: --task {args.task}, but the list has {len(jobs)} jobs (0 to "
                               f"{len(jobs) - 1})")
        else:
            jobs, slots = [jobs[args.task]], [Slot(label=scheduler_slot_label())]
    except (OSError, JobListError) as error:
        sys.exit(f"error: {error}")
    report = run_jobs(jobs, slots)
    summarize(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
