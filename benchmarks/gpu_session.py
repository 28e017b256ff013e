"""Everything a session with a lent GPU measures, in one call: the GPU check, then the large grid.

Here, where the embedded default data and the MiniLM encoder are installed, in the checkout the session
sends to the GPU machine:

    python benchmarks/gpu_session.py pack        # writes gpu_session_pack/ (ignored by git); prints its size

There, from that checkout with gpu_session_pack/ carried along (the only thing the bare machine lacks):

    PYTHONPATH=. python3 benchmarks/gpu_session.py run      # ends within --budget_minutes (9.5); files in $OUT

`pack` writes, into one folder that must travel with the working tree (64 MiB in all):
  data/       the large grid's slice of the default data, exactly as the grid makes it (default_data_slice in
              scripts/experiment_grid.py, the sizes of scripts/grids/large.toml: 3,000 random training sentences
              of every task, 500 dev, 2,000 test)
  encoder/    the MiniLM encoder's files; its weights in float16 when float32 would not fit (the runs load
              them into float32 again, so only the rounding of the stored weights differs)
  gpu_check/  the GPU check's own pack (benchmarks/gpu_check.py pack)
  site/       seqeval, which the machine lacks (pure Python; the span F1 of ner)
and refuses, naming the sizes, when the pack and the rest of the working tree would exceed the limit.

`run` makes, in order, within one wall-clock budget:
  1. the GPU check (benchmarks/gpu_check.py run), at most --check_minutes;
  2. the large grid (GRID=large sh scripts/run_experiments.sh) on the pack, with --bf16 added to the grid's
     own EXTRA_ARGS and --jobs runs at a time on the GPU, one seed after another (seeds 1, then 1 2, then
     1 2 3: every finished seed is a whole Table 1), stopped at the budget's end;
  3. the grid's summary (Table 1 and the significance tests) on the runs that finished;
  4. the archive of those runs (testing/archive_results.py), which goes back with the grid's logs.
Into --out ($OUT there): gpu_check.json and .txt (the check's results), gpu_check.log, grid.log,
grid_archive.tar.gz, grid_logs.tar.gz and session.json (what ran, how long, what finished); the last lines
printed are the check's table, Table 1 and a short table of the session. A second `run` on the same
machine (same --scratch_dir) resumes the grid: finished runs are skipped.

`run --no_cuda --tiny` is the CPU smoke test (tests/test_gpu_session.py): a pack made from tiny files, the
GPU check at its tiny size, and one seed of the grid with one epoch of length 32.
"""

import time

STARTED = time.monotonic()  # run as a script, the budget counts from here, before the heavy imports below

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing on the GPU machine can reach a hub

from tawt.benchmarks.gpu_check import PACK_INFO, directory_bytes, read_pack, replace_directory
from tawt.cross_task_training import UsageError
from tawt.output_files import write_text_atomic
from tawt.scripts.experiment_grid import JobMaker, default_data_slice, plan, settings_from_environment, summary_commands
from tawt.scripts.grid_file import preset_grid
from tawt.scripts.job_queue import logged_seconds
from utils_cross_task import TaskDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE_GRID = preset_grid("large")  # scripts/grids/large.toml
GPU_CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.py")
RUN_EXPERIMENTS = os.path.join(ROOT, "scripts", "run_experiments.sh")
ARCHIVE = os.path.join(ROOT, "testing", "archive_results.py")

PACK_DIR = os.path.join(ROOT, "gpu_session_pack")
# What travels to the GPU machine: the working tree and the carried paths, 64 MiB together; the margin is
# for files committed between making the pack and the call.
TRAVEL_LIMIT_BYTES = 64 * 2**20
TRAVEL_MARGIN_BYTES = 2 * 2**20
WEIGHT_FILE = "model.safetensors"
NOT_PACKED = (".gitattributes", "README.md")  # of the encoder's folder, besides weights and sub-folders
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ot", ".pt")

# The tiny run: a few steps of every paradigm on tiny files (the sizes are the grid's script settings).
TINY_GRID_SETTINGS = {"NUM_EPOCHS": "1", "MAX_LENGTH": "32", "BATCH_SIZE": "4", "GRADIENT_SAMPLING_BATCH_SIZE": "4"}
# Seconds kept at the end of the budget for the summary and the archive, and the least a seed's round gets.
SUMMARY_RESERVE_S = 75
ARCHIVE_RESERVE_S = 20
LEAST_ROUND_S = 45
STOP_GRACE_S = 30  # after SIGTERM, before SIGKILL (the queue ends its runs first)
FILE_BACK_LIMIT = 16 * 2**20  # what one file of $OUT may weigh to come back
FILES_BACK = 8  # how many files of $OUT come back


# ---------------------------------------------------------------------------------------------------------
# pack


def pack(args):
    """Write the data slice, the encoder, the GPU check's pack and seqeval into args.output_dir (replaced)."""
    from tawt.data.make_default_data import resolve_model_name_or_path

    main_tasks = args.main_tasks or list(LARGE_GRID.main_tasks)
    unknown = [task for task in main_tasks if task not in LARGE_GRID.main_tasks]
    if unknown:
        raise UsageError(f"--main_tasks {' '.join(unknown)}: not a main task of the large grid; choose from "
                         f"{' '.join(LARGE_GRID.main_tasks)}")
    sizes = {"train": args.train_sentences, "dev": args.dev_sentences, "test": args.test_sentences}
    model_dir = resolve_model_name_or_path(args.model_name_or_path)
    if not os.path.isfile(os.path.join(model_dir, WEIGHT_FILE)):
        raise UsageError(f"{model_dir}: no {WEIGHT_FILE}; give --model_name_or_path a folder with safetensors "
                         "weights (save_pretrained writes them)")
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".gpu_session_pack-", dir=os.path.dirname(output_dir))
    try:
        grid = dataclasses.replace(LARGE_GRID, main_tasks={task: LARGE_GRID.main_tasks[task] for task in main_tasks},
                                   data_slice=sizes)
        os.rename(default_data_slice(grid, staging, source=args.data_dir), os.path.join(staging, "data"))
        with open(os.path.join(staging, "data", "slice_info.json")) as handle:
            slice_info = json.load(handle)
        check_pack = [sys.executable, GPU_CHECK, "pack", "--output_dir", os.path.join(staging, "gpu_check")]
        check_pack += ["--data_dir", args.data_dir] if args.data_dir else []
        check_pack += ["--model_name_or_path", args.model_name_or_path] if args.model_name_or_path else []
        check_pack += args.gpu_check_pack_args.split()
        print("+ " + " ".join(check_pack), flush=True)
        subprocess.run(check_pack, check=True, env=subprocess_environment([]))
        seqeval = pack_distribution("seqeval", os.path.join(staging, "site"))
        encoder_dir = os.path.join(staging, "encoder")
        copy_encoder_files(model_dir, encoder_dir)
        parts = {name: directory_bytes(os.path.join(staging, name)) for name in ("data", "gpu_check", "site", "encoder")}
        tree = travelling_tree_bytes(ROOT, leaving_out=(staging, output_dir))
        float32_bytes = os.path.getsize(os.path.join(model_dir, WEIGHT_FILE))
        dtype = weights_dtype(args.weights, sum(parts.values()) + (tree or 0), float32_bytes)
        rounding = write_weights(os.path.join(model_dir, WEIGHT_FILE), os.path.join(encoder_dir, WEIGHT_FILE), dtype)
        parts["encoder"] = directory_bytes(encoder_dir)
        total = sum(parts.values()) + (tree or 0)
        info = {"made": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "main_tasks": main_tasks, "sentences": sizes,
                "data": slice_info, "encoder_of": model_dir, "weights": dtype, "weights_rounding": rounding,
                "seqeval": seqeval, "bytes": parts, "pack_bytes": sum(parts.values()),
                "working_tree_bytes": tree, "travelling_bytes": total}
        with open(os.path.join(staging, PACK_INFO), "w") as handle:
            json.dump(info, handle, indent=2)
        print(size_report(info))
        check_travelling_size(total)
        replace_directory(output_dir, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    inside = os.path.relpath(output_dir, ROOT)
    print(f"{output_dir}: written" + ("" if inside.startswith("..") else
                                      f"; carry it to the GPU machine (the device tool's carry: [\"{inside}\"])"))
    return info


def weights_dtype(requested, other_bytes, float32_bytes):
    """The encoder's stored dtype: `requested`, or with auto float32 when it fits beside `other_bytes`."""
    if requested != "auto":
        return requested
    return "float32" if other_bytes + float32_bytes <= TRAVEL_LIMIT_BYTES - TRAVEL_MARGIN_BYTES else "float16"


def check_travelling_size(total):
    if total > TRAVEL_LIMIT_BYTES - TRAVEL_MARGIN_BYTES:
        raise UsageError(f"the pack and the working tree would take {mib(total)}, over the "
                         f"{mib(TRAVEL_LIMIT_BYTES - TRAVEL_MARGIN_BYTES)} that may travel (64 MiB less a margin); "
                         "lower --train_sentences/--test_sentences, pass --weights float16, or carry less")


def copy_encoder_files(model_dir, encoder_dir):
    """The encoder's configuration and tokenizer files, as they are (no weights, no sub-folders)."""
    os.makedirs(encoder_dir)
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path) and name not in NOT_PACKED and not name.endswith(WEIGHT_SUFFIXES):
            shutil.copyfile(path, os.path.join(encoder_dir, name))


def write_weights(source, destination, dtype):
    """Copy a safetensors file, its float32 tensors cast to `dtype`; return the rounding that made."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype == "float32":
        shutil.copyfile(source, destination)
        return None
    tensors = load_file(source)
    converted, worst_tensor, worst_relative = {}, None, 0.0
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            converted[name] = tensor
            continue
        largest = tensor.abs().max().item() if tensor.numel() else 0.0
        if largest > torch.finfo(torch.float16).max:
            raise UsageError(f"{source}: tensor {name} holds {largest:.3g}, beyond float16's range; "
                             "pack it with --weights float32")
        converted[name] = tensor.to(torch.float16)
        norm = tensor.norm().item()
        relative = (converted[name].float() - tensor).norm().item() / norm if norm else 0.0
        if relative >= worst_relative:
            worst_tensor, worst_relative = name, relative
    save_file(converted, destination, metadata={"format": "pt"})
    return {"dtype": dtype, "largest_relative_error": worst_relative, "of_tensor": worst_tensor,
            "measure": "||w16 - w32|| / ||w32|| per tensor"}


def pack_distribution(name, site_dir):
    """Copy an installed pure-Python distribution (its package and its .dist-info) into site_dir."""
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"{name} is not installed here, and the GPU machine lacks it: pip install {name}") from None
    for file in distribution.files or []:
        if "__pycache__" in file.parts or file.suffix == ".pyc" or str(file).startswith(".."):
            continue  # the bin/ scripts of some distributions live outside site-packages
        target = os.path.join(site_dir, *file.parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(distribution.locate_file(file), target)
    return distribution.version


def travelling_tree_bytes(root, leaving_out=()):
    """Bytes of the files that travel with a call: tracked, and untracked but not ignored (None: no git);
    those below the folders `leaving_out` (the pack, and the folder it is made in) are not counted."""
    try:
        listing = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folders = [os.path.join(os.path.abspath(folder), "") for folder in leaving_out]
    paths = {os.path.join(root, name) for name in listing.decode().split("\0") if name}
    paths = {path for path in paths if not any(path.startswith(folder) for folder in folders)}
    return sum(os.path.getsize(path) for path in paths if os.path.isfile(path))


def mib(count):
    return f"{count / 2**20:.1f} MiB"


def size_report(info):
    parts = ", ".join(f"{name} {mib(count)}" for name, count in info["bytes"].items())
    tree = info["working_tree_bytes"]
    report = f"pack {mib(info['pack_bytes'])} ({parts}; encoder weights in {info['weights']})"
    if tree is not None:
        report += f" + working tree {mib(tree)} = {mib(info['travelling_bytes'])} of the {mib(TRAVEL_LIMIT_BYTES)} that travel"
    return report


# ---------------------------------------------------------------------------------------------------------
# run


def subprocess_environment(site_dirs, **settings):
    """This environment, offline, the checkout (and site_dirs) first on PYTHONPATH, few progress bars."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, *site_dirs, environment.get("PYTHONPATH")]))
    # TQDM_DISABLE stops the bars that do not set `disable` themselves; the training loop's do, and update
    # at most every TQDM_MININTERVAL seconds instead, so the logs that come back stay small.
    environment.update({"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TQDM_MININTERVAL": "30",
                        "PYTHONUNBUFFERED": "1", "PYTHON": sys.executable}, **settings)
    return environment


def run_until(command, log_path, environment, deadline):
    """Run `command`, its output into log_path and onto stdout, stopping it at `deadline` (time.monotonic()).

    Returns (exit status, seconds, whether it was stopped). The command runs in its own process group:
    SIGTERM first (the job queue then ends its runs), SIGKILL after STOP_GRACE_S."""
    began = time.monotonic()
    if deadline - began <= 0:
        return None, 0.0, True
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

        def copy_output():
            for line in process.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()
        stopped = False
        try:
            process.wait(timeout=deadline - began)
        except subprocess.TimeoutExpired:
            stopped = True
            say(f"[session] the budget's time is up: stopping {os.path.basename(command[1])}")
            stop(process)
        reader.join(timeout=10)
        seconds = time.monotonic() - began
        log.write(f"# exit status {process.returncode} after {seconds:.0f} s{' (stopped)' if stopped else ''}\n")
    return process.returncode, seconds, stopped


def stop(process):
    for signal_number, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def say(message):
    print(message, flush=True)


def grid_environment(args, info, pack_dir, site_dirs, seeds, use_cuda):
    """The settings of the grid's command: the pack's data and encoder, the seeds, --bf16 added."""
    # EXTRA_ARGS adds to the grid's own flags (run_experiments.sh puts these after them).
    extra_args = " ".join(filter(None, ["--bf16", args.extra_args]))
    settings = {"GRID": "large", "DATA_DIR": os.path.join(pack_dir, "data"), "BERT_MODEL": os.path.join(pack_dir, "encoder"),
                "OUTPUT_ROOT": os.path.join(os.path.abspath(args.scratch_dir), "outputs"),
                "MAIN_TASKS": " ".join(info["main_tasks"]), "SEEDS": " ".join(seeds), "EXTRA_ARGS": extra_args}
    settings.update(TINY_GRID_SETTINGS if args.tiny else {})
    if use_cuda:
        settings["JOBS_PER_GPU"] = str(args.jobs)
    else:  # every run on the CPU, args.jobs at a time
        settings.update({"CUDA_VISIBLE_DEVICES": "", "SLOTS": str(args.jobs)})
    # A run's host work is a single stream of kernel launches: more threads per run than cores / runs only compete.
    settings["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.jobs))
    return subprocess_environment(site_dirs, **settings)


def run_rounds(args, info, pack_dir, site_dirs, seeds, use_cuda, grid_log, grid_end, rounds, save):
    """The grid with seeds 1, then 1 2, ...: each round runs what the one before left, until grid_end."""
    for count in range(1, len(seeds) + 1):
        if grid_end - time.monotonic() < LEAST_ROUND_S:
            say(f"[session] {grid_end - time.monotonic():.0f} s left for the grid: no round with seeds "
                f"{' '.join(seeds[:count])}")
            return
        environment = grid_environment(args, info, pack_dir, site_dirs, seeds[:count], use_cuda)
        say(f"[session] the large grid, seeds {' '.join(seeds[:count])} (finished runs are skipped)")
        status, seconds, stopped = run_until(["sh", RUN_EXPERIMENTS, *args.sections, "--no_summary"], grid_log,
                                             environment, grid_end)
        rounds.append({"seeds": seeds[:count], "exit_status": status, "seconds": seconds, "stopped": stopped})
        save()
        if stopped:
            return


def grid_progress(environment, sections):
    """The grid's planned runs, and (run, seconds) of those finished, read from the output tree."""
    settings = settings_from_environment(environment, prepare_data=False)
    jobs = plan(JobMaker(settings, echo=lambda message: None), settings, sections)
    finished = [(job.name, logged_seconds(job.log)) for job in jobs if job.is_done()]
    return settings, jobs, finished


class UsageSampler:
    """Every `interval` seconds while the grid runs: the host's load and, where nvidia-smi is, each GPU's
    utilization (the share of time a kernel ran) and memory in use; what says whether --jobs could grow."""

    def __init__(self, interval=5.0):
        self.interval, self.samples = interval, []
        self.nvidia_smi = shutil.which("nvidia-smi")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exception):
        self._stop.set()
        self._thread.join(timeout=15)

    def _sample(self):
        while not self._stop.wait(self.interval):
            sample = {"load": os.getloadavg()[0]}
            if self.nvidia_smi:
                try:
                    listing = subprocess.run([self.nvidia_smi, "--query-gpu=utilization.gpu,memory.used",
                                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                             timeout=10).stdout
                    rows = [[float(value) for value in line.split(",")] for line in listing.strip().splitlines()]
                    sample["gpu_utilization_percent"] = [row[0] for row in rows]
                    sample["gpu_memory_mib"] = [row[1] for row in rows]
                except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                    pass
            self.samples.append(sample)

    def summary(self):
        if not self.samples:
            return {}
        summary = {"samples": len(self.samples), "interval_s": self.interval,
                   "mean_host_load": statistics.mean(sample["load"] for sample in self.samples)}
        utilization = [max(sample["gpu_utilization_percent"]) for sample in self.samples if "gpu_utilization_percent" in sample]
        if utilization:
            summary["mean_gpu_utilization_percent"] = statistics.mean(utilization)
            summary["peak_gpu_memory_mib"] = max(max(sample["gpu_memory_mib"]) for sample in self.samples
                                                 if "gpu_memory_mib" in sample)
        return summary


def tar_directory(directory, archive_path, name):
    with tarfile.open(archive_path, "w:gz") as archive:
        archive.add(directory, arcname=name)
    return os.path.getsize(archive_path)


def run_session(args, argv, began):
    import torch

    end = began + args.budget_minutes * 60
    pack_dir = os.path.abspath(args.pack_dir)
    info = read_pack(pack_dir, "benchmarks/gpu_session.py")
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    if not use_cuda and not args.no_cuda:
        raise UsageError("no GPU is visible (torch.cuda.is_available() is False); run on a GPU machine, or pass "
                         "--no_cuda (with --tiny) to try the session on the CPU")
    device = torch.cuda.get_device_name(0) if use_cuda else "cpu"
    out = os.path.abspath(args.out)
    scratch = os.path.abspath(args.scratch_dir)
    os.makedirs(out, exist_ok=True)
    os.makedirs(scratch, exist_ok=True)
    site_dirs = [] if importlib.util.find_spec("seqeval") else [os.path.join(pack_dir, "site")]
    record = {"command": " ".join(["python", "benchmarks/gpu_session.py", *argv]), "device": device,
              "budget_minutes": args.budget_minutes, "pack": info, "seqeval_from_pack": bool(site_dirs), "phases": {}}
    record_path = os.path.join(out, "session.json")

    def save():
        record["seconds"] = time.monotonic() - began
        write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")

    say(f"[session] on {device}; budget {args.budget_minutes} min; pack {pack_dir}; out {out}")
    save()
    # 1. The GPU check.
    check_output = os.path.join(out, "gpu_check.json")
    if args.skip_gpu_check:
        record["phases"]["gpu_check"] = {"skipped": True}
    else:
        command = [sys.executable, GPU_CHECK, "run", "--pack_dir", os.path.join(pack_dir, "gpu_check"),
                   "--output", check_output] + (["--no_cuda"] if not use_cuda else []) + (["--tiny"] if args.tiny else [])
        deadline = min(began + args.check_minutes * 60, end - SUMMARY_RESERVE_S - ARCHIVE_RESERVE_S - LEAST_ROUND_S)
        status, seconds, stopped = run_until(command, os.path.join(out, "gpu_check.log"),
                                             subprocess_environment(site_dirs), deadline)
        record["phases"]["gpu_check"] = {"exit_status": status, "seconds": seconds, "stopped": stopped}
        save()
    # 2. The grid, one more seed a round.
    seeds = args.seeds or list(LARGE_GRID.seeds)
    grid_log = os.path.join(out, "grid.log")
    grid_end = end - SUMMARY_RESERVE_S - ARCHIVE_RESERVE_S
    rounds = record["phases"]["grid"] = []
    with UsageSampler() as usage:
        run_rounds(args, info, pack_dir, site_dirs, seeds, use_cuda, grid_log, grid_end, rounds, save)
    record["usage_during_the_grid"] = usage.summary()
    # Progress against the whole grid, every seed (a round stopped early ran fewer).
    environment = grid_environment(args, info, pack_dir, site_dirs, seeds, use_cuda)
    grid_settings, planned, finished = grid_progress(environment, args.sections)
    record["grid_settings"] = {name: environment[name] for name in
                               ("GRID", "MAIN_TASKS", "SEEDS", "EXTRA_ARGS", "OMP_NUM_THREADS") if name in environment}
    record["grid_settings"].update({name: environment[name] for name in ("JOBS_PER_GPU", "SLOTS") if name in environment})
    record["runs"] = {"planned": len(planned), "finished": len(finished), "seconds": dict(finished),
                      "not_finished": [job.name for job in planned if not job.is_done()]}
    # 3. The summary of what finished (the grid's own commands), 4. its archive and the logs.
    output_root = grid_settings.output_root
    if finished:
        for command in summary_commands(grid_settings):
            status, seconds, stopped = run_until(command, grid_log, environment, end - ARCHIVE_RESERVE_S)
            record["phases"].setdefault("summary", []).append(
                {"command": os.path.basename(command[1]), "exit_status": status, "seconds": seconds, "stopped": stopped})
        archive_dir = os.path.join(scratch, "archive", args.archive_name)
        shutil.rmtree(archive_dir, ignore_errors=True)
        status, seconds, _ = run_until([sys.executable, ARCHIVE, output_root, archive_dir], grid_log, environment,
                                       time.monotonic() + max(ARCHIVE_RESERVE_S, end - time.monotonic()))
        record["phases"]["archive"] = {"exit_status": status, "seconds": seconds}
        if status == 0:
            record["phases"]["archive"]["bytes"] = tar_directory(
                archive_dir, os.path.join(out, "grid_archive.tar.gz"), args.archive_name)
    if os.path.isdir(os.path.join(output_root, "logs")):
        record["phases"]["logs_bytes"] = tar_directory(os.path.join(output_root, "logs"),
                                                       os.path.join(out, "grid_logs.tar.gz"), "logs")
    too_large = [name for name in sorted(os.listdir(out)) if os.path.getsize(os.path.join(out, name)) > FILE_BACK_LIMIT]
    record["over_the_file_limit"] = too_large
    save()
    print_ending(record, check_output, os.path.join(output_root, "summary", "table1.md"), out)
    return record


def print_ending(record, check_output, table1_path, out):
    """The check's table, Table 1, and the session's table: the last lines the call shows."""
    table_path = os.path.splitext(check_output)[0] + ".txt"
    if os.path.isfile(table_path):
        with open(table_path) as handle:
            print("\n" + handle.read().rstrip())
    if os.path.isfile(table1_path):
        with open(table1_path) as handle:
            print("\n" + handle.read().split("\n# Other runs")[0].rstrip())
    check = record["phases"].get("gpu_check", {})
    check_results = {}
    if os.path.isfile(check_output):
        with open(check_output) as handle:
            check_results = json.load(handle)
    rows = [entry for suite in check_results.get("suites", []) for entry in suite.get("rows", [])]
    runs = record.get("runs", {})
    seconds = [value for value in runs.get("seconds", {}).values() if value is not None]
    lines = [("GPU check", "skipped" if check.get("skipped") else
              f"{'finished' if check_results.get('finished') else 'NOT finished'} in {check.get('seconds', 0) / 60:.1f} min, "
              f"exit {check.get('exit_status')}{', stopped at its budget' if check.get('stopped') else ''}; "
              f"{sum(1 for entry in rows if entry.get('met') is True)} targets met, "
              f"{sum(1 for entry in rows if entry.get('met') is False)} not")]
    for entry in record["phases"].get("grid", []):
        lines.append((f"grid, seeds {' '.join(entry['seeds'])}",
                      f"{entry['seconds'] / 60:.1f} min, exit {entry['exit_status']}"
                      f"{', stopped at the budget' if entry['stopped'] else ''}"))
    lines.append(("runs finished", f"{runs.get('finished', 0)} of {runs.get('planned', 0)}" +
                  (f"; median {statistics.median(seconds):.0f} s a run" if seconds else "")))
    usage = record.get("usage_during_the_grid") or {}
    if usage:
        lines.append(("during the grid", f"host load {usage['mean_host_load']:.1f} (mean)" + (
            f", GPU busy {usage['mean_gpu_utilization_percent']:.0f} % (mean), {usage['peak_gpu_memory_mib']:.0f} MiB "
            "in use at most" if "mean_gpu_utilization_percent" in usage else "")))
    for entry in record["phases"].get("summary", []):
        lines.append((f"summary: {entry['command']}", f"exit {entry['exit_status']} in {entry['seconds']:.0f} s"))
    archive = record["phases"].get("archive")
    lines.append(("archive", "none (no run finished)" if archive is None else
                  f"exit {archive['exit_status']}" + (f", {mib(archive['bytes'])}" if "bytes" in archive else "")))
    if record["over_the_file_limit"]:
        lines.append(("too large to come back", " ".join(record["over_the_file_limit"])))
    if len(os.listdir(out)) > FILES_BACK:
        lines.append(("too many to come back", f"{len(os.listdir(out))} files; {FILES_BACK} come back"))
    lines.append(("session", f"{record['seconds'] / 60:.1f} min of {record['budget_minutes']} on {record['device']}; "
                             f"files in {out}: {' '.join(sorted(os.listdir(out)))}"))
    width = max(len(name) for name, _ in lines)
    print()
    for name, value in lines:
        print(f"{name:<{width}}  {value}")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the folder the GPU machine needs and cannot get")
    packing.add_argument("--output_dir", default=PACK_DIR, help="where the pack goes (replaced); default gpu_session_pack/")
    packing.add_argument("--data_dir", default=None, help="the data to slice; default: the embedded default data")
    packing.add_argument("--model_name_or_path", default=None, help="the encoder to pack; default: MiniLM")
    packing.add_argument("--main_tasks", nargs="+", default=None, help="the grid's main tasks to pack data for "
                         f"(default: the large grid's, {' '.join(LARGE_GRID.main_tasks)})")
    for split, count in LARGE_GRID.data_slice.items():
        packing.add_argument(f"--{split}_sentences", type=int, default=count,
                             help=f"{split} sentences of every task (default: the large grid's {count})")
    packing.add_argument("--weights", choices=("auto", "float16", "float32"), default="auto",
                         help="the encoder's stored weights (default auto: float16 when float32 would not fit)")
    packing.add_argument("--gpu_check_pack_args", default="",
                         help="further flags of `benchmarks/gpu_check.py pack`, e.g. \"--train_sentences 24\"")
    running = commands.add_parser("run", help="the GPU check, then the large grid, within a time budget")
    running.add_argument("--pack_dir", default=PACK_DIR, help="the folder `pack` wrote; default gpu_session_pack/")
    running.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "gpu_session_out"),
                         help="where the files to bring back go (default: $OUT, else gpu_session_out/)")
    running.add_argument("--scratch_dir", default=os.path.join(tempfile.gettempdir(), "tawt-gpu-session"),
                         help="the grid's output tree (its models and checkpoints; a second run resumes it)")
    running.add_argument("--budget_minutes", type=float, default=9.5, help="the whole command's wall time (default 9.5)")
    running.add_argument("--check_minutes", type=float, default=4.0, help="the GPU check's share at most (default 4)")
    running.add_argument("--jobs", type=int, default=8, help="runs at a time on the GPU (default 8)")
    running.add_argument("--seeds", nargs="+", default=None, help="the grid's seeds, run one more a round (default 1 2 3)")
    running.add_argument("--sections", nargs="+", choices=LARGE_GRID.sections, default=list(LARGE_GRID.sections),
                         help="the grid's sections to run (default: all the large grid's: "
                              + " ".join(LARGE_GRID.sections) + ")")
    running.add_argument("--extra_args", default="", help="flags added to every run's (after the grid's and --bf16)")
    running.add_argument("--archive_name", default="large_gpu", help="the archive's folder in grid_archive.tar.gz")
    running.add_argument("--skip_gpu_check", action="store_true", help="the grid only (e.g. resuming it)")
    running.add_argument("--no_cuda", action="store_true", help="run on the CPU (with --tiny: the smoke test)")
    running.add_argument("--tiny", action="store_true", help="the GPU check's tiny size and a one-epoch grid of length 32")
    args = parser.parse_args(argv)
    if args.command == "run" and args.jobs < 1:
        parser.error("--jobs: give a whole number >= 1")
    return args


def main(argv=None, started=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_arguments(argv)
    try:
        return pack(args) if args.command == "pack" else run_session(args, argv, started or time.monotonic())
    except (UsageError, TaskDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except subprocess.CalledProcessError as error:
        print(f"error: {' '.join(error.cmd[:3])}... failed with exit status {error.returncode} (its output is above)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(started=STARTED)
