"""The files a run writes (their names) and the atomic writer they all go through.

Kept free of heavy imports so that the result tools in testing/ can use it cheaply.
"""

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile

# What a write fails with when the disk (or a quota, or a file-size limit) has no room for it.
DISK_FULL_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

RUN_ARGS_FILE = "run_args.json"
TASK_WEIGHTS_FILE = "task_weights.json"
TRAINING_LOG_FILE = "training_log.jsonl"
DEV_CURVE_FILE = "dev_curve.json"  # the main task's dev scores during training (--eval_strategy)
ALL_RESULTS_FILE = "all_results.json"
RUN_COST_FILE = "run_cost.json"  # the run's seconds (this process's) and peak memory
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"  # event files (--report_to tensorboard)
RUN_LOG_FILE = "run.log"
# An evaluation of the model saved in --output_dir itself records itself here, beside the training's record.
EVALUATION_ARGS_FILE = "evaluation_args.json"
EVALUATION_LOG_FILE = "evaluation.log"
EVALUATION_TENSORBOARD_DIR = "evaluation_tensorboard"
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "task_heads.safetensors", "task_heads.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "chat_template.jinja")


def results_file(task, split_name):
    """{task}_eval_results.txt (dev) or {task}_test_results.txt (test)."""
    return f"{task}_{split_name}_results.txt"


def predictions_file(task):
    return f"{task}_test_predictions.txt"


def holds_model(output_dir):
    return any(os.path.isfile(os.path.join(output_dir, name)) for name in ("model.safetensors", "task_heads.json"))


def holds_results(output_dir):
    """True when `output_dir` holds what a run leaves: a trained model, results or task weights."""
    if not os.path.isdir(output_dir):
        return False
    names = os.listdir(output_dir)
    return holds_model(output_dir) or any(
        name in (ALL_RESULTS_FILE, TASK_WEIGHTS_FILE) or name.endswith("_results.txt") for name in names
    )


def holds_checkpoints(output_dir):
    directory = os.path.join(output_dir, CHECKPOINT_DIR)
    return os.path.isdir(directory) and any(name.startswith("checkpoint-") for name in os.listdir(directory))


TRAINING_RECORD = (RUN_ARGS_FILE, TASK_WEIGHTS_FILE, TRAINING_LOG_FILE, DEV_CURVE_FILE, RUN_LOG_FILE, CHECKPOINT_DIR,
                   TENSORBOARD_DIR)


# What a run wrote into a directory: the names it claimed before writing anything (RUN_FILES_RECORD, a JSON
# list). Only those are ever removed, so a user's own files are left alone whatever their names.
RUN_FILES_RECORD = ".tawt_files.json"
# A run's folders: what it writes inside them; anything else found there is a user's and stays.
FOLDER_CONTENTS = {CHECKPOINT_DIR: ("checkpoint-*.pt", ".tmp-*"), TENSORBOARD_DIR: ("*tfevents*",),
                   EVALUATION_TENSORBOARD_DIR: ("*tfevents*",)}


def names_a_run_writes(tasks, trains, checkpoints, tensorboard, beside_training=False):
    """Every name a run may write into its --output_dir: `tasks`' results and predictions, the model and
    tokenizer files and the training's records when it `trains`, its checkpoint folder (`checkpoints`) and
    TensorBoard folder (`tensorboard`); an evaluation `beside_training` (in a model's own directory) writes
    its own record instead of the training's."""
    names = {ALL_RESULTS_FILE, RUN_COST_FILE}
    if beside_training:
        names |= {EVALUATION_ARGS_FILE, EVALUATION_LOG_FILE} | ({EVALUATION_TENSORBOARD_DIR} if tensorboard else set())
    else:
        names |= {RUN_ARGS_FILE, RUN_LOG_FILE} | ({TENSORBOARD_DIR} if tensorboard else set())
    if trains:
        names |= set(TRAINING_RECORD) - {CHECKPOINT_DIR, TENSORBOARD_DIR} | set(MODEL_FILES + TOKENIZER_FILES)
        if checkpoints:
            names.add(CHECKPOINT_DIR)
    for task in tasks:
        names |= {results_file(task, "eval"), results_file(task, "test"), predictions_file(task)}
    return sorted(names)


def _is_run_name(name):
    return name in {*TRAINING_RECORD, ALL_RESULTS_FILE, RUN_COST_FILE, EVALUATION_ARGS_FILE, EVALUATION_LOG_FILE,
                    EVALUATION_TENSORBOARD_DIR, *MODEL_FILES, *TOKENIZER_FILES} or name.endswith(
        ("_results.txt", "_test_predictions.txt"))


def earlier_run_names(output_dir):
    """The names an earlier run in `output_dir` claimed. A directory written before runs recorded their names
    (it holds a run's record or saved model, and no RUN_FILES_RECORD) is taken to be all of a run's own."""
    try:
        with open(os.path.join(output_dir, RUN_FILES_RECORD), encoding="utf-8") as handle:
            return set(json.load(handle))
    except FileNotFoundError:
        pass
    except (ValueError, UnicodeDecodeError):
        return set()  # damaged: nothing is known to be a run's, so nothing is removed
    present = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    if any(name in present for name in (RUN_ARGS_FILE, EVALUATION_ARGS_FILE, "task_heads.json")):
        return {name for name in present if _is_run_name(name)}
    return set()


def files_no_run_wrote(output_dir, names):
    """Those of `names` (what a run is about to write) that `output_dir` holds and no earlier run wrote: a
    user's, which the run must neither overwrite nor remove."""
    if not os.path.isdir(output_dir):
        return []
    claimed = earlier_run_names(output_dir)
    return [name for name in names if name not in claimed and os.path.lexists(os.path.join(output_dir, name))]


def previous_run_files(output_dir, evaluating_in_place=False):
    """The paths of the files an earlier run wrote in `output_dir` (its checkpoint folder included).

    Only names an earlier run claimed are listed, so anything else a user keeps there is left alone. An
    evaluation of the model saved in that very directory (`evaluating_in_place`) keeps the model, the
    tokenizer and the record of the training that made them: only earlier results and evaluations are listed.
    """
    if not os.path.isdir(output_dir):
        return []
    kept = set(MODEL_FILES + TOKENIZER_FILES + TRAINING_RECORD) if evaluating_in_place else set()
    return [os.path.join(output_dir, name) for name in sorted(earlier_run_names(output_dir) - kept)
            if os.path.lexists(os.path.join(output_dir, name))]


def remove_run_files(paths):
    """Remove what a run wrote at `paths`: a file, or in one of its folders only the files it writes there (the
    folder goes too once empty). A folder that is a symbolic link keeps the link and the rest of its target."""
    for path in paths:
        patterns = FOLDER_CONTENTS.get(os.path.basename(path))
        if patterns is not None and os.path.isdir(path):
            for pattern in patterns:
                for inside in glob.glob(os.path.join(glob.escape(path), pattern)):
                    if os.path.isfile(inside) or os.path.islink(inside):
                        os.remove(inside)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):  # not empty: a user's files are in it
                    os.rmdir(path)
        elif os.path.isfile(path) or os.path.islink(path):
            os.remove(path)


def record_run_files(output_dir, names):
    """Claim `names` in `output_dir` before writing any of them, beside what earlier runs wrote and is still
    there (a training's model and record, kept by an evaluation in place)."""
    still_there = {name for name in earlier_run_names(output_dir) if os.path.lexists(os.path.join(output_dir, name))}
    write_json_atomic(os.path.join(output_dir, RUN_FILES_RECORD), sorted(still_there | set(names)))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def human_size(size):
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024


def write_failure(path, needed_bytes, error, fix="free some space (or choose another --output_dir) and rerun the "
                                                   "same command"):
    """The OutputWriteError of `path`, that could not be written: how much it needs, how much is free."""
    from tawt.errors import OutputWriteError

    try:
        free = human_size(shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free)
    except OSError:
        free = "an unknown amount"
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
    return OutputWriteError(f"{path}: cannot be written ({reason}); it needs about {human_size(needed_bytes)} and "
                            f"{free} are free there: {fix}")


def write_text_atomic(path, text):
    """Write a file so that a reader (or a crash) sees either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        # mkstemp makes the file readable by its owner only; a result file gets the umask's permissions.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRORS:
            raise write_failure(path, len(text.encode("utf-8")), error) from None
        raise


def write_json_atomic(path, payload):
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
