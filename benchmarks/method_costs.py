"""What a run of each multi-task method costs, measured side by side: joint training, TAWT, ForkMerge, ...

    python benchmarks/method_costs.py                     # ner from pos chunking predicate, the medium grid's sizes
    python benchmarks/method_costs.py --methods joint tawt forkmerge gcs --epochs 2 --repetitions 3
    python benchmarks/method_costs.py --data_dir DATA --main_task ner --sources pos chunking --main_sentences 500

Every method runs through its own shell script (what `sh scripts/run_experiments.sh` runs), on the same data,
with the same training settings (the medium grid's: length 64, batch 8, learning rate 5e-4, TAWT's and the
baselines' gradient sampling, the main task alone evaluated; `--epochs` of them), each run in a fresh process,
the methods interleaved over `--repetitions` rounds so that a machine busy with other work slows them alike.
Per method it reports the median wall time of the run (start of the script to its end: imports, loading,
training, evaluation), the run's own time and peak memory (its `run_cost.json`: the process's resident memory,
and on a GPU what torch allocated there), and the ratios against joint training and against TAWT. Where a GPU
is present the runs use it (as the scripts do). Results are printed and written to
benchmarks/results-method-costs-<host>.json (or --output).

The default data is the medium grid's slice of the embedded default (its first 200 training sentences of
each task, 500 dev and 2,000 test sentences; 100 main-task training sentences), on MiniLM. ForkMerge merges
once per epoch by default, so its cost per epoch does not depend on --epochs.
"""

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from tawt.output_files import RUN_COST_FILE, results_file, write_json_atomic
from tawt.run_arguments import HelpFormatter
from tawt.testing.output_tree import read_results_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
# method -> (script, the arguments before the tasks)
METHODS = {
    "joint": ("run_joint_training_multi.sh", []),
    "tawt": ("run_weighted_joint_training_multi.sh", []),
    "tawt_ablated": ("run_weighted_joint_training_multi.sh", []),
    "forkmerge": ("run_target_aware_baseline_multi.sh", ["forkmerge"]),
    "gcs": ("run_target_aware_baseline_multi.sh", ["gcs"]),
    "gcs_weighted": ("run_target_aware_baseline_multi.sh", ["gcs_weighted"]),
    "olaux": ("run_target_aware_baseline_multi.sh", ["olaux"]),
}
METHOD_FLAGS = {"tawt_ablated": "--ablate_source_cosines"}
NAMES = {"joint": "joint training", "tawt": "TAWT (weighted joint)", "tawt_ablated": "TAWT, source cosines ablated",
         "forkmerge": "ForkMerge", "gcs": "GCS (Du et al.)", "gcs_weighted": "weighted GCS (Du et al.)",
         "olaux": "OL-AUX"}


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["joint", "tawt", "forkmerge"], choices=sorted(METHODS),
                        help="the methods to run, in this order within each round")
    parser.add_argument("--data_dir", default=None,
                        help="task files (default: the medium grid's slice of the embedded default data)")
    parser.add_argument("--model_name_or_path", default=None, help="the encoder (default: the embedded default's)")
    parser.add_argument("--main_task", default="ner")
    parser.add_argument("--sources", nargs="+", default=None,
                        help="source tasks (default: the medium grid's for --main_task)")
    parser.add_argument("--main_sentences", type=int, default=None,
                        help="main-task training sentences (default: the medium grid's, 100)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every run (default: 2)")
    parser.add_argument("--repetitions", type=int, default=2, help="interleaved rounds of all methods (default: 2)")
    parser.add_argument("--output", default=None,
                        help="the JSON file of the results (default: benchmarks/results-method-costs-<host>.json)")
    parser.add_argument("--work_dir", default=None, help="where the runs write (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    for name in ("epochs", "repetitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def run_settings(args, work_dir):
    """(environment of the scripts, sources, main-task sentences) from the medium grid and the arguments."""
    from tawt.scripts.experiment_grid import default_data_slice
    from tawt.scripts.grid_file import preset_grid

    grid = preset_grid("medium")
    setting = grid.main_tasks.get(args.main_task)
    sources = args.sources or (setting.sources if setting else None)
    if not sources:
        sys.exit(f"error: --main_task {args.main_task} is not one of the medium grid's ({', '.join(grid.main_tasks)}); "
                 "give its --sources")
    main_sentences = args.main_sentences or (setting.train_size if setting else 100)
    data_dir = args.data_dir or default_data_slice(grid, work_dir)
    environment = dict(os.environ, PYTHON=sys.executable, DATA_DIR=os.path.abspath(data_dir), SEED="1",
                       TQDM_DISABLE="1", **{name: str(value) for name, value in grid.training.items()})
    environment["NUM_EPOCHS"] = str(args.epochs)
    if args.model_name_or_path:
        environment["BERT_MODEL"] = args.model_name_or_path
    return environment, sources, main_sentences


def run_once(method, environment, sources, main_task, main_sentences, output_dir):
    """One run of `method` in a fresh process: its wall seconds, run_cost.json and main-task test results."""
    script, leading = METHODS[method]
    extra = " ".join(filter(None, [environment.get("EXTRA_ARGS", ""), METHOD_FLAGS.get(method, ""),
                                   "--overwrite_output_dir --report_to none"]))
    command = ["sh", os.path.join(SCRIPTS, script), *leading, *sources, main_task, str(main_sentences)]
    log_path = output_dir + ".log"
    began = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(command, env=dict(environment, OUTPUT_DIR=output_dir, EXTRA_ARGS=extra),
                                   stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - began
    if completed.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = log.read()[-3000:]
        sys.exit(f"error: the {method} run failed (exit status {completed.returncode}): "
                 f"{shlex.join(command)}\n{tail}")
    with open(os.path.join(output_dir, RUN_COST_FILE), encoding="utf-8") as handle:
        cost = json.load(handle)
    scores = read_results_file(os.path.join(output_dir, results_file(main_task, "test")))
    return {"wall_seconds": round(wall, 1), "run_seconds": cost["seconds"], "peak_memory_mib": cost["peak_memory_mib"],
            "test": scores}


def summarise(runs):
    """Per method: the medians of its runs."""
    summary = {}
    for method, measured in runs.items():
        medians = {"wall_seconds": statistics.median(run["wall_seconds"] for run in measured),
                   "run_seconds": statistics.median(run["run_seconds"] for run in measured)}
        for device in ("cpu", "gpu"):
            values = [run["peak_memory_mib"][device] for run in measured if device in run["peak_memory_mib"]]
            if values:
                medians[f"peak_{device}_mib"] = statistics.median(values)
        summary[method] = medians
    return summary


def ratio_rows(summary):
    """Lines of the table: each method's medians and its ratios to joint training and to TAWT."""
    keys = [key for key in ("wall_seconds", "run_seconds", "peak_cpu_mib", "peak_gpu_mib")
            if any(key in values for values in summary.values())]
    header = ["method", *keys] + [f"{key} / {base}" for base in ("joint", "tawt") if base in summary
                                  for key in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, values in summary.items():
        cells = [NAMES[method]] + [f"{values[key]:,.1f}" if key in values else "" for key in keys]
        for base in ("joint", "tawt"):
            if base in summary:
                cells += [f"{values[key] / summary[base][key]:.2f}×" if key in values and summary[base].get(key)
                          else "" for key in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="tawt-method-costs-") as temporary:
        work_dir = os.path.abspath(args.work_dir or temporary)
        os.makedirs(work_dir, exist_ok=True)
        environment, sources, main_sentences = run_settings(args, work_dir)
        print(f"[costs] {', '.join(args.methods)}: {args.main_task} from {' '.join(sources)}, {main_sentences} "
              f"main-task sentences, {args.epochs} epoch(s), {args.repetitions} interleaved round(s); "
              f"data {environment['DATA_DIR']}", flush=True)
        runs = {method: [] for method in args.methods}
        for repetition in range(1, args.repetitions + 1):
            for method in args.methods:
                output_dir = os.path.join(work_dir, f"{method}_round{repetition}")
                measured = run_once(method, environment, sources, args.main_task, main_sentences, output_dir)
                runs[method].append(measured)
                print(f"[costs] round {repetition}, {method}: {measured['wall_seconds']} s wall, "
                      f"{measured['run_seconds']} s in the run, peak memory {measured['peak_memory_mib']} MiB",
                      flush=True)
    summary = summarise(runs)
    print("\n".join(ratio_rows(summary)))
    output = args.output or os.path.join(ROOT, "benchmarks", f"results-method-costs-{socket.gethostname()}.json")
    write_json_atomic(output, {
        "settings": {"methods": args.methods, "main_task": args.main_task, "sources": sources,
                     "main_sentences": main_sentences, "epochs": args.epochs, "repetitions": args.repetitions,
                     "data_dir": args.data_dir or "the medium grid's slice of the embedded default",
                     "model": args.model_name_or_path or "the embedded default's",
                     "training": {name: environment[name] for name in ("MAX_LENGTH", "BATCH_SIZE",
                                                                       "GRADIENT_SAMPLING_BATCH_SIZE", "EXTRA_ARGS")}},
        "machine": {"host": socket.gethostname(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                    "date": time.strftime("%Y-%m-%d %H:%M")},
        "runs": runs, "medians": summary})
    print(f"[costs] wrote {output}")


if __name__ == "__main__":
    main()
