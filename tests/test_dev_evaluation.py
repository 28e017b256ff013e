"""The main task on dev during training: --eval_strategy, --load_best_model_at_end, --early_stopping_patience,
and their exact resumption."""

import json

import pytest

import run_single_task
import run_weighted_joint
import run_weighted_normalized_joint
import run_weighted_pretraining
from tawt import training_loop
from tawt.errors import UsageError
from tests.test_reliability import Interrupted
from tests.test_scripts import TINY_TRAINING

SOURCES = ["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num", "10"]
PARADIGMS = {  # script, its flags, the stage that scores the main task, that stage's optimizer steps per epoch
    "single_task": (run_single_task, ["--task", "ner"], "train", 3),
    "joint": (run_weighted_joint, SOURCES + ["--weighting", "fixed"], "joint", 8),
    "normalized_joint": (run_weighted_normalized_joint, SOURCES + ["--gradient_sampling_batch_size", "8"], "joint", 8),
    "pretraining": (run_weighted_pretraining, SOURCES + ["--gradient_sampling_batch_size", "8"], "fine-tune", 2),
}
# ner from scratch with this learning rate: span F1 first reaches 1.0 part-way (step 8 of 12) and stays there,
# so the best model (the first 1.0) is not the last one.
BEST_NOT_LAST = ["--task", "ner", "--learning_rate", "1e-2", "--num_train_epochs", "4", "--eval_strategy", "steps",
                 "--eval_steps", "1", "--load_best_model_at_end"]


def run(script, flags, data_dir, model_dir, output):
    """The script on the tiny model and data; `flags` come last, so they override TINY_TRAINING's."""
    script.main(["--data_dir", data_dir, "--model_name_or_path", model_dir, "--output_dir", str(output),
                 *TINY_TRAINING, "--report_to", "none", *flags])


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def read_results(path):
    with open(path) as handle:
        pairs = dict(line.rstrip("\n").split(" = ", 1) for line in handle if line.strip())
    return {key: float(value) for key, value in pairs.items() if key in ("precision", "recall", "f1", "loss")}


def outputs(output):
    return ({name: (output / name).read_text() for name in ("ner_test_predictions.txt", "ner_eval_results.txt",
                                                            "ner_test_results.txt", "dev_curve.json")},
            read_json(output / "all_results.json"))


@pytest.mark.parametrize("paradigm", sorted(PARADIGMS))
def test_each_paradigm_scores_the_main_task_after_each_epoch_of_the_stage_that_trains_it(
        paradigm, tiny_data_dir, tiny_model_dir, tmp_path):
    script, flags, stage, steps_per_epoch = PARADIGMS[paradigm]
    run(script, flags + ["--eval_strategy", "epoch"], tiny_data_dir, tiny_model_dir, tmp_path / "curve")
    curve = read_json(tmp_path / "curve" / "dev_curve.json")
    assert curve["task"] == "ner" and curve["metric_for_best_model"] == "f1"  # ner's table metric
    assert [(entry["stage"], entry["epoch"], entry["step"]) for entry in curve["evaluations"]] == [
        (stage, 1, steps_per_epoch), (stage, 2, 2 * steps_per_epoch)]
    # Without --load_best_model_at_end the last model is kept: the run's final dev score is the last one.
    assert read_results(tmp_path / "curve" / "ner_eval_results.txt") == {
        key: value for key, value in curve["evaluations"][-1].items() if key in ("precision", "recall", "f1", "loss")}
    if paradigm == "single_task":
        # Scoring draws no random number and leaves the model as it was: training is the same as without it.
        run(script, flags, tiny_data_dir, tiny_model_dir, tmp_path / "plain")
        assert not (tmp_path / "plain" / "dev_curve.json").exists()
        for name in ("ner_test_predictions.txt", "ner_test_results.txt", "ner_eval_results.txt"):
            assert (tmp_path / "curve" / name).read_text() == (tmp_path / "plain" / name).read_text()


def test_dev_scores_are_tensorboard_curves_on_the_run_wide_step_axis(tiny_data_dir, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (setup.sh installs it): pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    script, flags, _, _ = PARADIGMS["pretraining"]
    run(script, flags + ["--eval_strategy", "epoch", "--report_to", "tensorboard"], tiny_data_dir, tiny_model_dir,
        tmp_path / "tb")
    curve = read_json(tmp_path / "tb" / "dev_curve.json")
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    # Fine-tuning's steps follow pre-training's 12 (2 epochs of 6 source batches).
    for metric in ("f1", "loss"):
        assert [(event.step, event.value) for event in events.Scalars(f"dev_during_training/ner/{metric}")] == [
            (12 + entry["step"], pytest.approx(entry[metric])) for entry in curve["evaluations"]]


def test_best_model_is_saved_evaluated_and_predicts(tiny_data_dir, tiny_model_dir, tmp_path):
    run(run_single_task, BEST_NOT_LAST, tiny_data_dir, tiny_model_dir, tmp_path / "best")
    curve = read_json(tmp_path / "best" / "dev_curve.json")
    evaluations, best = curve["evaluations"], curve["best"]
    assert len(evaluations) == 12 and best["step"] < evaluations[-1]["step"]
    assert best["f1"] == max(entry["f1"] for entry in evaluations) and curve["best_model_loaded_at_end"]
    final = read_results(tmp_path / "best" / "ner_eval_results.txt")
    # The final dev evaluation is the best model's, not the last one's (same F1, another loss).
    assert final == {key: best[key] for key in final}
    assert final["loss"] != evaluations[-1]["loss"]
    # The saved model is the best one: evaluating it again gives the same test predictions.
    run_single_task.main(["--task", "ner", "--data_dir", tiny_data_dir, "--model_name_or_path",
                          str(tmp_path / "best"), "--output_dir", str(tmp_path / "again"), "--report_to", "none",
                          "--max_seq_length", "32", "--do_predict"])
    assert ((tmp_path / "again" / "ner_test_predictions.txt").read_text()
            == (tmp_path / "best" / "ner_test_predictions.txt").read_text())


def test_early_stopping_ends_training_after_patience_scores_without_improvement(tiny_data_dir, tiny_model_dir,
                                                                                 tmp_path):
    output = tmp_path / "stopped"
    # So small a learning rate leaves every prediction, and so the dev F1, as it was: no score beats the first.
    run(run_weighted_joint, SOURCES + ["--weighting", "fixed", "--learning_rate", "1e-7", "--eval_strategy", "steps",
                                       "--eval_steps", "2", "--early_stopping_patience", "2", "--logging_steps", "1",
                                       "--metric_for_best_model", "eval_f1"],
        tiny_data_dir, tiny_model_dir, output)
    curve = read_json(output / "dev_curve.json")
    assert curve["metric_for_best_model"] == "f1" and curve["stopped_early"]
    assert [entry["step"] for entry in curve["evaluations"]] == [2, 4, 6]
    assert len({entry["f1"] for entry in curve["evaluations"]}) == 1 and curve["best"]["step"] == 2
    with open(output / "training_log.jsonl") as handle:
        assert [json.loads(line)["step"] for line in handle][-1] == 6  # of 2 epochs of 8 steps


SAVE_CHECKPOINT = training_loop.save_checkpoint


def run_interrupted(script, flags, data_dir, model_dir, output, monkeypatch, stop_at_step=None, stage=None):
    """Run with --save_steps 1, raising Interrupted right after the checkpoint of `stop_at_step` of `stage`."""
    def save_and_maybe_stop(run, model, trainer, epoch, batches_done, task_weights):
        SAVE_CHECKPOINT(run, model, trainer, epoch, batches_done, task_weights)
        if (trainer.stage, trainer.global_step) == (stage, stop_at_step):
            raise Interrupted

    monkeypatch.setattr(training_loop, "save_checkpoint", save_and_maybe_stop)
    run(script, flags + ["--save_steps", "1"], data_dir, model_dir, output)


RESUMED = {  # after the best score, and (single task) after the early stop
    "single_task": (run_single_task, BEST_NOT_LAST + ["--early_stopping_patience", "3"], "train"),
    # Fine-tuning's dev F1 first reaches its best at step 6 of 8.
    "pretraining": (run_weighted_pretraining, SOURCES + ["--gradient_sampling_batch_size", "8", "--learning_rate",
                                                         "3e-2", "--num_train_epochs", "4", "--eval_strategy", "steps",
                                                         "--eval_steps", "1", "--load_best_model_at_end"], "fine-tune"),
}


@pytest.mark.parametrize("paradigm", sorted(RESUMED))
def test_an_interrupted_run_resumes_to_the_same_best_model_and_curve(paradigm, tiny_data_dir, tiny_model_dir,
                                                                     tmp_path, monkeypatch):
    script, flags, stage = RESUMED[paradigm]
    run_interrupted(script, flags, tiny_data_dir, tiny_model_dir, tmp_path / "whole", monkeypatch)
    curve = read_json(tmp_path / "whole" / "dev_curve.json")
    best_step, last_step = curve["best"]["step"], curve["evaluations"][-1]["step"]
    assert best_step < last_step  # the best model is not the last one: it can only come from the checkpoint
    stops = [best_step + 1, last_step] if paradigm == "single_task" else [best_step + 1]
    if paradigm == "single_task":
        assert curve["stopped_early"] and last_step == best_step + 3
    for stop_at_step in stops:
        output = tmp_path / f"resumed_{stop_at_step}"
        with pytest.raises(Interrupted):
            run_interrupted(script, flags, tiny_data_dir, tiny_model_dir, output, monkeypatch, stop_at_step, stage)
        assert not (output / "ner_test_results.txt").exists()
        run_interrupted(script, flags, tiny_data_dir, tiny_model_dir, output, monkeypatch)
        assert read_json(output / "run_args.json")["resumed_from_checkpoint"] is not None
        assert outputs(output) == outputs(tmp_path / "whole")


@pytest.mark.parametrize("flags, message", [
    (["--eval_strategy", "steps"], "--eval_strategy steps needs --eval_steps N"),
    (["--eval_steps", "5"], "--eval_steps 5 acts with --eval_strategy steps only"),
    (["--eval_strategy", "steps", "--eval_steps", "0"], "--eval_steps 0: give at least 1"),
    (["--load_best_model_at_end"], "--load_best_model_at_end acts on the dev scores taken during training"),
    (["--early_stopping_patience", "2"], "--early_stopping_patience acts on the dev scores"),
    (["--eval_strategy", "epoch", "--early_stopping_patience", "0"], "--early_stopping_patience 0: give at least 1"),
    (["--eval_strategy", "epoch", "--metric_for_best_model", "accuracy"],
     "--metric_for_best_model accuracy: the main task ner (span metrics) reports f1, loss, precision, recall"),
])
def test_bad_flags_are_refused_before_anything_is_written(flags, message, tiny_data_dir, tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(run_single_task, ["--task", "ner"] + flags, tiny_data_dir, tiny_model_dir, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_dev_scores_need_do_train_do_eval_and_a_fine_tuning_stage(tiny_data_dir, tiny_model_dir, tmp_path):
    common = ["--task", "ner", "--data_dir", tiny_data_dir, "--model_name_or_path", tiny_model_dir, "--output_dir",
              str(tmp_path / "refused"), "--eval_strategy", "epoch"]
    with pytest.raises(UsageError, match="add --do_eval"):
        run_single_task.main(common + ["--do_train", "--do_predict"])
    with pytest.raises(UsageError, match="add --do_train"):
        run_single_task.main(common + ["--do_eval"])
    with pytest.raises(UsageError, match="--pre_train_only leaves out"):
        run_weighted_pretraining.parse_arguments(SOURCES + ["--output_dir", "x", "--pre_train_only", "--eval_strategy",
                                                            "epoch", "--do_train", "--do_eval"])
    assert not (tmp_path / "refused").exists()
