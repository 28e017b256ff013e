"""The files a run writes (their names) and the atomic writer they all go through.

Kept free of heavy imports so that the result tools in testing/ can use it cheaply.
"""

import json
import os
import tempfile

RUN_ARGS_FILE = "run_args.json"
TASK_WEIGHTS_FILE = "task_weights.json"
TRAINING_LOG_FILE = "training_log.jsonl"
ALL_RESULTS_FILE = "all_results.json"
CHECKPOINT_DIR = "checkpoints"


def results_file(task, split_name):
    """{task}_eval_results.txt (dev) or {task}_test_results.txt (test)."""
    return f"{task}_{split_name}_results.txt"


def predictions_file(task):
    return f"{task}_test_predictions.txt"


def write_text_atomic(path, text):
    """Write a file so that a reader (or a crash) sees either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json_atomic(path, payload):
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
