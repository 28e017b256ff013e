"""TensorBoard event files (--report_to), read back with TensorBoard's own readers and compared with the
run's files: training_log.jsonl, task_weights.json and all_results.json. A run interrupted after a
checkpoint and resumed has every step once, in the event files and in training_log.jsonl."""

import glob
import json
import os
import sys

import pytest

from tests.test_scripts import TINY_TRAINING

pytest.importorskip("tensorboard", reason="the tensorboard extra (setup.sh installs it): pip install tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # noqa: E402
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer  # noqa: E402

# Weighted pre-training: 2 epochs of 6 source batches, updates every 2 steps (within the epochs and after
# each), then fine-tuning: 2 epochs of 2 main-task batches, whose steps follow pre-training's 12.
PRETRAINING = ["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num", "10",
               "--gradient_sampling_batch_size", "8", "--gradient_sampling_batches", "2", "--weight_update_steps",
               "2", "--logging_steps", "1"]
PRETRAINING_STEPS = 12


def run_pretraining(data_dir, model_dir, output, *extra):
    import run_weighted_pretraining

    return run_weighted_pretraining.main(PRETRAINING + ["--data_dir", data_dir, "--model_name_or_path", model_dir,
                                                        "--output_dir", str(output), *TINY_TRAINING, *extra])


def training_log(output):
    return [json.loads(line) for line in open(os.path.join(output, "training_log.jsonl"))]


def run_step(record):
    """A training_log.jsonl record's step on the run-wide axis of the event files."""
    return record["step"] + (PRETRAINING_STEPS if record["stage"] == "fine-tune" else 0)


def scalars(output):
    """{tag: [(step, value)]} as TensorBoard shows them."""
    events = EventAccumulator(os.path.join(output, "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def raw_summaries(output):
    """Every (tag, step) written in the event files, read without TensorBoard's purging of restarts."""
    written = []
    for path in sorted(glob.glob(os.path.join(output, "tensorboard", "*tfevents*"))):
        for event in LegacyEventFileLoader(path).Load():
            if event.HasField("summary"):
                written.extend((value.tag, event.step) for value in event.summary.value)
    return written


def check_against_the_run_files(output):
    """The event files hold exactly what training_log.jsonl, task_weights.json and all_results.json hold."""
    curves, events = scalars(output)
    records = training_log(output)
    assert curves["train/loss"] == [(run_step(record), pytest.approx(record["loss"])) for record in records]
    assert curves["train/learning_rate"] == [(run_step(r), pytest.approx(r["learning_rate"])) for r in records]
    for task in ("pos", "chunking", "ner"):
        assert curves[f"train_loss/{task}"] == [(run_step(record), pytest.approx(record["task_losses"][task]))
                                               for record in records if task in record["task_losses"]]
    weights = json.load(open(os.path.join(output, "task_weights.json")))
    history = weights["history"]
    for index, task in enumerate(weights["tasks"]):
        assert curves[f"task_weight/{task}"] == [(entry["step"], pytest.approx(entry["weights"][index]))
                                                for entry in history]
        for name, tag in (("cosine_similarities", "cosine"), ("cosine_batch_mean", "cosine_batch_mean"),
                          ("cosine_batch_std", "cosine_batch_std")):
            assert curves[f"{tag}/{task}"] == [(entry["step"], pytest.approx(entry[name][index]))
                                              for entry in history[1:]]
    assert curves["head_fit/loss"] == [(entry["step"], pytest.approx(entry["head_fit_loss"])) for entry in history[1:]]
    results = json.load(open(os.path.join(output, "all_results.json")))
    last_step = run_step(records[-1])
    for task in ("pos", "chunking", "ner"):
        for split_name, tag in (("eval", "dev"), ("test", "test")):
            for metric, value in results[f"{task}_{split_name}"].items():
                if isinstance(value, float):
                    assert curves[f"{tag}/{task}/{metric}"] == [(last_step, pytest.approx(value))]
    return curves, events, records, history


def test_event_files_repeat_the_run_files_on_one_step_axis(tiny_data_dir, tiny_model_dir, tmp_path):
    root = tmp_path / "grid"
    run_pretraining(tiny_data_dir, tiny_model_dir, root / "weighted_pretraining" / "ner" / "seed_1")
    curves, events, records, history = check_against_the_run_files(root / "weighted_pretraining" / "ner" / "seed_1")

    # Every optimizer step logged (--logging_steps 1), fine-tuning's after pre-training's; an update every 2.
    assert [step for step, _ in curves["train/loss"]] == list(range(1, PRETRAINING_STEPS + 4 + 1))
    assert [step for step, _ in curves["task_weight/pos"]] == list(range(0, PRETRAINING_STEPS + 1, 2))
    # Each task's own loss is its unweighted one: the logged (weighted) loss is it times w_t * K, with the
    # weights in effect at that step (those of the last update before it); fine-tuning weighs by 1.
    tasks = ["pos", "chunking"]
    for record in records:
        (task, task_loss), = record["task_losses"].items()
        if record["stage"] == "fine-tune":
            assert record["loss"] == pytest.approx(task_loss)
        else:
            in_effect = [entry for entry in history if entry["step"] < record["step"]][-1]["weights"]
            assert record["loss"] == pytest.approx(task_loss * in_effect[tasks.index(task)] * len(tasks), rel=1e-5)
    texts = events.Tensors("run_args/text_summary")
    assert len(texts) == 1 and texts[0].step == 0
    assert b'"paradigm": "weighted_pretraining"' in texts[0].tensor_proto.string_val[0]

    # A second run of the grid: `tensorboard --logdir OUTPUT_ROOT` shows both, named by their paths.
    import run_single_task

    run_single_task.main(["--task", "ner", "--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir,
                          "--output_dir", str(root / "single_task" / "ner" / "seed_1"), *TINY_TRAINING])
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["single_task/ner/seed_1/tensorboard",
                                          "weighted_pretraining/ner/seed_1/tensorboard"]
    assert "dev/ner/f1" in multiplexer.Runs()["single_task/ner/seed_1/tensorboard"]["scalars"]


class Interrupted(Exception):
    """Stands for a crash after a training-log record that came after the newest checkpoint."""


# --save_steps 4: checkpoints at pre-training steps 4, 6 (epoch end), 8, 12 and fine-tuning steps 2 and 4.
# Stopped at pre-training step 7, the run resumes from step 6; at fine-tuning step 3, from fine-tuning step 2.
@pytest.mark.parametrize("stop_at", [("pre-train", 7), ("fine-tune", 3)])
def test_a_resumed_run_continues_its_curves_without_repeated_steps(stop_at, tiny_data_dir, tiny_model_dir,
                                                                   tmp_path, monkeypatch):
    from tawt import training_loop
    log = training_loop.Trainer._log

    def log_then_stop(trainer, epoch, mean_loss):
        log(trainer, epoch, mean_loss)
        if (trainer.stage, trainer.global_step) == stop_at:
            raise Interrupted

    output = tmp_path / "run"
    monkeypatch.setattr(training_loop.Trainer, "_log", log_then_stop)
    with pytest.raises(Interrupted):
        run_pretraining(tiny_data_dir, tiny_model_dir, output, "--save_steps", "4")
    interrupted = raw_summaries(output)
    assert ("train/loss", run_step({"stage": stop_at[0], "step": stop_at[1]})) in interrupted
    monkeypatch.setattr(training_loop.Trainer, "_log", log)

    run_pretraining(tiny_data_dir, tiny_model_dir, output, "--save_steps", "4")
    assert json.load(open(output / "run_args.json"))["resumed_from_checkpoint"] is not None
    written = raw_summaries(output)
    assert len(written) == len(set(written)), "a step written twice"
    assert len(glob.glob(str(output / "tensorboard" / "*tfevents*"))) == 1
    curves, events, records, _ = check_against_the_run_files(output)
    assert [(record["stage"], record["step"]) for record in records] == (
        [("pre-train", step) for step in range(1, PRETRAINING_STEPS + 1)] + [("fine-tune", step) for step in range(1, 5)])
    assert [step for step, _ in curves["train/loss"]] == list(range(1, PRETRAINING_STEPS + 4 + 1))
    # The resumed command's arguments are recorded at the step it continued from.
    resumed_at = {("pre-train", 7): 7, ("fine-tune", 3): PRETRAINING_STEPS + 3}[stop_at]
    assert [text.step for text in events.Tensors("run_args/text_summary")] == [0, resumed_at]


def test_report_to_none_and_a_missing_tensorboard_package(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch,
                                                          caplog):
    import run_single_task
    from tawt.errors import UsageError
    from tawt.run_reporting import resolve_report_to

    output = tmp_path / "none"
    run_single_task.main(["--task", "pos", "--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir,
                          "--output_dir", str(output), "--report_to", "none", "--max_steps", "2", *TINY_TRAINING])
    assert not (output / "tensorboard").exists() and (output / "all_results.json").exists()
    assert json.load(open(output / "run_args.json"))["args"]["report_to"] == "none"

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    assert resolve_report_to(None) == "none"
    assert "tensorboard package is not installed" in caplog.text
    with pytest.raises(UsageError, match="pip install tensorboard"):
        resolve_report_to("tensorboard")
    assert resolve_report_to("none") == "none"


def test_an_evaluation_in_the_model_directory_reports_beside_the_training(tiny_data_dir, tiny_model_dir, tmp_path):
    import run_single_task

    output = tmp_path / "model"
    base = ["--task", "pos", "--data_dir", tiny_data_dir, "--max_seq_length", "32", "--per_gpu_eval_batch_size", "16"]
    run_single_task.main(base + ["--model_name_or_path", tiny_model_dir, "--output_dir", str(output), "--do_train",
                                 "--max_steps", "2", "--logging_steps", "1", "--per_gpu_train_batch_size", "8"])
    training_events = sorted(os.listdir(output / "tensorboard"))
    run_single_task.main(base + ["--model_name_or_path", str(output), "--output_dir", str(output), "--do_eval"])
    assert sorted(os.listdir(output / "tensorboard")) == training_events  # the training's record is kept
    curves, _ = scalars(output)
    assert [step for step, _ in curves["train/loss"]] == [1, 2] and "dev/pos/accuracy" not in curves
    evaluation = EventAccumulator(str(output / "evaluation_tensorboard"))
    evaluation.Reload()
    accuracy = json.load(open(output / "all_results.json"))["pos_eval"]["accuracy"]
    assert [(event.step, event.value) for event in evaluation.Scalars("dev/pos/accuracy")] == [
        (0, pytest.approx(accuracy))]
