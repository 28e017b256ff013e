"""Reading the runs of an experiment grid from an output tree (shared by the significance and table scripts).

A run directory is any directory below the output root that holds `run_args.json`; the directory names
themselves carry no meaning. Each run directory also holds, per task with a head, `{task}_eval_results.txt`
(dev) and `{task}_test_results.txt` (test) as `key = value` lines, `{task}_test_predictions.txt`, and,
for runs that train several tasks together, `task_weights.json`.
"""

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field

from tawt.output_files import (  # noqa: F401
    ALL_RESULTS_FILE, EVALUATION_ARGS_FILE, RUN_ARGS_FILE, RUN_LOG_FILE, TASK_WEIGHTS_FILE, holds_checkpoints,
    predictions_file, results_file, write_text_atomic,
)

# A row of the tables is a paradigm with the flags that change what it trains: TAWT with the source cosines
# ablated, a noise source added (a control task of permuted labels), and which GCS update (Du et al.'s, or
# the gated joint update that runs without a recorded gcs_variant were made with), and stage 1 alone of
# pre-training. ROW_FLAGS maps each flag to the suffix it adds to the paradigm's name.
GCS_PARADIGMS = ("joint_gcs", "joint_gcs_weighted", "normalized_joint_gcs", "normalized_joint_gcs_weighted")
NOISE_SUFFIX = "_noise"  # run_arguments.NOISE_SUFFIX, not imported: that module would bring torch along
ROW_FLAGS = (("ablate_source_cosines", "_ablated"), ("noise_source", "_noise"), ("pre_train_only", "_pre_train_only"))

# Each row and the baseline its significance mark tests it against: TAWT against the fixed-weight paradigm
# it reweights; the target-aware baselines (tawt/target_aware_baselines.py: <base>_gcs, <base>_gcs_weighted,
# <base>_olaux; tawt/forkmerge.py: <base>_forkmerge) against the fixed-weight training they modify; an ablated
# TAWT row against the same fixed weights as the TAWT row; a row with a noise source against its paradigm
# without one.
BASELINE_OF = {
    "weighted_pretraining": "pretraining",
    "weighted_joint": "joint",
    "weighted_normalized_joint": "normalized_joint",
    "weighted_joint_ablated": "joint",
    "weighted_normalized_joint_ablated": "normalized_joint",
    "joint_noise": "joint",
    "weighted_joint_noise": "weighted_joint",
}
TARGET_AWARE_BASELINES = ("gcs", "gcs_gated", "gcs_weighted", "gcs_weighted_gated", "olaux", "forkmerge")
for _base in ("joint", "normalized_joint"):
    BASELINE_OF.update({f"{_base}_{method}": _base for method in TARGET_AWARE_BASELINES})
# TAWT against each target-aware baseline of the same kind (does TAWT beat GCS and OL-AUX?).
TAWT_OF = {f"{base}_{method}": f"weighted_{base}" for base in ("joint", "normalized_joint")
           for method in TARGET_AWARE_BASELINES}
# Further comparisons of two rows that answer a question of their own, as (tested, baseline): what the
# source cosines add to TAWT, fixed normalized weights against TAWT's, TAWT beside a noise source, ForkMerge
# against TAWT without its cosines (does choosing the sources' share by the target's dev score beat TAWT's
# schedule of the main task's weight alone?).
OTHER_COMPARISONS = [
    ("weighted_joint", "weighted_joint_ablated"),
    ("weighted_normalized_joint", "weighted_normalized_joint_ablated"),
    ("joint_forkmerge", "weighted_joint_ablated"),
    ("normalized_joint_forkmerge", "weighted_normalized_joint_ablated"),
    ("normalized_joint", "weighted_joint"),
    ("weighted_joint_noise", "joint_noise"),
]
# Every (tested row, baseline row) pair the significance batch tests per seed.
COMPARISONS = (list(BASELINE_OF.items()) + [(tawt, baseline) for baseline, tawt in TAWT_OF.items()]
               + OTHER_COMPARISONS)

# The arguments that make two runs of one paradigm different configurations rather than two seeds of one
# (weighted pre-training's grid varies inv_constant; fixed-weight runs vary task_weights). The TAWT update's
# own arguments count only in the paradigms that update weights: elsewhere their values are unused defaults.
TAWT_ARGS = ("inv_constant", "weight_lr", "normalized_gradients", "reseed_each_update")
# How the optimizer trained (the original's optimizer: both True). Runs that differ here are different
# experiments, and a weighted run is paired only with a baseline trained the same way.
OPTIMIZER_ARGS = ("zero_grad_in_place", "legacy_adamw")
CONFIGURATION_ARGS = TAWT_ARGS + ("weighting", "task_weights") + OPTIMIZER_ARGS
# Flags that older runs' run_args.json lack: such a run had the flag's default.
ARGUMENT_DEFAULTS = {"reseed_each_update": False, "zero_grad_in_place": False, "legacy_adamw": False,
                     "ablate_source_cosines": False, "noise_source": None, "pre_train_only": False}
# What the seeds of one row must share besides its configuration: a row whose runs differ in one of these
# averages different experiments, and is refused. A setting some run does not record is not compared.
EXPERIMENT_SETTINGS = ("encoder", "learning_rate", "num_train_epochs", "max_steps", "max_seq_length",
                       "per_gpu_train_batch_size", "weight_decay", "warmup_steps", "dropout", "max_grad_norm",
                       "fp16", "bf16", "gradient_sampling_batch_size", "gradient_sampling_batches",
                       "weight_update_steps", "target_gradient_steps", "olaux_lr", "gcs_mode", "training_sizes",
                       "training_files", "data_dir",
                       # Which model is tested: the last, or the best on dev (and when training stopped).
                       "load_best_model_at_end", "metric_for_best_model", "early_stopping_patience")


class OutputTreeError(ValueError):
    """A run directory's file is missing or malformed; the message names the file and the fix."""


def csv_text(rows):
    """Rows (dicts) as CSV text, with every key any row has as a column, in order of first appearance."""
    fieldnames = list(dict.fromkeys(name for row in rows for name in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_results_file(path):
    """A `key = value` results file as a dict of floats (a value that is not a number is kept as a string)."""
    if not os.path.isfile(path):
        raise OutputTreeError(f"{path}: file not found; the run may not have finished evaluating")
    results = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            key, separator, value = line.partition("=")
            if not separator or not key.strip():
                raise OutputTreeError(
                    f"{path} line {line_number}: {line.strip()!r} is not a 'key = value' line; fix or delete it"
                )
            try:
                results[key.strip()] = float(value)
            except ValueError:
                results[key.strip()] = value.strip()
    return results


def primary_score(results, path):
    """The number the paper reports from a results file: sequence_metrics.primary_metric of its family.

    The family is the file's `metric_family = ...` line; a file without one is read by its keys: only the
    span and binary families write `f1` (their primary metric), the tagging family writes `accuracy` and no
    `f1`. So the labels file, which the run directory does not keep, is not needed.
    """
    from tawt.sequence_metrics import primary_metric

    if "metric_family" in results:
        key = primary_metric(results["metric_family"])
    else:
        key = "f1" if "f1" in results else "accuracy"
    if not isinstance(results.get(key), float):
        raise OutputTreeError(f"{path}: has no '{key} = <number>' line; it is not a complete results file")
    return results[key]


def _jsonable(value):
    """A hashable form of an argument value (lists become tuples), for grouping runs."""
    return tuple(_jsonable(item) for item in value) if isinstance(value, list) else value


@dataclass
class Run:
    directory: str
    paradigm: str
    main_task: str
    tasks: list
    seed: int
    args: dict
    data_dir: str = None  # the data directory the run resolved, where run_args.json records one
    record: dict = field(default_factory=dict)  # the whole run_args.json (evaluation_args.json's data_dir)

    @property
    def sources(self):
        return [task for task in self.tasks if task != self.main_task]

    @property
    def row(self):
        """The table row the run belongs to: its paradigm, with a suffix per flag that changes what it trains
        (ROW_FLAGS), and '_gated' for GCS runs of the gated update (runs without a recorded gcs_variant)."""
        row = self.paradigm
        if self.paradigm in GCS_PARADIGMS and self.args.get("gcs_variant", "gated") == "gated":
            row += "_gated"
        return row + "".join(suffix for name, suffix in ROW_FLAGS if self.arg(name))

    @property
    def trains(self):
        """False for a run that evaluated a saved model (no --do_train): it is no seed of any experiment."""
        return bool(self.args.get("do_train", True))

    @property
    def main_train_size(self):
        """How many main-task training sentences the run trained on (what run_args.json's training_data
        records; else the number requested; None: the whole file)."""
        trained = self.record.get("training_data", {}).get(self.main_task, {}).get("sentences")
        if trained is not None:
            return trained
        for name in ("main_task_train_sent_num", "train_sent_num"):
            if self.args.get(name) is not None:
                return self.args[name]
        return None

    @property
    def auxiliary_main_ratio(self):
        return self.args.get("auxiliary_main_ratio")

    @property
    def configuration(self):
        """What a run is, seed aside: runs with equal configurations are seeds of one experiment."""
        return (
            self.row, self.main_task, tuple(self.tasks), self.main_train_size, self.auxiliary_main_ratio,
            tuple(
                (name, _jsonable(self.arg(name)))
                for name in CONFIGURATION_ARGS if self.updates_weights or name not in TAWT_ARGS
            ),
        )

    @property
    def settings(self):
        """{EXPERIMENT_SETTINGS name: value} of what the run records; the seeds of one row must agree on these."""
        training_data = self.record.get("training_data") or {}
        recorded = {
            "encoder": self.record.get("model_name_or_path"),
            "training_sizes": tuple(sorted((task, entry.get("sentences")) for task, entry in training_data.items())),
            "training_files": tuple(sorted((task, entry.get("sha256")) for task, entry in training_data.items())),
            # Where the same files were trained on, the directory they were read from does not matter.
            "data_dir": None if training_data else self.resolved_data_dir(),
        }
        for name in EXPERIMENT_SETTINGS:
            if name not in recorded and name in self.args:
                recorded[name] = _jsonable(self.args[name])
        return {name: value for name, value in recorded.items() if value not in (None, ())}

    @property
    def updates_weights(self):
        """True for the paradigms with the TAWT weight update."""
        return self.paradigm.startswith("weighted_")

    def arg(self, name):
        """The run's value of argument `name` (the default for a flag its run_args.json predates)."""
        return self.args.get(name, ARGUMENT_DEFAULTS.get(name))

    @property
    def optimizer_setting(self):
        """(zero_grad_in_place, legacy_adamw): (True, True) is the original's optimizer."""
        return tuple(bool(self.arg(name)) for name in OPTIMIZER_ARGS)

    @property
    def optimizer_name(self):
        """'original' (zeroed gradients and transformers 2.8's AdamW step), 'torch', or the one flag given."""
        return {(False, False): "torch", (True, True): "original"}.get(
            self.optimizer_setting, " ".join(name for name, on in zip(OPTIMIZER_ARGS, self.optimizer_setting) if on))

    @property
    def pairing_key(self):
        """What a run and its baseline share: the data (main task, sources, sizes), the seed and the optimizer.
        A noise source is left out of the sources: a row with one is compared with its row without."""
        noise = self.noise_tasks
        return (self.main_task, tuple(sorted(task for task in self.sources if task not in noise)),
                self.main_train_size, self.auxiliary_main_ratio, self.seed, self.optimizer_setting)

    @property
    def noise_tasks(self):
        """The control task --noise_source TASK added, TASK_noise (run_arguments.noise_sources)."""
        source = self.arg("noise_source")
        return {source + NOISE_SUFFIX} & set(self.sources) if source else set()

    def path(self, filename):
        return os.path.join(self.directory, filename)

    def results(self, split, task=None):
        """The `key = value` results of `task` (default: the main task) on 'eval' (dev) or 'test'."""
        return read_results_file(self.path(results_file(task or self.main_task, split)))

    def score(self, split, task=None):
        """The main task's primary metric on 'eval' (dev) or 'test'."""
        path = self.path(results_file(task or self.main_task, split))
        return primary_score(read_results_file(path), path)

    def predictions_file(self, task=None):
        return self.path(predictions_file(task or self.main_task))

    def resolved_data_dir(self):
        """The data directory as the run resolved it, or None where it cannot be told.

        A relative --data_dir was read against the directory the run was started from, which run_args.json
        does not name; the training files' absolute paths it records do, and so does a relative --output_dir
        that still ends the run directory's path.
        """
        data_dir = self.data_dir or self.args.get("data_dir")
        if not data_dir or os.path.isabs(data_dir):
            return data_dir
        # The training files' paths say where the training read its data; an evaluation in place may read other.
        training_data = self.record.get("training_data") or {} if data_dir == self.record.get("data_dir") else {}
        for entry in training_data.values():
            if os.path.isabs(entry.get("file", "")):
                return os.path.dirname(entry["file"])
        output_dir = self.record.get("output_dir") or self.args.get("output_dir")
        if output_dir and not os.path.isabs(output_dir):
            directory, relative = os.path.abspath(self.directory), os.path.normpath(output_dir)
            if directory.endswith(os.sep + relative):
                return os.path.join(directory[:-len(relative)], data_dir)
        return None

    def gold_file(self, data_dir=None, task=None):
        """The gold test file: `<data_dir>/test_{task}.txt` (a tagging task) or `.tsv` (a sentence-level one),
        data_dir from the run's record unless given. Where neither is there, the name the run's test results
        say it had, for the message that it is gone."""
        from utils_cross_task import SENTENCE_TASK_EXTENSION, TaskDataError, task_file

        data_dir = data_dir or self.resolved_data_dir()
        if not data_dir:
            recorded = self.data_dir or self.args.get("data_dir")
            reason = (f"records the relative data_dir {recorded!r} and not the directory it was run from"
                      if recorded else "records no data_dir")
            raise OutputTreeError(f"{self.path(RUN_ARGS_FILE)}: {reason}; pass --data_dir to say where the test "
                                  "files are")
        task = task or self.main_task
        try:
            path = task_file(data_dir, "test", task)
        except TaskDataError as error:
            raise OutputTreeError(str(error)) from None
        if os.path.isfile(path) or os.path.isfile(path + ".gz"):
            return path
        try:
            sentence_level = self.results("test", task).get("metric_family") == "classification"
        except OutputTreeError:
            sentence_level = False
        return os.path.join(data_dir, f"test_{task}{SENTENCE_TASK_EXTENSION}") if sentence_level else path


def read_run(directory):
    """The `Run` described by `directory/run_args.json`."""
    path = os.path.join(directory, RUN_ARGS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            run_args = json.load(handle)
    except json.JSONDecodeError as error:
        raise OutputTreeError(f"{path} line {error.lineno}: not valid JSON ({error.msg}); fix or re-run") from None
    missing = [key for key in ("paradigm", "main_task", "tasks", "seed", "args") if key not in run_args]
    if missing:
        raise OutputTreeError(f"{path}: lacks {', '.join(missing)}; it was not written by this project's scripts")
    data_dir = run_args.get("data_dir")
    record = dict(run_args)
    evaluation_path = os.path.join(directory, EVALUATION_ARGS_FILE)
    if os.path.isfile(evaluation_path):  # the model was evaluated in place: its results are of that data
        with open(evaluation_path, encoding="utf-8") as handle:
            evaluation = json.load(handle)
        if evaluation.get("data_dir"):
            data_dir = evaluation["data_dir"]
            # A relative data_dir of the evaluation is resolved from where the evaluation was run.
            record["output_dir"] = evaluation.get("args", {}).get("output_dir")
    return Run(
        directory=directory, paradigm=run_args["paradigm"], main_task=run_args["main_task"],
        tasks=list(run_args["tasks"]), seed=run_args["seed"], args=dict(run_args["args"]), data_dir=data_dir,
        record=record,
    )


def unfinished(directory):
    """True for a run directory whose run has not written its last file (all_results.json).

    A run killed between its main task's results and its predictions (or stopped by a full disk) has
    results but is not finished: it still holds checkpoints, or its run.log without all_results.json. An
    archive (testing/archive_results.py) keeps neither the log nor the checkpoints, and counts as finished.
    """
    if os.path.isfile(os.path.join(directory, ALL_RESULTS_FILE)):
        return False
    return holds_checkpoints(directory) or os.path.isfile(os.path.join(directory, RUN_LOG_FILE))


def find_runs(output_root):
    """Every finished run below `output_root` (its own directory included), in a stable order; an unfinished
    one is named on stderr and left out."""
    if not os.path.isdir(output_root):
        raise OutputTreeError(f"{output_root}: no such directory; pass the --output_dir root of the grid")
    runs = []
    for directory, subdirectories, filenames in os.walk(output_root):
        subdirectories.sort()
        if RUN_ARGS_FILE in filenames:
            if unfinished(directory):
                print(f"skipping {directory}: its run has not finished (no {ALL_RESULTS_FILE}); run the same "
                      "command again to finish it", file=sys.stderr)
                continue
            runs.append(read_run(directory))
    if not runs:
        raise OutputTreeError(f"{output_root}: holds no {RUN_ARGS_FILE}; is it the output root of the runs?")
    return runs


def read_task_weights(path):
    """`task_weights.json`: its tasks and the weights after each update (the first entry: the starting ones)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise OutputTreeError(f"{path}{where}: not valid JSON ({getattr(error, 'msg', error)}); the file is damaged, "
                              "re-run the run or delete the file") from None
    if not isinstance(record, dict) or "tasks" not in record or not isinstance(record.get("history"), list):
        raise OutputTreeError(f"{path}: lacks 'tasks' or 'history'; it was not written by this project's scripts")
    for index, entry in enumerate(record["history"]):
        weights = entry.get("weights") if isinstance(entry, dict) else None
        if not isinstance(weights, list) or not all(isinstance(weight, (int, float)) for weight in weights):
            raise OutputTreeError(f"{path}: history entry {index} has no list of numbers as its weights; the file is "
                                  "corrupt, re-run or delete it")
        if len(weights) != len(record["tasks"]):
            raise OutputTreeError(
                f"{path}: history entry {index} has {len(entry.get('weights', []))} weights for "
                f"{len(record['tasks'])} tasks; the file is corrupt, re-run or delete it"
            )
    return record
