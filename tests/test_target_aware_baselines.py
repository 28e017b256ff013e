"""GCS and OL-AUX on the tiny model: a twin of the main task is kept and gains weight, a source of random
labels is dropped more often, and an interrupted run resumes to identical results."""

import json
import os

import pytest

from tests.conftest import start_heads_as_copies, write_task_files, write_twin_and_noise
from tests.test_scripts import TINY_TRAINING

SOURCES = ["twin", "noise"]


@pytest.fixture(scope="module")
def twin_data_dir(tmp_path_factory):
    """The tiny tasks, plus `twin` (ner's files under another name) and `noise` (ner's sentences, random ner labels)."""
    return write_twin_and_noise(write_task_files(tmp_path_factory.mktemp("twin_data")), "ner")


@pytest.fixture
def twin_heads(monkeypatch):
    """The twin's and the noise's heads start as copies of the main task's: the twin's gradient is then the
    main task's own (on other sentences of the same file), and the noise differs from it only by its labels."""
    start_heads_as_copies(monkeypatch, "ner", SOURCES)


class Interrupted(Exception):
    """Stands for a crash right after a checkpoint was written."""


def train(data_dir, model_dir, output, weighting_flags, script="run_weighted_joint", extra=(), stop_at_step=None,
          monkeypatch=None):
    """Train twin + noise -> ner in this process; returns task_weights.json. With `stop_at_step`, raises
    Interrupted right after the checkpoint of that step."""
    import importlib

    from tawt import training_loop
    if stop_at_step is not None:
        save_checkpoint = training_loop.save_checkpoint

        def save_and_stop(run, model, trainer, epoch, batches_done, task_weights):
            save_checkpoint(run, model, trainer, epoch, batches_done, task_weights)
            if trainer.global_step == stop_at_step:
                raise Interrupted

        monkeypatch.setattr(training_loop, "save_checkpoint", save_and_stop)
    importlib.import_module(script).main(
        ["--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--data_dir", data_dir, "--model_name_or_path",
         model_dir, "--output_dir", str(output), "--gradient_sampling_batch_size", "24", "--eval_main_task_only",
         *weighting_flags, *extra, *TINY_TRAINING]
    )
    if stop_at_step is not None:
        monkeypatch.setattr(training_loop, "save_checkpoint", save_checkpoint)
    with open(os.path.join(output, "task_weights.json")) as handle:
        return json.load(handle)


def test_gcs_keeps_the_twin_always_and_the_random_labels_less(twin_data_dir, tiny_model_dir, tmp_path, twin_heads):
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "gcs", ["--weighting", "gcs", "--report_to", "none"])
    assert record["tasks"] == ["twin", "noise", "ner"]
    entries = record["history"][1:]
    assert [entry["stage"] for entry in entries] == ["epoch", "epoch"]
    for entry in entries:
        assert entry["weights"] == record["history"][0]["weights"]  # GCS keeps the weights as given
        assert entry["gcs_since_previous_entry"]["kept_fraction"][0] == 1.0
    whole_run = entries[-1]["gcs_whole_run"]
    assert whole_run["source_steps"] == [6, 6, 0]  # 24 sentences of each source in batches of 8, two epochs
    assert whole_run["kept_fraction"][1] < whole_run["kept_fraction"][0] == 1.0
    assert whole_run["mean_cosine"][0] > 0.5 > whole_run["mean_cosine"][1]
    assert entries[-1]["target_gradients_computed"] == 12  # one per source step (--target_gradient_steps 1)
    with open(tmp_path / "gcs" / "run_args.json") as handle:
        assert json.load(handle)["paradigm"] == "joint_gcs"


def test_weighted_gcs_scales_the_twin_above_the_random_labels(twin_data_dir, tiny_model_dir, tmp_path, twin_heads):
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "gcs_weighted",
                   ["--weighting", "gcs", "--gcs_mode", "weighted", "--target_gradient_steps", "4"])
    whole_run = record["history"][-1]["gcs_whole_run"]
    # Weighted GCS scales by max(0, cos): the twin's scale is its (positive) mean cosine.
    assert whole_run["mean_scale"][0] == pytest.approx(whole_run["mean_cosine"][0])
    assert whole_run["mean_scale"][0] > whole_run["mean_scale"][1] >= 0
    assert record["history"][-1]["target_gradients_computed"] < 12  # refreshed only every 4 steps


def test_olaux_moves_weight_to_the_twin_and_away_from_random_labels(twin_data_dir, tiny_model_dir, tmp_path,
                                                                     twin_heads):
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "olaux",
                   ["--weighting", "olaux", "--weight_update_steps", "3", "--olaux_lr", "100", "--report_to", "none"])
    history = record["history"]
    # Updates every 3 steps within the 9-step epochs, and after each epoch.
    assert [(entry["stage"], entry["step"]) for entry in history[1:]] == [
        ("step", 3), ("step", 6), ("epoch", 9), ("step", 12), ("step", 15), ("epoch", 18)]
    first, last = history[0]["weights"], history[-1]["weights"]
    assert last[0] > first[0] and last[1] < first[1]
    assert sum(entry["olaux_source_steps"][0] for entry in history[1:]) == 6
    assert all(entry["olaux_lr_times_dot_sum"][0] >= 0 for entry in history[1:])
    with open(tmp_path / "olaux" / "run_args.json") as handle:
        assert json.load(handle)["paradigm"] == "joint_olaux"


def run_outputs(output):
    with open(output / "task_weights.json") as handle:
        weights = json.load(handle)
    with open(output / "all_results.json") as handle:
        results = json.load(handle)
    return weights, (output / "ner_test_predictions.txt").read_text(), results


# The target gradient is refreshed every 4 steps: the run is interrupted at step 6, between two refreshes and
# between two OL-AUX updates, so the cached gradient and the accumulators must come from the checkpoint.
@pytest.mark.parametrize("script,flags", [
    ("run_weighted_joint", ["--weighting", "gcs", "--gcs_mode", "weighted"]),
    ("run_weighted_normalized_joint", ["--weighting", "olaux", "--weight_update_steps", "4", "--olaux_lr", "100"]),
])
def test_an_interrupted_run_resumes_to_identical_results(twin_data_dir, tiny_model_dir, tmp_path, twin_heads,
                                                         monkeypatch, script, flags):
    flags = flags + ["--target_gradient_steps", "4", "--save_steps", "1"]
    train(twin_data_dir, tiny_model_dir, tmp_path / "whole", flags, script)
    with pytest.raises(Interrupted):
        train(twin_data_dir, tiny_model_dir, tmp_path / "resumed", flags, script, stop_at_step=6,
              monkeypatch=monkeypatch)
    assert not (tmp_path / "resumed" / "ner_test_results.txt").exists()
    train(twin_data_dir, tiny_model_dir, tmp_path / "resumed", flags, script)
    with open(tmp_path / "resumed" / "run_args.json") as handle:
        record = json.load(handle)
    assert record["resumed_from_checkpoint"] is not None
    assert record["paradigm"] == {"run_weighted_joint": "joint_gcs_weighted",
                                  "run_weighted_normalized_joint": "normalized_joint_olaux"}[script]
    assert run_outputs(tmp_path / "resumed") == run_outputs(tmp_path / "whole")


def test_bad_baseline_flags_are_refused_before_anything_runs(tmp_path, monkeypatch):
    import run_weighted_joint
    from tawt.errors import UsageError

    base = ["--auxiliary_task_list", "pos", "--main_task", "ner", "--output_dir", str(tmp_path / "out"), "--do_train"]
    with pytest.raises(UsageError, match="--target_gradient_steps 0"):
        run_weighted_joint.parse_arguments(base + ["--weighting", "gcs", "--target_gradient_steps", "0"])
    with pytest.raises(UsageError, match="--olaux_lr -1"):
        run_weighted_joint.parse_arguments(base + ["--weighting", "olaux", "--olaux_lr", "-1"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    with pytest.raises(UsageError, match="--weighting gcs runs in one process only"):
        run_weighted_joint.parse_arguments(base + ["--weighting", "gcs"])
    assert not (tmp_path / "out").exists()


def test_gcs_that_keeps_every_step_trains_exactly_as_joint_training(twin_data_dir, tiny_model_dir, tmp_path,
                                                                    monkeypatch):
    """Drawing and computing the target gradient between backward and step disturbs nothing: with every
    cosine taken as 1, gated GCS is joint training to the last bit (same batches, dropout, updates)."""
    from tawt import target_aware_baselines
    train(twin_data_dir, tiny_model_dir, tmp_path / "joint", ["--weighting", "fixed"])
    computed = []

    def always_agrees(target, gradient):
        computed.append(len(target))
        return 1.0

    monkeypatch.setattr(target_aware_baselines, "cosine_similarity", always_agrees)
    train(twin_data_dir, tiny_model_dir, tmp_path / "gcs", ["--weighting", "gcs", "--gcs_variant", "gated"])
    assert len(computed) == 12  # a target gradient at each source step
    joint, gcs = run_outputs(tmp_path / "joint"), run_outputs(tmp_path / "gcs")
    assert gcs[1:] == joint[1:]  # predictions and results


def test_what_gcs_and_olaux_did_is_also_in_tensorboard(twin_data_dir, tiny_model_dir, tmp_path, twin_heads):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (setup.sh installs it): pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(output):
        events = EventAccumulator(os.path.join(output, "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    record = train(twin_data_dir, tiny_model_dir, tmp_path / "gcs", ["--weighting", "gcs", "--report_to", "tensorboard"])
    kept = scalars(tmp_path / "gcs")["gcs_kept_fraction/noise"]
    assert kept == [(entry["step"], pytest.approx(entry["gcs_since_previous_entry"]["kept_fraction"][1]))
                    for entry in record["history"][1:]]
    record = train(twin_data_dir, tiny_model_dir, tmp_path / "olaux",
                   ["--weighting", "olaux", "--weight_update_steps", "3", "--report_to", "tensorboard"])
    logged = scalars(tmp_path / "olaux")
    assert [value for _, value in logged["task_weight/twin"]] == pytest.approx(
        [entry["weights"][0] for entry in record["history"]])
    assert len(logged["olaux_lr_times_dot_sum/twin"]) == len(record["history"]) - 1


@pytest.mark.parametrize("mode", ["unweighted", "weighted"])
def test_gcs_du_step_is_the_main_gradient_plus_the_gated_source_gradient(tiny_model_dir, tiny_data_dir, mode):
    """--gcs_variant du: after a source batch's backward pass, the gradient the optimizer sees is (scale) x
    the source's encoder gradient + w_main K x the main task's (encoder and head), as in AuxiLearn's
    GradCosine; the source's head keeps its own gradient."""
    from argparse import Namespace

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from tawt import target_aware_baselines
    from tawt.cross_task_training import Run
    from modeling_multi_bert import MultiTaskTagger, token_classification_loss
    from utils_cross_task import collate, read_labels, load_task_split
    from weighted_training_basics import cosine_similarity, encoder_gradient, sample_gradient_batches

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    labels = {task: read_labels(tiny_data_dir, task) for task in ("pos", "ner")}
    splits = {task: load_task_split(tiny_data_dir, task, "train", tokenizer, labels[task], 32) for task in labels}
    torch.manual_seed(0)
    model = MultiTaskTagger.from_encoder(tiny_model_dir, labels)
    args = Namespace(gradient_sampling_batch_size=4, target_gradient_steps=1, gcs_mode=mode, gcs_variant="du",
                     bf16=False, fp16=False)
    run = Run(args=args, paradigm="joint_gcs", main_task="ner", tasks=["pos", "ner"], device=torch.device("cpu"),
              data_dir=tiny_data_dir, model_name_or_path=tiny_model_dir,
              gradient_sampling_generator=torch.Generator().manual_seed(3), pad_token_id=tokenizer.pad_token_id)
    gcs = target_aware_baselines.GradientSimilarity(model, run, ["pos", "ner"], "ner", splits["ner"],
                                                    np.array([0.2, 0.8]))
    model.eval()  # no dropout: the source gradient below is reproducible
    batch = collate(splits["pos"].features[:8], tokenizer.pad_token_id)
    _, logits = model("pos", batch["input_ids"], batch["attention_mask"])
    token_classification_loss(logits, batch["labels"]).backward()
    encoder, main_head = model.encoder_parameters(), list(model.head("ner").parameters())
    source = [parameter.grad.clone() for parameter in encoder]
    source_head = [parameter.grad.clone() for parameter in model.head("pos").parameters()]
    assert all(parameter.grad is None for parameter in main_head)

    main_batch = sample_gradient_batches({"ner": splits["ner"]}, 4, torch.Generator().manual_seed(3),
                                         tokenizer.pad_token_id, "cpu")[0]["ner"]
    main = encoder_gradient(model, "ner", main_batch, extra_parameters=main_head)
    cosine = cosine_similarity(main[:len(encoder)], source)
    scale = max(0.0, cosine) if mode == "weighted" else float(cosine > 0)
    gcs.adjust_gradients("pos", 1, 1e-3)

    multiplier = 0.8 * 2
    for parameter, source_gradient, main_gradient in zip(encoder, source, main):
        assert torch.allclose(parameter.grad, scale * source_gradient + multiplier * main_gradient, atol=1e-7)
    for parameter, main_gradient in zip(main_head, main[len(encoder):]):
        assert torch.allclose(parameter.grad, multiplier * main_gradient)
    assert any(gradient.abs().sum() > 0 for gradient in main[len(encoder):])
    for parameter, gradient in zip(model.head("pos").parameters(), source_head):
        assert torch.equal(parameter.grad, gradient)


def test_gcs_records_its_variant_and_how_far_the_encoder_and_the_main_head_moved(twin_data_dir, tiny_model_dir,
                                                                                tmp_path, twin_heads):
    du = train(twin_data_dir, tiny_model_dir, tmp_path / "du", ["--weighting", "gcs", "--gcs_mode", "weighted"])
    gated = train(twin_data_dir, tiny_model_dir, tmp_path / "gated",
                  ["--weighting", "gcs", "--gcs_mode", "weighted", "--gcs_variant", "gated"])
    for record, variant in ((du, "du"), (gated, "gated")):
        entries = record["history"][1:]
        assert [entry["gcs_variant"] for entry in entries] == [variant, variant]
        for entry in entries:
            assert entry["parameter_update_norm"]["encoder"] > 0 and entry["parameter_update_norm"]["main_head"] > 0
    with open(tmp_path / "du" / "run_args.json") as handle:
        assert json.load(handle)["args"]["gcs_variant"] == "du"
    # The main head trains at every step under du, on its own 3 batches of 9 only when gated.
    assert (du["history"][1]["parameter_update_norm"]["main_head"]
            > gated["history"][1]["parameter_update_norm"]["main_head"])


def test_log_update_norms_records_how_far_each_log_interval_moved_the_model_in_any_paradigm(tiny_data_dir,
                                                                                            tiny_model_dir, tmp_path):
    """--log_update_norms adds parameter_update_norm to every training_log.jsonl line; the norms of the
    intervals add up (triangle inequality) to at least the whole run's distance, and without the flag the
    log and the results are unchanged."""
    import torch
    from safetensors.torch import load_file

    import run_weighted_joint
    from tests.test_scripts import common

    arguments = ["--auxiliary_task_list", "pos", "--main_task", "ner", "--num_train_epochs", "1",
                 "--logging_steps", "2", "--report_to", "none"]
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "plain") + arguments)
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, tmp_path / "logged") + arguments
                            + ["--log_update_norms"])
    plain = [json.loads(line) for line in (tmp_path / "plain" / "training_log.jsonl").read_text().splitlines()]
    logged = [json.loads(line) for line in (tmp_path / "logged" / "training_log.jsonl").read_text().splitlines()]
    assert len(logged) == len(plain) >= 3 and all("parameter_update_norm" not in line for line in plain)
    assert [{key: value for key, value in line.items() if key != "parameter_update_norm"} for line in logged] == plain
    assert (tmp_path / "logged" / "ner_test_predictions.txt").read_text() == (
        tmp_path / "plain" / "ner_test_predictions.txt").read_text()
    norms = [line["parameter_update_norm"] for line in logged]
    assert all(norm["encoder"] > 0 and norm["main_head"] >= 0 for norm in norms)
    # the whole run's distance of the encoder, from the initial weights to the saved ones
    initial, final = load_file(os.path.join(tiny_model_dir, "model.safetensors")), load_file(
        tmp_path / "logged" / "model.safetensors")
    shared = [name for name in final if name in initial and "pooler" not in name]
    distance = torch.sqrt(sum(torch.sum((final[name].float() - initial[name].float()) ** 2) for name in shared))
    assert sum(norm["encoder"] for norm in norms) >= float(distance) * 0.999 > 0
