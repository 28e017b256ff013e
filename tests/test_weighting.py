"""The TAWT pieces: encoder-only gradients, cosines, the exponentiated-gradient step."""

import math

import numpy as np
import pytest
import torch

from modeling_multi_bert import MultiTaskTagger
from utils_cross_task import collate, encode_sentences, read_labels, read_sentences
from weighted_training_basics import (
    cosine_similarity, encoder_gradient, exponentiated_gradient_step, similarities_to_main_task, weight_step_size,
)


def flattened_cosine(first, second):
    """The original's way: one long vector per gradient (a reference, slow on real encoders)."""
    a = torch.cat([g.reshape(-1) for g in first]).double()
    b = torch.cat([g.reshape(-1) for g in second]).double()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def model_and_batches(tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task_labels, batches = {}, {}
    for task in ("pos", "ner", "chunking"):
        sentences = read_sentences(f"{tiny_data_dir}/train_{task}.txt", max_sentences=6)
        labels = read_labels(tiny_data_dir, task)
        task_labels[task] = labels
        features, _ = encode_sentences(tokenizer, sentences, {l: i for i, l in enumerate(labels)}, 32)
        batches[task] = collate(features, tokenizer.pad_token_id)
    torch.manual_seed(0)
    return MultiTaskTagger.from_encoder(tiny_model_dir, task_labels), batches


def test_encoder_gradient_covers_encoder_only_and_leaves_model_untouched(model_and_batches):
    model, batches = model_and_batches
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    gradient = encoder_gradient(model, "ner", batches["ner"])
    assert len(gradient) == len(model.encoder_parameters())
    assert [g.shape for g in gradient] == [p.shape for p in model.encoder_parameters()]
    assert any(bool(g.abs().sum() > 0) for g in gradient)
    assert model.training  # dropout mode restored
    assert all(p.grad is None for p in model.parameters())  # .grad buffers untouched
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_encoder_gradient_is_deterministic_with_dropout_off(model_and_batches):
    model, batches = model_and_batches
    model.train()
    first = encoder_gradient(model, "pos", batches["pos"])
    second = encoder_gradient(model, "pos", batches["pos"])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_cosine_matches_flattened_reference(model_and_batches):
    model, batches = model_and_batches
    main = encoder_gradient(model, "ner", batches["ner"])
    for task in ("pos", "chunking"):
        other = encoder_gradient(model, task, batches[task])
        assert cosine_similarity(main, other) == pytest.approx(flattened_cosine(main, other), abs=1e-5)
    similarities = similarities_to_main_task(model, "ner", ["pos", "chunking", "ner"], batches)
    assert similarities[2] == 1.0  # the main task's own cosine
    assert similarities[0] == pytest.approx(flattened_cosine(main, encoder_gradient(model, "pos", batches["pos"])), abs=1e-5)


def test_cosine_of_a_zero_gradient_is_undefined():
    assert cosine_similarity([torch.zeros(3)], [torch.ones(3)]) is None
    assert cosine_similarity([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]) == 0.0


def test_exponentiated_gradient_step_math():
    weights = np.array([0.25, 0.25, 0.5])
    gradients = [-0.5, 0.2, -1.0]
    expected = weights * np.exp(-2.0 * np.array(gradients))
    expected /= expected.sum()
    assert np.allclose(exponentiated_gradient_step(weights, gradients, 2.0), expected)


def test_step_size_semantics():
    assert weight_step_size(1.0, True, 30.0) == 1.0
    assert weight_step_size(0.5, False, 30.0) == 15.0


def test_large_steps_stay_on_the_simplex():
    weights = exponentiated_gradient_step([0.5, 0.3, 0.2], [-1.0, 1.0, 0.3], 1e6)
    assert np.all(weights > 0) and math.isclose(weights.sum(), 1.0) and np.all(np.isfinite(weights))
    assert weights[0] == pytest.approx(1.0)
    again = exponentiated_gradient_step(weights, [1.0, -1.0, 0.0], 1e6)  # a floored weight can recover
    assert again[1] == pytest.approx(1.0)


def test_undefined_gradient_keeps_that_weight():
    weights = exponentiated_gradient_step([0.2, 0.3, 0.5], [None, -1.0, 0.0], 1.0)
    assert weights[0] == pytest.approx(0.2)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] / weights[2] == pytest.approx(0.3 * math.e / 0.5)


def test_chunked_gradient_equals_one_batch_gradient(model_and_batches, tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    model, batches = model_and_batches
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sentences = read_sentences(f"{tiny_data_dir}/train_ner.txt", max_sentences=7)
    labels = read_labels(tiny_data_dir, "ner")
    features, _ = encode_sentences(tokenizer, sentences, {l: i for i, l in enumerate(labels)}, 32)
    whole = encoder_gradient(model, "ner", collate(features, tokenizer.pad_token_id))
    chunks = [collate(features[:3], tokenizer.pad_token_id), collate(features[3:], tokenizer.pad_token_id)]
    chunked = encoder_gradient(model, "ner", chunks)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_cached_features_are_in_the_splits_order(model_and_batches, tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    from utils_cross_task import load_task_split
    from weighted_training_basics import labelled_token_features

    model, _ = model_and_batches
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = load_task_split(tiny_data_dir, "ner", "train", tokenizer, read_labels(tiny_data_dir, "ner"), 32)
    features, labels, offsets = labelled_token_features(model, split, 5, torch.device("cpu"), tokenizer.pad_token_id)
    model.eval()
    for index in (0, 7, len(split) - 1):
        batch = collate([split.features[index]], tokenizer.pad_token_id)
        with torch.no_grad():
            hidden = model.encode(batch["input_ids"], batch["attention_mask"])
        labelled = batch["labels"] != -100
        rows = slice(int(offsets[index]), int(offsets[index + 1]))
        assert torch.allclose(features[rows], hidden[labelled], atol=1e-5)
        assert torch.equal(labels[rows], batch["labels"][labelled])


def test_batch_without_labelled_token_keeps_its_weight_and_warns(model_and_batches, tiny_model_dir, tiny_data_dir,
                                                                 caplog):
    from argparse import Namespace

    from tawt.cross_task_training import Run
    from utils_cross_task import EncodingReport, Feature, TaskSplit, load_task_split
    from weighted_training_basics import tawt_update
    from transformers import AutoTokenizer

    model, _ = model_and_batches
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    splits = {task: load_task_split(tiny_data_dir, task, "train", tokenizer, read_labels(tiny_data_dir, task), 32)
              for task in ("pos", "ner")}
    # A source whose sentences carry no label at all (only ignored positions): its gradient is zero.
    unlabelled = [Feature([2, 5, 3], [-100, -100, -100], index, []) for index in range(4)]
    splits["chunking"] = TaskSplit("chunking", "train", "none", [], unlabelled, EncodingReport())
    args = Namespace(gradient_sampling_batch_size=4, gradient_sampling_batches=1, weight_lr=1.0,
                     normalized_gradients=True, inv_constant=1.0, bf16=False, fp16=False)
    run = Run(args=args, paradigm="test", main_task="ner", tasks=["pos", "chunking", "ner"], device=torch.device("cpu"),
              data_dir=tiny_data_dir, model_name_or_path=tiny_model_dir,
              gradient_sampling_generator=torch.Generator().manual_seed(0), pad_token_id=tokenizer.pad_token_id)
    weights, similarities = tawt_update(model, run, np.array([0.2, 0.3, 0.5]), ["pos", "chunking", "ner"], "ner", splits)
    assert similarities.cosines[1] is None and similarities.cosines[2] == 1.0
    assert weights[1] == pytest.approx(0.3)
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(1.0)
    assert "cosine undefined for ['chunking']" in caplog.text


def update_run(tiny_model_dir, tiny_data_dir, batches, seed=5):
    """A Run for `tawt_update` with M = `batches` sampled batches of 4 sentences."""
    from argparse import Namespace

    from tawt.cross_task_training import Run

    args = Namespace(gradient_sampling_batch_size=4, gradient_sampling_batches=batches, weight_lr=1.0,
                     normalized_gradients=True, inv_constant=1.0, bf16=False, fp16=False)
    return Run(args=args, paradigm="test", main_task="ner", tasks=["pos", "chunking", "ner"],
               device=torch.device("cpu"), data_dir=tiny_data_dir, model_name_or_path=tiny_model_dir,
               gradient_sampling_generator=torch.Generator().manual_seed(seed), pad_token_id=0)


@pytest.fixture(scope="module")
def train_splits(tiny_model_dir, tiny_data_dir):
    from transformers import AutoTokenizer

    from utils_cross_task import load_task_split

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return {task: load_task_split(tiny_data_dir, task, "train", tokenizer, read_labels(tiny_data_dir, task), 32)
            for task in ("pos", "chunking", "ner")}


def test_one_sampled_batch_is_the_single_batch_update_bit_for_bit(model_and_batches, tiny_model_dir, tiny_data_dir,
                                                                  train_splits):
    """M = 1: the update draws one batch per task and steps on their cosines, exactly as before M existed."""
    from weighted_training_basics import gradient_batch_chunks, sample_batch_indices, tawt_update

    model, _ = model_and_batches
    tasks, weights = ["pos", "chunking", "ner"], np.array([0.2, 0.3, 0.5])
    new_weights, similarities = tawt_update(model, update_run(tiny_model_dir, tiny_data_dir, 1), weights, tasks,
                                            "ner", train_splits)
    # The single-batch update spelled out: one draw per task in order, one gradient each, their cosines.
    generator = torch.Generator().manual_seed(5)
    batches = {task: gradient_batch_chunks([train_splits[task].features[i] for i in
                                            sample_batch_indices(len(train_splits[task]), 4, generator)], 0, "cpu")
               for task in tasks}
    main = encoder_gradient(model, "ner", batches["ner"])
    expected_cosines = [cosine_similarity(main, encoder_gradient(model, task, batches[task])) for task in tasks[:2]]
    assert similarities.cosines == expected_cosines + [1.0]
    expected = exponentiated_gradient_step(weights, [-cosine for cosine in expected_cosines] + [-1.0], 1.0)
    assert new_weights.tolist() == expected.tolist()  # bit for bit
    assert similarities.batch_means == similarities.cosines and similarities.batch_stds == [None, None, None]


def test_several_sampled_batches_average_the_gradients_and_record_the_spread(model_and_batches, tiny_model_dir,
                                                                             tiny_data_dir, train_splits):
    from weighted_training_basics import gradient_batch_chunks, sample_batch_indices, tawt_update

    model, _ = model_and_batches
    tasks, weights = ["pos", "chunking", "ner"], np.full(3, 1 / 3)
    new_weights, similarities = tawt_update(model, update_run(tiny_model_dir, tiny_data_dir, 3), weights, tasks,
                                            "ner", train_splits)
    generator = torch.Generator().manual_seed(5)
    rounds = [{task: gradient_batch_chunks([train_splits[task].features[i] for i in
                                            sample_batch_indices(len(train_splits[task]), 4, generator)], 0, "cpu")
               for task in tasks} for _ in range(3)]
    gradients = {task: [encoder_gradient(model, task, batches[task]) for batches in rounds] for task in tasks}

    def mean(task):
        return [torch.stack(tensors).mean(0) for tensors in zip(*gradients[task])]

    for index, task in enumerate(tasks[:2]):
        assert similarities.cosines[index] == pytest.approx(cosine_similarity(mean("ner"), mean(task)), abs=1e-6)
        per_batch = [cosine_similarity(main, other) for main, other in zip(gradients["ner"], gradients[task])]
        assert similarities.batch_means[index] == pytest.approx(np.mean(per_batch), abs=1e-9)
        assert similarities.batch_stds[index] == pytest.approx(np.std(per_batch, ddof=1), abs=1e-9)
        assert similarities.batch_stds[index] > 0  # three different batches do not agree exactly
    assert similarities.cosines[2] == 1.0 and similarities.batch_stds[2] == 0.0
    expected = exponentiated_gradient_step(weights, [-cosine for cosine in similarities.cosines], 1.0)
    assert np.allclose(new_weights, expected)


@pytest.mark.parametrize("flag, value", [("--gradient_sampling_batches", "0"), ("--weight_update_steps", "-1")])
def test_sampling_and_schedule_flags_are_checked(flag, value):
    import run_weighted_joint
    from tawt.cross_task_training import UsageError

    with pytest.raises(UsageError, match=flag):
        run_weighted_joint.parse_arguments(["--output_dir", "unused", "--auxiliary_task_list", "pos", "--main_task",
                                            "ner", flag, value])


def test_ablated_cosines_give_the_closed_form_after_k_updates():
    """--ablate_source_cosines: the main task's cosine stays 1, every source's is 0, so after k updates of
    step s the main task's weight is w0 e^(k s) / (w0 e^(k s) + sum of the sources' w0), whatever was measured."""
    from weighted_training_basics import ablated_cosines

    tasks, start = ["pos", "chunking", "predicate", "ner"], np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(0)
    weights = start
    for updates in range(1, 6):
        measured = rng.uniform(-1, 1, size=3).tolist() + [1.0]
        cosines = ablated_cosines(measured, tasks, "ner")
        assert cosines == [0.0, 0.0, 0.0, 1.0]
        weights = exponentiated_gradient_step(weights, [-cosine for cosine in cosines], 0.7)
        main = start[3] * math.exp(0.7 * updates)
        assert weights[3] == pytest.approx(main / (main + start[:3].sum()), rel=1e-12)
        assert weights[:3] / weights[:3].sum() == pytest.approx(start[:3] / start[:3].sum(), rel=1e-12)
    # A main task whose gradient was zero keeps its weight (and so do the sources): nothing to follow.
    assert ablated_cosines([0.5, None], ["pos", "ner"], "ner") == [0.0, None]


def test_ablated_run_differs_from_tawt_only_in_the_sources_cosines(tiny_data_dir, tiny_model_dir, tmp_path):
    import json

    import run_weighted_joint
    from tests.test_scripts import common, weight_history

    def train(name, *extra):
        output = tmp_path / name
        run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
            "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--normalized_gradients",
            "--gradient_sampling_batch_size", "8", "--weight_update_steps", "3", "--logging_steps", "1",
            "--eval_main_task_only", "--report_to", "none", *extra])
        with open(output / "run_args.json") as handle:
            arguments = json.load(handle)["args"]
        with open(output / "training_log.jsonl") as handle:
            log = [json.loads(line) for line in handle]
        return weight_history(output), arguments, log

    tawt, tawt_args, tawt_log = train("tawt")
    ablated, ablated_args, ablated_log = train("ablated", "--ablate_source_cosines")
    assert ablated_args["ablate_source_cosines"] is True and tawt_args["ablate_source_cosines"] is False
    assert {name for name in tawt_args if tawt_args[name] != ablated_args[name]} == {"ablate_source_cosines",
                                                                                       "output_dir"}
    assert ablated["ablate_source_cosines"] is True and "ablate_source_cosines" not in tawt
    history = ablated["history"]
    assert len(history) == 7  # the start, then updates at steps 3 and 6 and after each 9-step epoch
    start = np.array(history[0]["weights"])
    for updates, entry in enumerate(history[1:], start=1):
        assert entry["weight_step_cosines"] == [0.0, 0.0, 1.0]
        main = start[2] * math.exp(updates)
        assert entry["weights"] == pytest.approx([start[0] / (main + start[:2].sum()),
                                                  start[1] / (main + start[:2].sum()), main / (main + start[:2].sum())])
    # Up to the first update both runs are the same run: the same losses, the same measured cosines; that
    # update differs only in the sources' cosines (TAWT's recomputed with them set to 0 gives the ablated one).
    first_update = history[1]["step"]
    assert [entry for entry in ablated_log if entry["step"] <= first_update] == \
        [entry for entry in tawt_log if entry["step"] <= first_update]
    measured = tawt["history"][1]["cosine_similarities"]
    assert history[1]["cosine_similarities"] == measured and measured[:2] != [0.0, 0.0]
    assert tawt["history"][1]["weights"] == pytest.approx(
        exponentiated_gradient_step(start, [-cosine for cosine in measured], 1.0).tolist())
    assert history[1]["weights"] == pytest.approx(exponentiated_gradient_step(start, [0.0, 0.0, -1.0], 1.0).tolist())
    assert tawt["history"][2]["weights"] != pytest.approx(history[2]["weights"])


@pytest.mark.parametrize("weighting", ["fixed", "gcs"])
def test_ablation_needs_the_tawt_update(weighting):
    import run_weighted_joint
    from tawt.errors import UsageError

    with pytest.raises(UsageError, match="--ablate_source_cosines"):
        run_weighted_joint.parse_arguments(["--output_dir", "unused", "--auxiliary_task_list", "pos", "--main_task",
                                            "ner", "--weighting", weighting, "--ablate_source_cosines"])


def test_ablated_normalized_joint_keeps_the_sources_normalized_proportions(tiny_data_dir, tiny_model_dir, tmp_path):
    import run_weighted_normalized_joint
    from tests.test_scripts import common, weight_history

    output = tmp_path / "ablated_normalized"
    run_weighted_normalized_joint.main(common(tiny_data_dir, tiny_model_dir, output) + [
        "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num", "8",
        "--normalized_gradients", "--gradient_sampling_batch_size", "8", "--eval_main_task_only",
        "--ablate_source_cosines"])
    record = weight_history(output)
    history = record["history"]
    start = np.array(history[0]["weights"])
    assert start[2] > start[0] == start[1]  # 1 / size: the main task's 8 sentences against 24 per source
    assert record["ablate_source_cosines"] is True and len(history) == 3
    for updates, entry in enumerate(history[1:], start=1):
        main = start[2] * math.exp(updates)
        assert entry["weights"] == pytest.approx((np.append(start[:2], main) / (main + start[:2].sum())).tolist())
