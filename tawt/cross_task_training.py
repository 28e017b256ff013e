"""What every paradigm script shares: run set-up and records, data and model loading, the end.

A paradigm script (run_*.py) reads as its paradigm: parse arguments (tawt/run_arguments.py) -> `start_run`
-> `load_task_data` -> `build_model` -> its own schedule of `training_loop.train_stage` calls and weight updates ->
`finish_run` (save, evaluate, write results).
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import logging.handlers
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from tawt import distributed
from tawt.data.make_default_data import ensure_default_data, resolve_model_name_or_path
from tawt.dev_evaluation import start_dev_evaluation
from tawt.errors import TaskDataError, UsageError, run_main  # noqa: F401 (run_main: imported from here too)
from modeling_multi_bert import HEADS_CONFIG, HEADS_WEIGHTS, MultiTaskTagger, read_heads_config, saved_task_labels
from tawt.output_files import (
    ALL_RESULTS_FILE, CHECKPOINT_DIR, EVALUATION_ARGS_FILE, EVALUATION_LOG_FILE, EVALUATION_TENSORBOARD_DIR,
    MODEL_FILES, RUN_ARGS_FILE, RUN_COST_FILE, RUN_LOG_FILE, TASK_WEIGHTS_FILE, TENSORBOARD_DIR, TOKENIZER_FILES, holds_checkpoints,
    earlier_run_names, files_no_run_wrote, holds_results, names_a_run_writes, previous_run_files, record_run_files, remove_run_files,
    write_failure, write_json_atomic,
)
from tawt.output_lock import DirectoryInUse, lock_directory, release
from tawt.run_arguments import (
    TARGET_AWARE_BASELINES, check_max_seq_length, check_training_arguments, noise_sources, repeated_flags,
)
from tawt.run_reporting import NoReport, open_report, resolve_report_to, tensorboard_installed
from tawt.sequence_metrics import check_labels_fit_metric
from tawt.training_loop import (
    check_training_data, checkpoint_paths, load_checkpoint, remove_checkpoints, restore_checkpoint, state_bytes,
)
from utils_cross_task import (
    is_sentence_task, labels_file, load_task_split, load_word_tokenizer, read_labels, read_sentences, task_file,
    training_order_seed,
)
from tawt import target_aware_baselines as baselines
logger = logging.getLogger("tawt")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ---------------------------------------------------------------------------------------------------------
# Run set-up and records


def paradigm_name(base, args, fixed_weights_variant=True):
    """The paradigm's name in run_args.json: weighted_<base> (TAWT), <base>, or <base>_fixed_weights."""
    if args.weighting == "tawt":
        return f"weighted_{base}"
    if args.weighting in TARGET_AWARE_BASELINES:
        return baselines.paradigm_name(base, args)
    if args.weighting == "forkmerge":
        return f"{base}_forkmerge"
    if fixed_weights_variant and args.task_weights is not None:
        return f"{base}_fixed_weights"
    return base


def _git_commit():
    root = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions():
    import importlib.metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "tokenizers", "seqeval", "numpy", "scipy", "tqdm", "tensorboard"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def resolve_data_dir(data_dir):
    if data_dir is not None:
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise UsageError(f"--data_dir {data_dir} is a file; give the directory that holds the task files")
        if not os.path.isdir(data_dir):
            raise UsageError(f"--data_dir {data_dir}: no such directory")
        return data_dir
    return ensure_default_data()


@dataclass
class Run:
    """One run of a paradigm script: its arguments, device, precision and output directory."""

    args: argparse.Namespace
    paradigm: str
    main_task: str
    tasks: list
    device: torch.device
    data_dir: str
    model_name_or_path: str
    gradient_sampling_generator: torch.Generator = field(default=None)
    pad_token_id: int = 0  # set by load_tokenizer
    checkpoint: dict = None  # the checkpoint this run continues from, until restore_checkpoint has read it
    checkpoint_path: str = None
    training_data: dict = None  # training_data_fingerprint: recorded in run_args.json and in every checkpoint
    resume: "ResumePoint" = None  # where the interrupted stage continues, until train_stage has used it
    resumed_from_checkpoint: int = None
    restored_weight_history: list = None
    completed_stages: dict = field(default_factory=dict)  # stage -> its final task weights
    checkpoint_number: int = 0
    weight_history: "TaskWeightHistory" = None  # set by start_weight_history; saved in checkpoints
    target_aware_baseline: object = None  # GCS, OL-AUX (tawt/target_aware_baselines.py) or ForkMerge; saved in checkpoints
    restored_target_aware_baseline: dict = None
    dev_evaluation: "DevEvaluation" = None  # the main task on dev during training (--eval_strategy); saved in checkpoints
    restored_dev_evaluation: dict = None
    reporter: NoReport = field(default_factory=NoReport)  # TensorBoard (--report_to), set by open_output_dir
    forward_path: str = None  # the model's forward path (set by build_model)
    started: float = field(default_factory=time.monotonic)  # run_cost.json's seconds count from here

    @property
    def output_dir(self):
        return self.args.output_dir

    def path(self, name):
        return os.path.join(self.args.output_dir, name)

    def autocast(self):
        """The one mixed-precision path: an autocast context (a no-op in float32)."""
        if self.args.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.args.fp16:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def new_gradient_sampling_generator(self):
        """A generator in the state the run's gradient-sampling generator started in."""
        return gradient_sampling_generator(self.args.seed)

    def data_order_generator(self, stage, epoch):
        """The generator of one epoch's batch order: a function of (seed, stage, epoch) only, so the
        order never depends on what else drew random numbers before (and a resumed run can recreate it)."""
        return torch.Generator().manual_seed(self.args.seed * 1_000_003 + zlib.crc32(stage.encode()) * 1_009 + epoch)


def gradient_sampling_generator(seed):
    """The generator of the TAWT update's sampled batches: its own, so that drawing them never moves the
    training's random state."""
    return torch.Generator().manual_seed(seed + 7919)


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _configure_logging():
    """Log to the console, and keep the records for OUTPUT_DIR/run.log until `open_output_dir` writes it.

    The main process logs at INFO, the others report warnings only. Only the handlers added by an earlier
    run in this process are replaced, not anyone else's.
    """
    root = logging.getLogger()
    for handler in [handler for handler in root.handlers if getattr(handler, "added_by_tawt", False)]:
        root.removeHandler(handler)
        handler.close()
    main = distributed.is_main_process()
    root.setLevel(logging.INFO if main else logging.WARNING)
    handlers = [logging.StreamHandler()]
    if main:  # nothing is written before the run has passed its checks: held until open_output_dir
        handlers.append(logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.added_by_tawt = True
        root.addHandler(handler)
    for noisy in ("urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import transformers

    # Loading a bare encoder reports the pretraining heads it leaves out; that is expected here.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _start_log_file(path):
    """Send the held records, and everything after them, to `path`."""
    root = logging.getLogger()
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    file_handler.added_by_tawt = True
    for held in [handler for handler in root.handlers if isinstance(handler, logging.handlers.MemoryHandler)
                 and getattr(handler, "added_by_tawt", False)]:
        held.setTarget(file_handler)
        held.flush()
        root.removeHandler(held)
    root.addHandler(file_handler)


def start_run(args, paradigm, main_task, tasks):
    """Check the command line and the output directory, seed everything, find the checkpoint to resume.

    Nothing is written yet: `open_output_dir` does that once the data and the model have passed their
    checks too, so a command that fails leaves an earlier run's files as they were.
    """
    check_training_arguments(args)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    if args.fp16 and not use_cuda:
        raise UsageError("--fp16 needs a GPU; on the CPU use --bf16 or full precision")
    device = distributed.init_distributed(use_cuda)
    # The main process decides, so that no process can read the directory after the main one wrote to it.
    plan = None
    if distributed.is_main_process():
        try:
            checkpoint = _checkpoint_to_resume(args)
            _refuse_files_no_run_wrote(args, tasks)
            plan = ("ok", checkpoint)
        except UsageError as error:
            plan = ("error", str(error))
    outcome, value = distributed.broadcast_from_main(plan)
    if outcome == "error":
        raise UsageError(value)
    _configure_logging()
    args.report_to = resolve_report_to(args.report_to)
    for flag, values in repeated_flags(sys.argv[1:]).items():
        logger.warning("%s is given %d times (%s): the last is used (run_args.json records them all)", flag,
                       len(values), ", ".join(repr(value) for value in values))
    set_seed(args.seed)
    run = Run(
        args=args, paradigm=paradigm, main_task=main_task, tasks=list(tasks), device=device,
        data_dir=resolve_data_dir(args.data_dir),
        model_name_or_path=resolve_model_name_or_path(args.model_name_or_path),
        gradient_sampling_generator=gradient_sampling_generator(args.seed),
    )
    if value is not None:
        # Read now: a different command is refused before the data (whose fingerprint prepare_run compares).
        run.checkpoint, run.checkpoint_path = load_checkpoint(value, args, paradigm), value
        logger.info("resuming from %s (stage %s, epoch %d)", value, run.checkpoint["stage"],
                    run.checkpoint["epoch"] + 1)
    logger.info("%s: tasks %s, main task %s, device %s (%d process%s), output %s", paradigm, tasks, main_task,
                device, distributed.world_size(), "es" if distributed.world_size() > 1 else "", args.output_dir)
    return run


def _evaluates_model_in_place(args):
    """An evaluation (no --do_train) of the model saved in --output_dir itself: its model files are input."""
    model = args.model_name_or_path
    return (not args.do_train and model is not None and os.path.isdir(model)
            and os.path.isdir(args.output_dir) and os.path.samefile(model, args.output_dir))


def _checkpoint_to_resume(args):
    """The checkpoint this run continues from (None: a fresh run), after checking --output_dir can take it.

    A directory that holds a run (a trained model, results or task weights) is refused unless the run is
    unfinished and left checkpoints (then the same command resumes it), or --overwrite_output_dir is given
    (then `open_output_dir` removes the earlier run's files before writing anything).
    """
    output_dir = args.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir {output_dir} is a file; give a directory (it is created if missing)")
    created = not os.path.isdir(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--output_dir {output_dir} cannot be created ({error.strerror}); choose another "
                         "directory") from None
    try:  # held until the run ends: a second run into this directory is refused, not interleaved
        lock_directory(output_dir, created)
    except DirectoryInUse as holder:
        raise UsageError(f"--output_dir {output_dir} is in use by another run ({holder}); wait for it to end, "
                         "or choose another directory") from None
    if args.do_train and args.resume_from_checkpoint:
        return _named_checkpoint(args.resume_from_checkpoint)
    if args.overwrite_output_dir:
        return None
    finished = os.path.isfile(os.path.join(output_dir, ALL_RESULTS_FILE))
    if args.do_train and not finished and holds_checkpoints(output_dir):
        return checkpoint_paths(output_dir)[-1]
    if _evaluates_model_in_place(args):  # the model files are its input: only results count
        held = any(name.endswith("_results.txt") for name in os.listdir(output_dir))
    else:
        held = holds_results(output_dir)
    if held or holds_checkpoints(output_dir):  # checkpoints not resumed here are still a run's
        if finished or not args.do_train:
            unfinished = ""
        elif args.save_steps > 0:
            unfinished = " (an unfinished one whose checkpoints are gone, so it cannot be resumed)"
        else:
            unfinished = (" (an unfinished one, without checkpoints to resume from: --save_steps N makes a run "
                          "resumable)")
        raise UsageError(
            f"--output_dir {output_dir} already holds a run{unfinished}; pass --overwrite_output_dir to replace "
            "it (its files are removed first), or choose another directory"
        )
    return None


def _run_file_names(args, tasks):
    """What this run may write into --output_dir (output_files.names_a_run_writes)."""
    beside_training = _evaluates_model_in_place(args) and os.path.isfile(os.path.join(args.output_dir, RUN_ARGS_FILE))
    tensorboard = args.report_to != "none" and tensorboard_installed()
    return names_a_run_writes(tasks, args.do_train, args.do_train and args.save_steps > 0, tensorboard, beside_training)


def _refuse_files_no_run_wrote(args, tasks):
    """A file or folder the run would write, found in --output_dir and not written there by a run, is a user's:
    the run neither overwrites nor removes it."""
    found = files_no_run_wrote(args.output_dir, _run_file_names(args, tasks))
    if found:
        shown = ", ".join(name + ("/" if os.path.isdir(os.path.join(args.output_dir, name)) else "") for name in found)
        raise UsageError(f"--output_dir {args.output_dir} holds {shown}, which this run would write, and no run "
                         "wrote there; move them elsewhere, or choose another --output_dir")


def _named_checkpoint(path):
    """The checkpoint file --resume_from_checkpoint names (a directory: its newest checkpoint)."""
    if os.path.isdir(path):
        found = checkpoint_paths(os.path.dirname(os.path.abspath(path))) or checkpoint_paths(path)
        if not found:
            raise UsageError(f"--resume_from_checkpoint {path}: no checkpoint-*.pt there")
        return found[-1]
    if not os.path.isfile(path):
        raise UsageError(f"--resume_from_checkpoint {path}: no such file")
    return path


def open_output_dir(run):
    """Start writing: a fresh run first removes an earlier run's files; then run.log and run_args.json.

    An evaluation of the model saved in --output_dir itself keeps the record of the training that made it
    (run_args.json, task_weights.json, the logs) and writes its own to evaluation.log and
    evaluation_args.json. Called once the arguments, the data and the model have passed every check.
    """
    if not distributed.is_main_process():
        return
    in_place = _evaluates_model_in_place(run.args)
    # What a killed run left half-written (this process holds the directory's lock: no one else writes there).
    for folder in (run.output_dir, os.path.join(run.output_dir, CHECKPOINT_DIR)):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.startswith(".tmp-"):
                path = os.path.join(folder, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
    if run.resumed_from_checkpoint is None:
        remove_run_files(previous_run_files(run.output_dir, evaluating_in_place=in_place))
    record_run_files(run.output_dir, _run_file_names(run.args, run.tasks))
    beside_training = in_place and os.path.isfile(run.path(RUN_ARGS_FILE))
    _start_log_file(run.path(EVALUATION_LOG_FILE if beside_training else RUN_LOG_FILE))
    record = _record_run(run, EVALUATION_ARGS_FILE if beside_training else RUN_ARGS_FILE)
    run.reporter = open_report(run, record, run.path(EVALUATION_TENSORBOARD_DIR if beside_training else TENSORBOARD_DIR))


def _record_run(run, filename):
    args = run.args
    record = {
        "paradigm": run.paradigm,
        "main_task": run.main_task,
        "tasks": run.tasks,
        "seed": args.seed,
        "data_dir": run.data_dir,
        "model_name_or_path": run.model_name_or_path,
        "command": [os.path.basename(sys.argv[0])] + sys.argv[1:],
        # A flag given twice (a preset's, then the user's in EXTRA_ARGS): every value given; the last is used.
        "repeated_flags": repeated_flags(sys.argv[1:]),
        "args": vars(args),
        "device": str(run.device),
        # Float sums depend on how they are split over threads and on the hardware: a rerun reproduces the
        # numbers exactly only with the same thread count on the same kind of device (docs/reproducibility.md:
        # identical reruns).
        "device_name": _device_name(run.device),
        "torch_threads": torch.get_num_threads(),
        "forward_path": run.forward_path,
        "torch_compile": bool(args.torch_compile or args.torch_compile_mode),
        "world_size": distributed.world_size(),
        "resumed_from_checkpoint": run.resumed_from_checkpoint,
        "training_data": run.training_data,
        "versions": package_versions(),
        "git_commit": _git_commit(),
    }
    write_json_atomic(run.path(filename), record)
    return record


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


class TaskWeightHistory:
    """The task weights at the start and after every update, rewritten to task_weights.json each time."""

    def __init__(self, path, tasks, weighting, reporter=None, settings=None):
        self.path, self.tasks, self.weighting = path, list(tasks), weighting
        self.reporter = reporter or NoReport()
        self.settings = dict(settings or {})  # what changes the update besides `weighting`, written beside it
        self.history = []
        self.next_entry_values = {}

    def add_to_next_entry(self, **values):
        """Values the next update's entry records too (weighted pre-training's head-fit loss; what GCS and
        OL-AUX did, tawt/target_aware_baselines.py)."""
        self.next_entry_values.update(values)

    def record(self, stage, epoch, weights, similarities=None, step=0):
        """One entry: `stage` "initial", "epoch" (an update after an epoch) or "step" (one within an epoch,
        --weight_update_steps), the epoch, the optimizer step reached, the weights, and `similarities` (the
        update's TaskSimilarities: the cosines it used, and their mean and spread over the sampled batches)."""

        def listed(values):
            return None if values is None else [None if value is None else float(value) for value in values]

        self.history.append({
            "stage": stage,
            "epoch": epoch,
            "step": step,
            "weights": [float(weight) for weight in weights],
            "cosine_similarities": listed(None if similarities is None else similarities.cosines),
            "cosine_batch_mean": listed(None if similarities is None else similarities.batch_means),
            "cosine_batch_std": listed(None if similarities is None else similarities.batch_stds),
            **self.next_entry_values,
        })
        self.next_entry_values = {}
        self.reporter.weight_update(self.tasks, self.history[-1])
        when = {"initial": "initial", "epoch": f"after epoch {epoch}, step {step}",
                "step": f"within epoch {epoch}, step {step}"}.get(stage, f"{stage} {epoch}, step {step}")
        logger.info("task weights (%s): %s", when,
                    ", ".join(f"{task} {weight:.4f}" for task, weight in zip(self.tasks, weights)))
        self.write()

    def write(self):
        if distributed.is_main_process():
            write_json_atomic(self.path, {"tasks": self.tasks, "weighting": self.weighting, **self.settings,
                                          "history": self.history})


# ---------------------------------------------------------------------------------------------------------
# Data and model


@dataclass
class TaskData:
    labels: dict  # task -> label list
    train: dict = field(default_factory=dict)  # task -> TaskSplit
    dev: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    sentence_tasks: list = field(default_factory=list)  # the tasks with one label per example (.tsv files)


def load_tokenizer(run):
    """The fast tokenizer of the run's model (its max_seq_length is checked against the model first)."""
    from transformers import AutoConfig

    if os.path.isdir(run.model_name_or_path):
        # Without --do_train a paradigm script evaluates a run's saved model (the probe has no --do_train).
        check_model_files(run.model_name_or_path, saved_by_a_run=not getattr(run.args, "do_train", True))
    try:
        config = AutoConfig.from_pretrained(run.model_name_or_path)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--model_name_or_path {run.model_name_or_path}: not a model directory here, and it cannot be downloaded "
            f"({str(error).splitlines()[0]}); give the directory of a downloaded model (config.json, weights, "
            "tokenizer files), or set HF_HUB_OFFLINE=1 to use the Hugging Face cache"
        ) from None
    check_max_seq_length(run.args.max_seq_length, config)
    tokenizer = load_word_tokenizer(run.model_name_or_path)
    if not tokenizer.is_fast:
        raise UsageError(f"{run.model_name_or_path}: tagging needs a fast tokenizer (word_ids); this one is slow")
    # The special tokens ([CLS], [SEP]) take their places first; a labelled word needs one more.
    shortest = tokenizer.num_special_tokens_to_add(pair=False) + 1
    if run.args.max_seq_length < shortest:
        raise UsageError(f"--max_seq_length {run.args.max_seq_length} leaves no room for a word after the special "
                         f"tokens; give at least {shortest} (paper: 128)")
    embeddings = getattr(config, "vocab_size", None)
    if embeddings is not None and len(tokenizer) > embeddings:  # a token beyond them: an index error mid-run
        raise UsageError(f"--model_name_or_path {run.model_name_or_path}: its tokenizer has {len(tokenizer)} tokens "
                         f"and the encoder embeds {embeddings} (config.json vocab_size); use the tokenizer the "
                         "encoder was trained with")
    run.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return tokenizer


def check_model_files(directory, saved_by_a_run):
    """Name a damaged file of a model directory (empty or cut-off JSON, a truncated safetensors file, a saved
    run's missing head file) before the libraries fail on it with a traceback of their own."""
    from safetensors import safe_open

    fix = ("restore it from a copy, or rerun the training that saved the model" if saved_by_a_run else
           "download or copy the model again")
    if saved_by_a_run:
        present = [os.path.isfile(os.path.join(directory, name)) for name in (HEADS_CONFIG, HEADS_WEIGHTS)]
        if not any(present):
            raise UsageError(f"--model_name_or_path {directory} holds no {HEADS_CONFIG}: not a model saved by a run; "
                             "pass --do_train to train one from this encoder, or give a run's output directory")
        for name, found in zip((HEADS_CONFIG, HEADS_WEIGHTS), present):
            if not found:
                raise UsageError(f"{os.path.join(directory, name)}: file not found, so the saved model is "
                                 f"incomplete; {fix}")
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".json") and name in MODEL_FILES + TOKENIZER_FILES:
            try:
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)
            except (ValueError, UnicodeDecodeError) as error:
                reason = "it is empty" if os.path.getsize(path) == 0 else f"not valid JSON: {error}"
                raise UsageError(f"{path}: the file is damaged ({reason}); {fix}") from None
        elif name.endswith(".safetensors"):
            try:
                with safe_open(path, "pt"):
                    pass
            except Exception as error:  # safetensors' own error type: a header that does not fit the file
                raise UsageError(f"{path}: the file is damaged ({str(error).splitlines()[0]}; truncated?); "
                                 f"{fix}") from None


def load_task_data(run, tokenizer, train_sentence_limits, eval_tasks, label_lists=None):
    """Read and tokenise what the run needs.

    `train_sentence_limits` maps each task to train on to the number of training sentences to use (None:
    all); `eval_tasks` lists the tasks evaluated on dev/test. `label_lists` (from a saved model) fixes the
    label order; otherwise `{task}_labels.txt` (or the training file's labels) gives it.
    """
    args = run.args
    data = TaskData(labels=dict(label_lists or {}))
    tasks = list(dict.fromkeys(list(train_sentence_limits) + list(eval_tasks)))
    noise = noise_sources(args)  # TASK_noise -> TASK: read from TASK's files, its labels permuted
    data.sentence_tasks = [task for task in tasks if task not in noise and is_sentence_task(run.data_dir, task)]
    for task in tasks:
        if task not in data.labels and task not in noise:
            train_path = task_file(run.data_dir, "train", task)
            train_sentences = None if os.path.isfile(os.path.join(run.data_dir, f"{task}_labels.txt")) else read_sentences(train_path)
            data.labels[task] = read_labels(run.data_dir, task, train_sentences)
            try:
                check_labels_fit_metric(task, data.labels[task], task in data.sentence_tasks)
            except ValueError as error:
                source = labels_file(run.data_dir, task) if train_sentences is None else task_file(run.data_dir, "train", task)
                raise TaskDataError(f"{source}: {error}; fix the label set, or rename the task") from None
    for task, source in noise.items():
        data.labels.setdefault(task, data.labels[source])
    for task, limit in tqdm(list(train_sentence_limits.items()), desc="reading training data", disable=len(train_sentence_limits) < 2):
        if task in noise:
            data.train[task] = noise_split(data.train[noise[task]], task, args.seed)
            continue
        order_seed = None if args.keep_order else training_order_seed(args.data_seed, task)
        data.train[task] = load_task_split(run.data_dir, task, "train", tokenizer, data.labels[task], args.max_seq_length,
                                           limit, shuffle_seed=order_seed)
    for task in eval_tasks:
        if args.do_eval:
            data.dev[task] = load_task_split(run.data_dir, task, "dev", tokenizer, data.labels[task], args.max_seq_length)
        if args.do_predict:
            data.test[task] = load_task_split(run.data_dir, task, "test", tokenizer, data.labels[task], args.max_seq_length)
    return data


def noise_split(split, task, seed):
    """The training split of --noise_source's control `task`: `split` with its labels permuted across all its
    words by `seed` (the affinity probe's shuffled control)."""
    from tawt.testing.task_affinity import shuffled_control

    return dataclasses.replace(shuffled_control(split, seed), task=task)


def saved_model_labels(run, tasks):
    """The label lists of the saved model's heads for `tasks` (a run without --do_train evaluates a saved
    model): a label is the head's output of its name, whatever its place in the data's labels file. A task
    without a head, or a labels file with a label the head cannot predict, is refused before anything is
    written (the loss would otherwise be computed against another label, or fail part way)."""
    directory = run.model_name_or_path
    heads_config = read_heads_config(directory)
    task_labels = saved_task_labels(heads_config)
    for task in tasks:
        if task not in task_labels:
            raise UsageError(f"--model_name_or_path {directory} has no head for task {task!r} (its heads: "
                             f"{', '.join(task_labels)}); evaluate a task it was trained on, or pass --do_train")
        # A model saved before sentence-level tasks existed has none.
        check_task_level(run, task, task in heads_config.get("sentence_tasks", ()))
        path = labels_file(run.data_dir, task)
        if os.path.isfile(path):
            unknown = [label for label in read_labels(run.data_dir, task) if label not in task_labels[task]]
            if unknown:
                raise TaskDataError(
                    f"{path}: label(s) {unknown} are not among the {len(task_labels[task])} labels of the model's "
                    f"{task} head ({directory}); evaluate it on data with those labels, or train a model on these "
                    "labels (--do_train)")
    return {task: task_labels[task] for task in tasks}


def training_data_fingerprint(run, data):
    """What the run trains on, per task: the training file's name, size and SHA-256, the sentences taken from
    it (after --main_task_train_sent_num and the like) and the label list. A checkpoint records it, and a
    resumption on other data is refused (training_loop.check_training_data)."""
    fingerprint = {}
    for task, split in data.train.items():
        path = task_file(run.data_dir, "train", noise_sources(run.args).get(task, task))
        if not os.path.isfile(path) and os.path.isfile(path + ".gz"):  # read as the reader read it
            path += ".gz"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        fingerprint[task] = {"file": os.path.abspath(path), "bytes": os.path.getsize(path),
                             "sha256": digest.hexdigest(), "sentences": len(split.sentences),
                             "labels": list(data.labels[task])}
    return fingerprint


def warn_identical_gradient_batches(args, train_splits):
    """With --gradient_sampling_batches M > 1, a task no larger than one sampled batch gives M identical
    batches (each holds all its sentences): the M-batch mean is then one batch, and its spread 0."""
    batches = getattr(args, "gradient_sampling_batches", 1)
    if batches < 2 or getattr(args, "weighting", None) != "tawt":
        return
    for task, split in train_splits.items():
        if len(split.features) <= args.gradient_sampling_batch_size:
            logger.warning("%s has %d training sentences, no more than --gradient_sampling_batch_size %d: its %d "
                           "sampled batches are identical (each holds all of them); give a smaller batch size for "
                           "M different batches", task, len(split.features), args.gradient_sampling_batch_size,
                           batches)
# The forward path --forward_path auto takes on each device type. On the CPU the unpadded one was
# measured faster (benchmarks/README.md); on a GPU the bucketed one is the guess that few large kernels
# and static shapes beat gathers (benchmarks/gpu_check.py measures both).
AUTO_FORWARD_PATH = {"cpu": "unpadded", "cuda": "bucketed"}


def forward_path(args, device):
    """The forward path a run takes on `device` (before the model's own check of its encoder)."""
    if args.forward_path != "auto":
        return args.forward_path
    return AUTO_FORWARD_PATH.get(device.type, "unpadded")


def build_model(run, task_labels, sentence_tasks=()):
    """A new multi-task model (fresh heads on the pretrained encoder), or, without --do_train, a saved one.

    `sentence_tasks` get a sentence-level head (--sentence_pooling). `run.forward_path` records the path
    the model takes ("encoder": the encoder's own forward)."""
    args = run.args
    options = dict(unpadded=not args.padded_forward, forward_path=forward_path(args, run.device))
    if args.do_train:
        model = MultiTaskTagger.from_encoder(run.model_name_or_path, task_labels, args.dropout, **options,
                                             sentence_tasks=sentence_tasks,
                                             sentence_pooling=getattr(args, "sentence_pooling", "first"))
    else:
        model = MultiTaskTagger.from_pretrained(run.model_name_or_path, **options)
    model.to(run.device)
    run.forward_path = model.forward_path
    if args.torch_compile or args.torch_compile_mode:
        model.compile_encoder(args.torch_compile_mode)
    return model


def check_task_level(run, task, sentence_head):
    """Refuse to evaluate a saved model on a task whose files are of the other level than its head."""
    sentence_data = is_sentence_task(run.data_dir, task)
    if sentence_data != sentence_head:
        levels = ("sentence-level (.tsv)", "tagging (.txt)")
        data_level, model_level = (levels if sentence_data else levels[::-1])
        raise UsageError(f"task {task}: its files in {run.data_dir} are {data_level}, but the model in "
                         f"{run.model_name_or_path} has a {model_level.split()[0]} head for it; give the data "
                         "the model was trained on")


def prepare_run(args, paradigm, main_task, tasks, train_limits):
    """Everything before training: `start_run`, the tokenizer, the data (train, dev and test of every task),
    the model with a head per task, then `open_output_dir`. `train_limits` maps each task to train on to
    its number of training sentences (None: all)."""
    try:
        run = start_run(args, paradigm, main_task, tasks)
        tokenizer = load_tokenizer(run)
        # A noise source has no dev or test file of its own: it is trained, never evaluated.
        eval_tasks = [main_task] if args.eval_main_task_only else [task for task in tasks if task not in noise_sources(args)]
        saved_labels = None if args.do_train else saved_model_labels(run, eval_tasks)
        data = load_task_data(run, tokenizer, train_limits if args.do_train else {}, eval_tasks, saved_labels)
        run.training_data = training_data_fingerprint(run, data)
        warn_identical_gradient_batches(args, data.train)
        if run.checkpoint is not None:
            check_training_data(run.checkpoint_path, run.checkpoint, run.training_data)
        model = build_model(run, data.labels, data.sentence_tasks)
        if run.checkpoint is not None:
            restore_checkpoint(run, model, run.checkpoint)
            run.checkpoint = None
        run.dev_evaluation = start_dev_evaluation(run, model, data)
    except (UsageError, TaskDataError):
        # Refused before anything was written: the directory is left as it was (one made now is removed).
        release(args.output_dir, remove_if_unused=True)
        raise
    open_output_dir(run)
    if run.dev_evaluation is not None:  # a resumed run's curve, up to its checkpoint
        run.dev_evaluation.write()
    return run, tokenizer, data, model


def weight_history_settings(args):
    """The flags besides --weighting that change what the weights or the updates mean, for task_weights.json."""
    settings = {}
    if getattr(args, "ablate_source_cosines", False):
        settings["ablate_source_cosines"] = True
    if getattr(args, "noise_source", None) is not None:
        settings["noise_source"] = args.noise_source
    return settings


def start_weight_history(run, tasks, task_weights):
    """task_weights.json with the starting weights, or, when resuming, the history up to the checkpoint."""
    history = TaskWeightHistory(run.path(TASK_WEIGHTS_FILE), tasks, run.args.weighting, run.reporter,
                                weight_history_settings(run.args))
    if run.restored_weight_history is not None:
        history.history = list(run.restored_weight_history)
        history.write()
    else:
        history.record("initial", 0, task_weights)
    run.weight_history = history
    return history


# ---------------------------------------------------------------------------------------------------------
# End of a run


def peak_memory_mib(device):
    """What this process has held at most, in MiB: its resident memory ("cpu"; this process only, the
    workers of a multi-process run each count their own) and, on a GPU, what torch allocated there ("gpu")."""
    peak = {}
    try:
        import resource
    except ImportError:  # Windows
        resource = None
    if resource is not None:
        most = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peak["cpu"] = round(most / (2**20 if sys.platform == "darwin" else 2**10), 1)
    if device.type == "cuda":
        peak["gpu"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def finish_run(run, model, tokenizer, data):
    """Save the model (when trained; with --load_best_model_at_end the best dev score's), then evaluate every
    task with a head on dev and test.

    In a multi-process run the main process evaluates the whole dev and test sets alone (each sentence
    exactly once) while the others wait; it returns the results on the main process, None elsewhere.
    """
    from tawt.evaluation import evaluate_and_write

    summary = None
    if distributed.is_main_process():
        if run.args.do_train:
            if run.dev_evaluation is not None:
                run.dev_evaluation.load_best_model(model)
            save_model(run, model, tokenizer)
            logger.info("saved the model and tokenizer to %s", run.output_dir)
        summary = {"train_sentences": {task: len(split.sentences) for task, split in data.train.items()}}
        for split_name, splits in (("eval", data.dev), ("test", data.test)):
            for task, split in splits.items():
                summary[f"{task}_{split_name}"] = evaluate_and_write(run, model, task, split, split_name)
        write_json_atomic(run.path(ALL_RESULTS_FILE), summary)
        write_json_atomic(run.path(RUN_COST_FILE), {
            "seconds": round(time.monotonic() - run.started, 1), "resumed": run.resumed_from_checkpoint is not None,
            "peak_memory_mib": peak_memory_mib(run.device)})
        run.reporter.results(summary)
        run.reporter.close()
        # The results are written: the checkpoints of this run have served their purpose (a checkpoint folder
        # that no run of this directory claimed is a user's, and stays as it is).
        if CHECKPOINT_DIR in earlier_run_names(run.output_dir):
            remove_checkpoints(run.output_dir)
        release(run.output_dir)
    distributed.close()
    return summary


def save_model(run, model, tokenizer):
    """Save the model and tokenizer into --output_dir whole or not at all: written to a temporary directory
    there, then moved in, task_heads.json (what marks a saved model) last."""
    temporary = run.path(f".tmp-model-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary, tokenizer)
    except Exception as error:  # a full disk: an OSError, a torch RuntimeError or a tokenizers exception
        shutil.rmtree(temporary, ignore_errors=True)
        resumes = ": it resumes from the last checkpoint" if run.args.save_steps > 0 else ""
        raise write_failure(run.output_dir, state_bytes(model.state_dict()), error, fix="free some space (or choose "
                            f"another --output_dir) and rerun the same command{resumes}") from None
    for name in sorted(os.listdir(temporary), key=lambda name: name == HEADS_CONFIG):
        os.replace(os.path.join(temporary, name), run.path(name))
    os.rmdir(temporary)
