"""What a run reports while it runs, for watching it live: TensorBoard event files (--report_to).

The run's own records (training_log.jsonl, task_weights.json, all_results.json) stay the reference; the
event files in OUTPUT_DIR/tensorboard/ repeat them as curves, one step axis for the whole run: a stage
that follows another (fine-tuning after pre-training) continues the step count where the earlier one
ended. `tensorboard --logdir OUTPUT_ROOT` then shows every run of a grid, each named by its path.

A run resumed from a checkpoint first drops what its interrupted predecessor logged after that checkpoint,
from training_log.jsonl and from the event files (rewritten with what came before), so no step appears
twice. The files themselves hold no repeat: no reader needs TensorBoard's purging of restarted runs
(SummaryWriter's purge_step), which not every reader applies.

The hooks are called from training_loop (each logging step, each stage's start), cross_task_training
(each weight update, the results), weighted pre-training (its head fit, through the weight history) and
GCS, OL-AUX and ForkMerge (what they did, through the weight history too).
"""

import glob
import json
import logging
import math
import os

import torch

from tawt.errors import UsageError
from tawt.output_files import TRAINING_LOG_FILE, write_text_atomic

logger = logging.getLogger("tawt")

def tensorboard_installed():
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def resolve_report_to(requested):
    """The --report_to value a run uses: an explicit tensorboard needs the package; the default falls back."""
    if requested == "none":
        return "none"
    if tensorboard_installed():
        return "tensorboard"
    if requested == "tensorboard":
        raise UsageError("--report_to tensorboard: the tensorboard package is not installed; pip install "
                         "tensorboard (the tensorboard extra, which setup.sh installs), or pass --report_to none")
    logger.warning("the tensorboard package is not installed: this run writes no TensorBoard event files "
                   "(pip install tensorboard; --report_to none turns this warning off)")
    return "none"


class TaskLosses:
    """Each task's own (unweighted) training loss between two logging steps, summed where it was computed
    (on the device: adding needs no synchronisation; only `take_means` at a logging step reads values)."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, task, loss):
        self.sums[task] = self.sums.get(task, 0.0) + loss.detach().float()
        self.counts[task] = self.counts.get(task, 0) + 1

    def take_means(self):
        """Each task's mean since the last call, read from the device in one copy."""
        tasks = sorted(self.sums)
        sums = torch.stack([torch.as_tensor(self.sums[task]) for task in tasks]).tolist() if tasks else []
        means = {task: total / self.counts[task] for task, total in zip(tasks, sums)}
        self.sums, self.counts = {}, {}
        return means


class NoReport:
    """Every process but the main one (and runs that tools build without an output directory): the hooks
    do nothing."""

    def start_stage(self, stage, total_steps):
        pass

    def training_log(self, record):
        pass

    def weight_update(self, tasks, entry):
        pass

    def dev_score(self, task, stage_step, entry):
        pass

    def results(self, summary):
        pass

    def close(self):
        pass


def open_report(run, run_record, log_dir):
    """The main process's reporter, once the output directory is open: TensorBoard or the files alone."""
    resume_point = None
    if run.resume is not None:  # (stage, its optimizer step) of the checkpoint the run continues from
        resume_point = (run.resume.stage, run.resume.trainer_state["global_step"])
    training_log = os.path.join(run.output_dir, TRAINING_LOG_FILE)
    if getattr(run.args, "report_to", None) == "tensorboard":
        return TensorBoardReport(training_log, resume_point, log_dir, run_record)
    return RunReport(training_log, resume_point)


class RunReport(NoReport):
    """The run-wide step of every stage, and, in a resumed run, training_log.jsonl without the records its
    interrupted predecessor wrote after the checkpoint (the resumed run writes those steps again)."""

    def __init__(self, training_log_path, resume_point=None):
        self.training_log_path, self.resume_point = training_log_path, resume_point
        self.stage_offsets = {}  # stage -> the run-wide step at which it starts
        self.next_offset = 0
        self.stage = None

    def _step(self, stage_step):
        return self.stage_offsets.get(self.stage, self.next_offset) + stage_step

    def start_stage(self, stage, total_steps):
        """Called for every stage, those a resumed run skips included, so the step offsets are the same."""
        self.stage_offsets[stage] = self.next_offset
        self.next_offset += total_steps
        self.stage = stage
        if self.resume_point is not None and self.resume_point[0] == stage:
            self.continue_after(stage, self.resume_point[1])
            self.resume_point = None

    def continue_after(self, stage, stage_step):
        """Drop what was written after optimizer step `stage_step` of `stage` (the checkpoint)."""
        if not os.path.isfile(self.training_log_path):
            return
        with open(self.training_log_path) as handle:
            lines = handle.readlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by the interruption
                break
            later_stage = record["stage"] not in self.stage_offsets
            if later_stage or (record["stage"] == stage and record["step"] > stage_step):
                break  # the records are in the order they were written: everything from here on is later
            kept.append(line)
        if len(kept) < len(lines):
            write_text_atomic(self.training_log_path, "".join(kept))


class TensorBoardReport(RunReport):
    """Scalars and the run's arguments as TensorBoard events, flushed after every hook so that what
    training_log.jsonl and task_weights.json hold is on disk in the event files too."""

    def __init__(self, training_log_path, resume_point, log_dir, run_record):
        super().__init__(training_log_path, resume_point)
        self.log_dir, self.run_record = log_dir, run_record
        self._writer = None
        if resume_point is None:
            self._write_arguments(0)

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def continue_after(self, stage, stage_step):
        super().continue_after(stage, stage_step)
        last_step = self._step(stage_step)
        self._drop_events_after(last_step)
        self._write_arguments(last_step + 1)  # the resumed command, at the step it continues from

    def _write_arguments(self, step):
        # Indented lines are a code block in TensorBoard's markdown: the JSON stays readable.
        text = "\n".join("    " + line for line in json.dumps(self.run_record, indent=2).splitlines())
        self.writer.add_text("run_args", text, step)
        self.writer.flush()

    def _drop_events_after(self, last_step):
        """Rewrite the event files with the summaries up to `last_step`, then remove the old files.

        Duplicates of one (step, tags) pair, which a rewrite cut short by a crash could leave, keep one copy.
        """
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

        old_files = sorted(glob.glob(os.path.join(self.log_dir, "*tfevents*")))
        kept = {}
        for path in old_files:
            for event in LegacyEventFileLoader(path).Load():
                if event.HasField("summary") and event.step <= last_step:
                    kept[(event.step, tuple(value.tag for value in event.summary.value))] = event
        file_writer = self.writer.file_writer
        for event in sorted(kept.values(), key=lambda event: (event.wall_time, event.step)):
            file_writer.add_event(event)
        self.writer.flush()
        for path in old_files:
            os.remove(path)
        logger.info("TensorBoard: kept %d events up to step %d of the interrupted run", len(kept), last_step)

    def _scalar(self, tag, value, step):
        if value is not None:
            self.writer.add_scalar(tag, float(value), step)

    def training_log(self, record):
        """One training_log.jsonl record: the mean weighted loss, the learning rate, each task's loss."""
        step = self._step(record["step"])
        # A ForkMerge branch's steps (tawt/forkmerge.py) are curves of their own: the branches train the same steps.
        branch = f"_{record['branch']}" if record.get("branch") else ""
        self._scalar(f"train{branch}/loss", record["loss"], step)
        self._scalar(f"train{branch}/learning_rate", record["learning_rate"], step)
        for task, loss in record.get("task_losses", {}).items():
            self._scalar(f"train_loss{branch}/{task}", loss, step)
        self.writer.flush()

    def weight_update(self, tasks, entry):
        """One task_weights.json entry: the weights, the cosines the update used, their spread."""
        step = self._step(entry["step"])
        for name, tag in (("weights", "task_weight"), ("cosine_similarities", "cosine"),
                          ("cosine_batch_mean", "cosine_batch_mean"), ("cosine_batch_std", "cosine_batch_std")):
            for task, value in zip(tasks, entry.get(name) or []):
                self._scalar(f"{tag}/{task}", value, step)
        self._scalar("head_fit/loss", entry.get("head_fit_loss"), step)
        # GCS and OL-AUX (tawt/target_aware_baselines.py): what they did since the previous entry.
        gcs = entry.get("gcs_since_previous_entry") or {}
        for name in ("kept_fraction", "mean_scale", "mean_cosine"):
            for task, value in zip(tasks, gcs.get(name) or []):
                self._scalar(f"gcs_{name}/{task}", value, step)
        for task, value in zip(tasks, entry.get("olaux_lr_times_dot_sum") or []):
            self._scalar(f"olaux_lr_times_dot_sum/{task}", value, step)
        # ForkMerge (tawt/forkmerge.py): each merge's coefficients and dev scores.
        branches = entry.get("forkmerge_branches") or []
        for name, tag in (("forkmerge_coefficients", "forkmerge_coefficient"), ("forkmerge_branch_dev", "forkmerge_dev")):
            for branch, value in zip(branches, entry.get(name) or []):
                self._scalar(f"{tag}/{branch}", value, step)
        self._scalar("forkmerge_dev/merged", entry.get("forkmerge_dev"), step)
        self.writer.flush()

    def dev_score(self, task, stage_step, entry):
        """One dev_curve.json entry (--eval_strategy) as dev_during_training/TASK/METRIC."""
        step = self._step(stage_step)
        for metric, value in entry.items():
            if isinstance(value, float) and math.isfinite(value):
                self._scalar(f"dev_during_training/{task}/{metric}", value, step)
        self.writer.flush()

    def results(self, summary):
        """all_results.json's dev and test metrics (dev/TASK/METRIC, test/TASK/METRIC) at the run's last step."""
        step = self.next_offset
        for key, results in summary.items():
            task, _, split_name = key.rpartition("_")
            if split_name not in ("eval", "test") or not isinstance(results, dict):
                continue
            for metric, value in results.items():
                if isinstance(value, float) and math.isfinite(value):  # not the sentence counts
                    self._scalar(f"{'dev' if split_name == 'eval' else 'test'}/{task}/{metric}", value, step)
        self.writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
