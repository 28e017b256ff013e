"""The public TAWT object (tawt/weighting.py): the same numbers as the paradigm scripts' update, any model,
state round trips, the random state, bfloat16 autocast, and two processes under torch.distributed."""

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import write_task_files, write_tiny_bert
from modeling_multi_bert import MultiTaskTagger, token_classification_loss
from tawt import TAWT, encoder_parameters
from utils_cross_task import collate, load_task_split, read_labels
from weighted_training_basics import compare_with_main_task, exponentiated_gradient_step, sample_gradient_batches

TASKS = ["pos", "chunking", "ner"]


@pytest.fixture(scope="module")
def tagger_and_splits(tmp_path_factory):
    from transformers import AutoTokenizer

    model_dir = write_tiny_bert(tmp_path_factory.mktemp("bert"))
    data_dir = write_task_files(tmp_path_factory.mktemp("data"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = {task: read_labels(data_dir, task) for task in TASKS}
    splits = {task: load_task_split(data_dir, task, "train", tokenizer, labels[task], 128) for task in TASKS}
    torch.manual_seed(0)
    return MultiTaskTagger.from_encoder(model_dir, labels), splits, tokenizer.pad_token_id


def tagger_loss(model):
    def loss_fn(task, batch):
        _, logits = model(task, batch["input_ids"], batch["attention_mask"])
        return token_classification_loss(logits, batch["labels"])

    return loss_fn


def test_the_update_is_the_paradigm_scripts_update(tagger_and_splits):
    """Same sampled batches, same cosines, same weight step as weighted_training_basics.py's update."""
    model, splits, pad_token_id = tagger_and_splits
    weighting = TAWT(TASKS, "ner", model=model, gradient_sampling_batch_size=12, seed=5)
    assert weighting.shared_parameters == model.encoder_parameters()
    rounds = weighting.sample_batches({task: splits[task].features for task in TASKS},
                                      lambda features: collate(features, pad_token_id))
    weights = weighting.update(tagger_loss(model), rounds)

    reference_rounds = sample_gradient_batches(splits, 12, torch.Generator().manual_seed(5), pad_token_id,
                                               torch.device("cpu"))
    reference = compare_with_main_task(model, "ner", TASKS, reference_rounds)
    assert weighting.cosines["ner"] == 1.0
    for task, cosine in zip(TASKS, reference.cosines):
        assert weighting.cosines[task] == pytest.approx(cosine, abs=1e-5)
    expected = exponentiated_gradient_step(np.full(3, 1 / 3), [-c for c in reference.cosines], 1.0)
    assert list(weights.values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert weights["ner"] > 1 / 3
    assert [entry["stage"] for entry in weighting.history] == ["initial", "step"]


class SharedAndHeads(torch.nn.Module):
    """A model of one's own: a shared linear map, and one scalar head per task."""

    def __init__(self, tasks, width=3):
        super().__init__()
        self.shared = torch.nn.Linear(width, width, bias=False)
        self.heads = torch.nn.ModuleDict({task: torch.nn.Linear(width, 1, bias=False) for task in tasks})

    def loss(self, task, batch):
        return self.heads[task](self.shared(batch)).mean()


def test_any_model_with_known_cosines():
    """Losses whose shared gradients are equal (cos 1) or opposite (cos -1) to the main task's: the step is
    w_t proportional to exp(cos_t), exactly; the loss multiplier is w_t * K; `.grad` is left alone."""
    model = SharedAndHeads(["main", "same", "opposite"])
    with torch.no_grad():
        model.heads["same"].weight.copy_(2 * model.heads["main"].weight)
        model.heads["opposite"].weight.copy_(-model.heads["main"].weight)
    weighting = TAWT(["same", "opposite", "main"], "main", model.shared.parameters())
    assert weighting.loss_multiplier("same") == pytest.approx(1.0)
    batch = torch.randn(4, 3)
    weights = weighting.update(model.loss, {task: batch for task in ["same", "opposite", "main"]})
    assert weighting.cosines == pytest.approx({"same": 1.0, "opposite": -1.0, "main": 1.0})
    expected = np.exp([1.0, -1.0, 1.0]) / np.exp([1.0, -1.0, 1.0]).sum()
    assert list(weights.values()) == pytest.approx(expected.tolist())
    loss = torch.tensor(2.0)
    assert weighting.weighted_loss("opposite", loss).item() == pytest.approx(2.0 * expected[1] * 3)
    assert model.shared.weight.grad is None

    # inv_constant scales the step instead of the normalised gradients (s = inv_constant)
    scaled = TAWT(["same", "opposite", "main"], "main", model.shared.parameters(), weight_lr=0.5, inv_constant=4)
    scaled.update(model.loss, {task: batch for task in ["same", "opposite", "main"]})
    expected = np.exp([2.0, -2.0, 2.0]) / np.exp([2.0, -2.0, 2.0]).sum()
    assert list(scaled.weights.values()) == pytest.approx(expected.tolist())


def test_pretraining_shape_the_target_is_not_weighted():
    model = SharedAndHeads(["main", "source"])
    weighting = TAWT(["source"], "main", model.shared.parameters())
    assert weighting.loss_multiplier("main") == 1.0
    with pytest.raises(KeyError, match="not one of the weighted tasks"):
        weighting.loss_multiplier("other")


def test_state_dict_round_trip_continues_exactly(tagger_and_splits):
    model, splits, pad_token_id = tagger_and_splits
    datasets = {task: splits[task].features for task in TASKS}

    def collate_fn(features):
        return collate(features, pad_token_id)

    def fresh():
        return TAWT(TASKS, "ner", model=model, gradient_sampling_batch_size=6, gradient_sampling_batches=2, seed=3)

    uninterrupted = fresh()
    for _ in range(2):
        uninterrupted.update(tagger_loss(model), uninterrupted.sample_batches(datasets, collate_fn))
    first = fresh()
    first.update(tagger_loss(model), first.sample_batches(datasets, collate_fn))
    saved = first.state_dict()
    resumed = fresh()
    resumed.load_state_dict(saved)
    assert resumed.weights == first.weights and resumed.cosines == first.cosines
    resumed.update(tagger_loss(model), resumed.sample_batches(datasets, collate_fn))
    assert resumed.history == uninterrupted.history
    assert all(len(entry["cosine_batch_mean"]) == 3 for entry in resumed.history[1:])  # two rounds: a spread
    with pytest.raises(ValueError, match="saved TAWT state is for tasks"):
        TAWT(["pos", "ner"], "ner", model=model).load_state_dict(saved)


def test_the_update_leaves_the_random_state_and_the_training_mode_alone(tagger_and_splits):
    model, splits, pad_token_id = tagger_and_splits
    model.train()
    weighting = TAWT(TASKS, "ner", model=model, gradient_sampling_batch_size=8)
    torch.manual_seed(11)
    weighting.update(tagger_loss(model), weighting.sample_batches(
        {task: splits[task].features for task in TASKS}, lambda features: collate(features, pad_token_id)))
    after_update = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after_update, torch.rand(3))
    assert model.training


def test_bfloat16_autocast_gives_float32_gradients_and_close_cosines(tagger_and_splits):
    model, splits, pad_token_id = tagger_and_splits
    datasets = {task: splits[task].features for task in TASKS}

    def run(autocast):
        weighting = TAWT(TASKS, "ner", model=model, gradient_sampling_batch_size=12, autocast=autocast)
        weighting.update(tagger_loss(model), weighting.sample_batches(
            datasets, lambda features: collate(features, pad_token_id)))
        return weighting.cosines

    full = run(None)
    mixed = run(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    for task in TASKS:
        assert math.isfinite(mixed[task])
        assert mixed[task] == pytest.approx(full[task], abs=0.05)


def test_encoder_parameters_of_a_hugging_face_model_and_a_plain_one(tmp_path):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(write_tiny_bert(tmp_path / "bert"), num_labels=3)
    shared = encoder_parameters(model)
    assert len(shared) == len(list(model.base_model.parameters()))
    assert all(parameter is not model.classifier.weight for parameter in shared)
    with pytest.raises(ValueError, match="shared_parameters"):
        encoder_parameters(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------------
# Two processes (gloo): each holds a share of every sampled batch; the update must be that of the whole batch.


class Toy(torch.nn.Module):
    def __init__(self, tasks):
        super().__init__()
        torch.manual_seed(0)
        self.shared = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
        self.heads = torch.nn.ModuleDict({task: torch.nn.Linear(8, 1) for task in tasks})

    def loss(self, task, batch):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.heads[task](self.shared(inputs)).squeeze(-1), targets)


def toy_datasets(tasks):
    generator = torch.Generator().manual_seed(1)
    return {task: [(torch.randn(4, generator=generator), torch.randn((), generator=generator)) for _ in range(20)]
            for task in tasks}


def stack(examples):
    return torch.stack([inputs for inputs, _ in examples]), torch.stack([target for _, target in examples])


def toy_updates(updates=2):
    tasks = ["a", "b", "main"]
    model = Toy(tasks)
    # 5 examples a batch: shares of 3 and 2, so the shares' losses must be weighted by their sizes.
    weighting = TAWT(tasks, "main", model.shared.parameters(), gradient_sampling_batch_size=5, seed=2)
    for _ in range(updates):
        weighting.update(model.loss, weighting.sample_batches(toy_datasets(tasks), stack))
    return weighting


def _distributed_worker(rank, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        weighting = toy_updates()
        torch.save({"history": weighting.history, "weights": weighting.weights}, results[rank])
    finally:
        dist.destroy_process_group()


def test_two_processes_compare_the_whole_sampled_batch_and_agree(tmp_path):
    results = [str(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    ranks = [torch.load(path, weights_only=True) for path in results]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    single = toy_updates()
    for entry, reference in zip(ranks[0]["history"][1:], single.history[1:]):
        assert entry["cosine_similarities"] == pytest.approx(reference["cosine_similarities"], abs=1e-5)
        assert entry["weights"] == pytest.approx(reference["weights"], abs=1e-6)
    assert not os.environ.get("WORLD_SIZE")


def test_the_readme_loop_runs_as_printed(capsys):
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as handle:
        section = handle.read().split("## TAWT in your own training loop", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    weighting = namespace["weighting"]
    assert [entry["stage"] for entry in weighting.history] == ["initial", "epoch", "epoch", "epoch"]
    assert max(weighting.weights, key=weighting.weights.get) == "ner"
    assert capsys.readouterr().out.count("'ner'") == 6
