"""The files a run writes (their names) and the atomic writer they all go through.

Kept free of heavy imports so that the result tools in testing/ can use it cheaply.
"""

import errno
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


def previous_run_files(output_dir, evaluating_in_place=False):
    """The paths of the files an earlier run left in `output_dir` (its checkpoint folder included).

    Only names a run writes are listed, so anything else a user keeps there is left alone. An evaluation of
    the model saved in that very directory (`evaluating_in_place`) keeps the model, the tokenizer and the
    record of the training that made them: only earlier results and evaluations are listed.
    """
    if not os.path.isdir(output_dir):
        return []
    kept = set(MODEL_FILES + TOKENIZER_FILES + TRAINING_RECORD) if evaluating_in_place else set()
    run_files = {*TRAINING_RECORD, ALL_RESULTS_FILE, EVALUATION_ARGS_FILE, EVALUATION_LOG_FILE, EVALUATION_TENSORBOARD_DIR,
                 *MODEL_FILES, *TOKENIZER_FILES}
    return [
        os.path.join(output_dir, name) for name in sorted(os.listdir(output_dir))
        if name not in kept and (name in run_files or name.endswith(("_results.txt", "_test_predictions.txt")))
    ]


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
    from errors import OutputWriteError

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
