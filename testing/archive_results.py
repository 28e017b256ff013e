"""Keep the small files of an experiment grid, enough to rebuild its tables and tests without the models.

    python testing/archive_results.py OUTPUT_ROOT results/medium

Copies, for every finished run below OUTPUT_ROOT (a directory with run_args.json; one still training is left
out and named), its `run_args.json`,
`task_weights.json`, `dev_curve.json` (--eval_strategy), `evaluation_args.json` (a model evaluated in its own
directory), `run_cost.json` (its seconds and peak memory; runs made before it existed have none), the main task's dev and test results and its test predictions (gzip-compressed), and
the main tasks' gold test files (`test_{task}.txt`, or `test_{task}.tsv` for a sentence-level task;
gzip-compressed) and label files, under DEST/data, plus the summary
(`summary/`: tables, significance CSV, weight plots) and each run's wall time from the queue's logs
(`run_times.csv`). No model, checkpoint or log is copied. Then

    python testing/collect_results.py results/medium --data_dir results/medium/data --output_dir rebuilt

rebuilds Table 1, its significance marks included, from the archive alone (prediction and gold files are
read gzip-compressed as FILE.gz); pass the grid's --note too for a byte-identical table1.md.
"""

import argparse
import csv
import gzip
import os
import shutil
import sys

from tawt.output_files import (
    DEV_CURVE_FILE, EVALUATION_ARGS_FILE, RUN_ARGS_FILE, RUN_COST_FILE, TASK_WEIGHTS_FILE, predictions_file,
    results_file,
)
from tawt.run_arguments import HelpFormatter
from tawt.scripts.job_queue import logged_seconds
from tawt.testing.output_tree import OutputTreeError, csv_text, find_runs, write_text_atomic


def gzip_copy(source, destination):
    """Copy `source` to `destination` + '.gz', byte for byte inside, with no timestamp in the header."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with open(source, "rb") as reader, open(destination + ".gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as writer:
            shutil.copyfileobj(reader, writer)


def check_no_other_runs(runs, output_root, destination):
    """Refuse, before anything is copied, to replace an archived run by another run of the same place (the
    archive of another grid): archiving the same grid again (its runs' run_args.json unchanged) updates it."""
    for run in runs:
        archived = os.path.join(destination, os.path.relpath(run.directory, output_root), RUN_ARGS_FILE)
        if not os.path.isfile(archived):
            continue
        with open(archived, "rb") as before, open(run.path(RUN_ARGS_FILE), "rb") as now:
            if before.read() != now.read():
                raise OutputTreeError(f"{archived}: the archive holds another run in this place; archive "
                                      f"{output_root} into another destination, or remove {destination} first")


def archive(output_root, destination):
    """Archive the finished runs below `output_root`; find_runs names and leaves out a run still training or
    interrupted (no all_results.json, its last file), so an archive taken mid-grid holds whole runs only."""
    if os.path.realpath(destination) == os.path.realpath(output_root):
        raise OutputTreeError(f"{destination}: the archive would be written over the runs it archives; give another "
                              "destination, e.g. results/NAME")
    runs = find_runs(output_root)
    check_no_other_runs(runs, output_root, destination)
    gold = {run.main_task: run.gold_file() for run in runs}
    for task, path in sorted(gold.items()):  # before anything is written: a refused archive changes nothing
        if not os.path.isfile(path):
            raise OutputTreeError(f"{path}: the gold test file of {task} is gone; archive before deleting the data")
    times = []
    for run in runs:
        relative = os.path.relpath(run.directory, output_root)
        target = os.path.join(destination, relative)
        os.makedirs(target, exist_ok=True)
        for name in (RUN_ARGS_FILE, TASK_WEIGHTS_FILE, DEV_CURVE_FILE, EVALUATION_ARGS_FILE, RUN_COST_FILE,
                     results_file(run.main_task, "eval"), results_file(run.main_task, "test")):
            if os.path.isfile(run.path(name)):
                shutil.copyfile(run.path(name), os.path.join(target, name))
        if os.path.isfile(run.predictions_file()):
            gzip_copy(run.predictions_file(), os.path.join(target, predictions_file(run.main_task)))
        seconds = logged_seconds(os.path.join(output_root, "logs", relative + ".log"))
        times.append({"run": relative, "paradigm": run.paradigm, "main_task": run.main_task, "seed": run.seed,
                      "seconds": seconds})
    for task, path in sorted(gold.items()):
        data_dir = os.path.dirname(path)
        gzip_copy(path, os.path.join(destination, "data", os.path.basename(path)))
        labels = os.path.join(data_dir, f"{task}_labels.txt")
        if os.path.isfile(labels):
            shutil.copyfile(labels, os.path.join(destination, "data", f"{task}_labels.txt"))
    summary = os.path.join(output_root, "summary")
    if os.path.isdir(summary):
        shutil.copytree(summary, os.path.join(destination, "summary"), dirs_exist_ok=True)
    write_text_atomic(os.path.join(destination, "run_times.csv"), csv_text(merged_run_times(destination, times)))
    return runs


def merged_run_times(destination, times):
    """The archive's run times with this output root's: an archive grows section by section (or session by
    session, from other output roots), so the rows of runs archived before stay; a run archived again takes its
    new time."""
    path = os.path.join(destination, "run_times.csv")
    rows = {}
    if os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = {row["run"]: row for row in csv.DictReader(handle)}
    rows.update((row["run"], row) for row in times)
    return list(rows.values())  # the archive's order, new runs after it


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("output_root", help="the grid's output root (OUTPUT_ROOT)")
    parser.add_argument("destination", help="where the archive goes, e.g. results/medium")
    args = parser.parse_args(argv)
    try:
        runs = archive(args.output_root, args.destination)
    except OutputTreeError as error:
        sys.exit(f"error: {error}")
    print(f"archived {len(runs)} runs of {args.output_root} in {args.destination}")


if __name__ == "__main__":
    main()
