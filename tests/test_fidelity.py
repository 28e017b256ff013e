"""Runs compute what the original's runs compute: the TAWT update leaves training alone, subsets are random."""

import json

import numpy as np
import pytest

import run_weighted_joint
import run_weighted_normalized_joint
import run_weighted_pretraining
from tests.test_scripts import common, weight_history
from tawt.training_loop import adamw_with_linear_schedule

SOURCES = ["pos", "chunking"]
ALL_TASKS = SOURCES + ["ner"]

# (script, flags of the baseline) for each multi-task paradigm; the weighted run adds a vanishing step.
PARADIGMS = {
    "pretraining": run_weighted_pretraining,
    "joint": run_weighted_joint,
    "normalized_joint": run_weighted_normalized_joint,
}


def run_paradigm(script, data_dir, model_dir, output_dir, *extra):
    return script.main(common(data_dir, model_dir, output_dir) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "10",
        "--gradient_sampling_batch_size", "8", *extra])


def output_files(directory):
    names = [f"{task}_{kind}" for task in ALL_TASKS for kind in
             ("test_results.txt", "eval_results.txt", "test_predictions.txt")]
    return {name: (directory / name).read_bytes() for name in names}


@pytest.mark.parametrize("paradigm", sorted(PARADIGMS))
def test_a_vanishing_tawt_step_reproduces_the_baseline_byte_for_byte(paradigm, tiny_data_dir, tiny_model_dir, tmp_path):
    """Weighted X with --inv_constant 1e-12 = X: the update (the head fit's dropout included) draws nothing
    from the training's random generators, and weighted pre-training fine-tunes from the untouched head."""
    script = PARADIGMS[paradigm]
    run_paradigm(script, tiny_data_dir, tiny_model_dir, tmp_path / "baseline", "--weighting", "fixed")
    run_paradigm(script, tiny_data_dir, tiny_model_dir, tmp_path / "weighted", "--inv_constant", "1e-12")
    baseline, weighted = weight_history(tmp_path / "baseline"), weight_history(tmp_path / "weighted")
    assert len(weighted["history"]) == 3 and weighted["weighting"] == "tawt"  # the update did run, twice
    assert all(entry["cosine_similarities"] is not None for entry in weighted["history"][1:])
    for entry in weighted["history"]:
        assert [f"{w:.6f}" for w in entry["weights"]] == [f"{w:.6f}" for w in baseline["history"][0]["weights"]]
    assert output_files(tmp_path / "weighted") == output_files(tmp_path / "baseline")


def test_head_fit_schedule_decays_to_zero_without_weight_decay():
    from argparse import Namespace

    import torch

    head = torch.nn.Linear(4, 3)
    args = Namespace(learning_rate=0.1, adam_epsilon=1e-8, weight_decay=0.0, warmup_steps=0, legacy_adamw=False)
    optimizer, scheduler = adamw_with_linear_schedule(head.parameters(), args, 4, torch.device("cpu"))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0]
    rates = []
    for _ in range(4):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.075, 0.05, 0.025]) and scheduler.get_last_lr()[0] == 0.0


def test_training_files_are_shuffled_per_task_unless_keep_order(tiny_data_dir, tiny_model_dir, tmp_path):
    from utils_cross_task import load_task_split, read_labels, read_sentences, task_file, training_order_seed
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    everything = read_sentences(task_file(tiny_data_dir, "train", "ner"))

    def first(task, seed, count=6):
        split = load_task_split(tiny_data_dir, task, "train", tokenizer, read_labels(tiny_data_dir, task), 32, count,
                                shuffle_seed=None if seed is None else training_order_seed(seed, task))
        return [" ".join(sentence.words) for sentence in split.sentences]

    in_file_order = [" ".join(sentence.words) for sentence in everything[:6]]
    assert first("ner", None) == in_file_order  # --keep_order: the file's first sentences
    shuffled = first("ner", 42)
    assert len(shuffled) == 6 and shuffled != in_file_order  # a random 6 of the 24
    assert set(shuffled) <= {" ".join(sentence.words) for sentence in everything}
    assert first("ner", 42) == shuffled and first("ner", 7) != shuffled  # seeded
    # The tiny tasks share their sentences; each task's file gets an order of its own.
    assert first("pos", 42) != shuffled

    # A run records the seed, and the main task's sentences follow it.
    output = tmp_path / "joint"
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", *SOURCES, "--main_task", "ner", "--main_task_train_sent_num", "6",
        "--weighting", "fixed", "--num_train_epochs", "1"])
    recorded = json.loads((output / "run_args.json").read_text())["args"]
    assert recorded["data_seed"] == 42 and recorded["keep_order"] is False


def test_eval_main_task_only(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "main_only"
    summary = run_paradigm(run_weighted_joint, tiny_data_dir, tiny_model_dir, output, "--weighting", "fixed",
                           "--eval_main_task_only", "--num_train_epochs", "1")
    assert (output / "ner_test_predictions.txt").is_file() and (output / "ner_eval_results.txt").is_file()
    assert not list(output.glob("pos_*")) and not list(output.glob("chunking_*"))
    assert sorted(key for key in summary if key != "train_sentences") == ["ner_eval", "ner_test"]
    assert json.loads((output / "run_args.json").read_text())["args"]["eval_main_task_only"] is True
    assert np.isfinite(float(summary["ner_test"]["f1"]))


# ---------------------------------------------------------------------------------------------------------
# The original's optimizer: zeroed (not cleared) gradients, transformers 2.8's AdamW step


def head_movement_per_step(tiny_data_dir, tiny_model_dir, tmp_path, *flags):
    """Train one epoch of pos and ner batches through the real Trainer; for every step, the task in the
    batch and whether each head's parameters changed at that step."""
    import torch

    from tawt.cross_task_training import Run, load_task_data, load_tokenizer
    from modeling_multi_bert import MultiTaskTagger
    from tawt.training_loop import Trainer

    args = run_weighted_joint.parse_arguments(common(tiny_data_dir, tiny_model_dir, tmp_path / "out") + [
        "--auxiliary_task_list", "pos", "--main_task", "ner", "--main_task_train_sent_num", "16",
        "--per_gpu_train_batch_size", "4", *flags])
    (tmp_path / "out").mkdir(parents=True)
    run = Run(args=args, paradigm="test", main_task="ner", tasks=["pos", "ner"], device=torch.device("cpu"),
              data_dir=tiny_data_dir, model_name_or_path=tiny_model_dir)
    data = load_task_data(run, load_tokenizer(run), {"pos": 16, "ner": 16}, [])
    model = MultiTaskTagger.from_encoder(tiny_model_dir, data.labels)
    trainer = Trainer(model, run, total_steps=8, stage="train")
    in_batch, before, moved = [], {}, []

    def heads():
        return {task: [p.detach().clone() for p in model.head(task).parameters()] for task in ("pos", "ner")}

    for task in ("pos", "ner"):
        model.head(task).register_forward_hook(lambda module, inputs, output, task=task: in_batch.append(task))
    trainer.optimizer.register_step_pre_hook(lambda *_: before.update(heads()))
    trainer.optimizer.register_step_post_hook(lambda *_: moved.append({
        task: any(not torch.equal(a, b) for a, b in zip(before[task], after)) for task, after in heads().items()}))
    trainer.train_epoch({task: data.train[task] for task in ("pos", "ner")}, {"pos": 0.5, "ner": 0.5}, 0)
    assert len(in_batch) == len(moved) == 8
    return list(zip(in_batch, moved))


def test_zero_grad_in_place_keeps_stepping_a_head_outside_the_batch(tiny_data_dir, tiny_model_dir, tmp_path):
    for flags, name in (((), "default"), (("--zero_grad_in_place",), "zeroed")):
        steps = head_movement_per_step(tiny_data_dir, tiny_model_dir, tmp_path / name, *flags)
        seen, outside = set(), 0
        for task, moved in steps:
            assert moved[task]  # the head in the batch always moves
            for other in {"pos", "ner"} - {task}:
                if other in seen:  # it has optimizer state: stepped on its moments with the flag only
                    outside += 1
                    assert moved[other] is bool(flags), (name, task, other)
                else:  # never had a gradient: skipped either way
                    assert not moved[other]
            seen.add(task)
        assert outside >= 2  # the epoch's order mixes the tasks, so the check above did happen


def test_zero_grad_in_place_changes_nothing_when_one_task_is_trained(tiny_data_dir, tiny_model_dir, tmp_path):
    import run_single_task

    outputs = {}
    for flags, name in (((), "default"), (("--zero_grad_in_place",), "zeroed")):
        run_single_task.main(common(tiny_data_dir, tiny_model_dir, tmp_path / name) + [
            "--task", "pos", "--train_sent_num", "12", *flags])
        outputs[name] = {file: (tmp_path / name / file).read_bytes() for file in (
            "pos_test_predictions.txt", "pos_test_results.txt", "pos_eval_results.txt", "model.safetensors",
            "task_heads.safetensors")}
    assert outputs["zeroed"] == outputs["default"]


def transformers28_reference(gradients, lr, eps, betas=(0.9, 0.999), weight_decay=0.0, start=1.0):
    """transformers 2.8's AdamW update, step by step in float64, written out from its source."""
    parameter, m, v = start, 0.0, 0.0
    for step, gradient in enumerate(gradients, start=1):
        m = betas[0] * m + (1 - betas[0]) * gradient
        v = betas[1] * v + (1 - betas[1]) * gradient * gradient
        step_size = lr * np.sqrt(1 - betas[1] ** step) / (1 - betas[0] ** step)
        parameter = parameter - step_size * m / (np.sqrt(v) + eps)
        parameter = parameter - lr * weight_decay * parameter
    return parameter


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_legacy_adamw_is_the_step_of_transformers_2_8(weight_decay):
    import torch

    from tawt.training_loop import Transformers28AdamW

    # Gradients of 1e-3 and then zero (a head outside the batch): eps matters, and the moments decay.
    gradients = [1e-3, 2e-3, 0.0, 0.0, -1e-3]
    lr, eps = 0.1, 1e-4

    def run(optimizer_class, **options):
        parameter = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
        optimizer = optimizer_class([parameter], lr=lr, eps=eps, weight_decay=weight_decay, **options)
        for gradient in gradients:
            parameter.grad = torch.full_like(parameter, gradient)
            optimizer.step()
        return parameter.item()

    expected = transformers28_reference(gradients, lr, eps, weight_decay=weight_decay)
    assert run(Transformers28AdamW) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # torch's AdamW adds eps to the bias-corrected sqrt(v): a different step with the same eps.
    assert abs(run(torch.optim.AdamW) - expected) > 1e-3
    if weight_decay == 0.0:  # without eps the two formulas agree
        eps = 0.0
        expected = transformers28_reference(gradients[:2], lr, 0.0)
        gradients = gradients[:2]
        assert run(Transformers28AdamW) == pytest.approx(expected, rel=1e-12)
        assert run(torch.optim.AdamW) == pytest.approx(expected, rel=1e-12)


def test_legacy_adamw_trains_resumably_and_differs_from_torch_adamw(tiny_data_dir, tiny_model_dir, tmp_path):
    default = run_paradigm(run_weighted_joint, tiny_data_dir, tiny_model_dir, tmp_path / "torch", "--weighting", "fixed")
    legacy = run_paradigm(run_weighted_joint, tiny_data_dir, tiny_model_dir, tmp_path / "legacy", "--weighting",
                          "fixed", "--legacy_adamw", "--zero_grad_in_place")
    assert legacy["ner_test"] != default["ner_test"]
    recorded = json.loads((tmp_path / "legacy" / "run_args.json").read_text())["args"]
    assert recorded["legacy_adamw"] is True and recorded["zero_grad_in_place"] is True


# ---------------------------------------------------------------------------------------------------------
# The original's re-seeding in weighted pre-training


def test_reseed_each_update_draws_the_same_batches_at_every_update(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    import weighted_training_basics
    from tawt import weighting

    drawn, fit_orders = [], []
    real_sample, real_fit = weighted_training_basics.sample_batch_indices, weighted_training_basics.fit_head_on_frozen_encoder

    def recording_sample(num_examples, batch_size, generator):
        indices = real_sample(num_examples, batch_size, generator)
        drawn.append(indices)
        return indices

    def recording_fit(model, task, split, run, generator, epochs=1):
        fit_orders.append(generator.get_state().clone())
        return real_fit(model, task, split, run, generator, epochs)

    monkeypatch.setattr(weighting, "sample_batch_indices", recording_sample)  # tawt.TAWT draws the batches
    # The script imports it when it runs (after parsing its arguments): the patched one.
    monkeypatch.setattr(weighted_training_basics, "fit_head_on_frozen_encoder", recording_fit)
    for flags, name in (((), "fresh"), (("--reseed_each_update",), "reseeded")):
        drawn.clear()
        fit_orders.clear()
        run_paradigm(run_weighted_pretraining, tiny_data_dir, tiny_model_dir, tmp_path / name,
                     "--gradient_sampling_batch_size", "4", *flags)
        tasks = len(SOURCES) + 1  # each update draws one batch per source and one of the main task
        assert len(drawn) == 2 * tasks and len(fit_orders) == 2  # two epochs: two updates
        first, second = drawn[:tasks], drawn[tasks:]
        if flags:
            assert first == second and (fit_orders[0] == fit_orders[1]).all()
        else:
            assert first != second and not (fit_orders[0] == fit_orders[1]).all()
    recorded = json.loads((tmp_path / "reseeded" / "run_args.json").read_text())["args"]
    assert recorded["reseed_each_update"] is True


def test_weights_of_the_last_epoch_follow_the_steps():
    from tawt.scripts.experiment_grid import weights_of_last_epoch

    def entry(stage, step, weights):
        return {"stage": stage, "step": step, "weights": weights}

    # Four epochs of 10 steps: the update after epoch 3 trained epoch 4; the one after epoch 4 trained nothing.
    history = [entry("initial", 0, [0.5, 0.5])] + [entry("epoch", 10 * e, [0.5 - e / 10, 0.5 + e / 10]) for e in (1, 2, 3, 4)]
    assert weights_of_last_epoch(history) == history[3]["weights"]
    # Within-epoch updates every 4 steps, and --max_steps 7 stopping the first epoch: the update at step 4
    # trained steps 5 to 7, the one made when training stopped at step 7 trained nothing.
    history = [entry("initial", 0, [0.5, 0.5]), entry("step", 4, [0.4, 0.6]), entry("epoch", 7, [0.3, 0.7])]
    assert weights_of_last_epoch(history) == [0.4, 0.6]
    assert weights_of_last_epoch(history[:1]) == [0.5, 0.5]


def test_a_non_finite_gradient_is_not_called_zero(caplog):
    import torch

    from weighted_training_basics import cosine_similarity

    finite = [torch.ones(3)]
    with caplog.at_level("WARNING"):
        assert cosine_similarity(finite, [torch.tensor([1.0, float("inf"), 0.0])]) is None
    assert "not finite" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert cosine_similarity(finite, [torch.zeros(3)]) is None
    assert "not finite" not in caplog.text
