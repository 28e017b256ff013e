"""The training step: no host-device waits on ordinary steps, the first bad loss still named, and the
compiled forward (torch.compile, inductor on the CPU) training as the eager one does."""

import argparse
import json
import os

import pytest
import torch

from tawt.cross_task_training import Run
from tawt.run_arguments import add_common_arguments, add_multi_task_arguments
from modeling_multi_bert import MultiTaskTagger
from tawt.training_loop import Trainer, save_checkpoint
from utils_cross_task import Feature, Sentence, TaskSplit

# The operators by which the host reads a device value (and so waits for the device).
SYNCHRONISING_OPERATORS = ("aten::_local_scalar_dense", "aten::item")


def tiny_tagger(forward_path="unpadded", seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = BertModel(config, add_pooling_layer=False)
    return MultiTaskTagger(encoder, {"pos": ["a", "b", "c"], "ner": ["O", "B-X"]}, dropout=0.0,
                           forward_path=forward_path)


def splits(sizes, seed=0, longest=100):
    """Task splits of random sentences of 3 to `longest` tokens (first and last unlabelled, like [CLS] [SEP])."""
    generator = torch.Generator().manual_seed(seed)
    made = {}
    for task, (count, labels) in sizes.items():
        features = []
        for index in range(count):
            length = int(torch.randint(3, longest + 1, (1,), generator=generator))
            ids = torch.randint(5, 60, (length,), generator=generator).tolist()
            label_ids = [-100] + torch.randint(0, labels, (length - 2,), generator=generator).tolist() + [-100]
            features.append(Feature(ids, label_ids, index, []))
        made[task] = TaskSplit(task, "train", f"<{task}>", [Sentence(["w"], ["x"])] * count, features, None)
    return made


def make_run(output_dir, **overrides):
    parser = add_multi_task_arguments(add_common_arguments(argparse.ArgumentParser()))
    args = parser.parse_args(["--output_dir", str(output_dir), "--auxiliary_task_list", "pos", "--main_task", "ner",
                              "--per_gpu_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "0"])
    for name, value in overrides.items():
        setattr(args, name, value)
    return Run(args=args, paradigm="test", main_task="ner", tasks=["pos", "ner"], device=torch.device("cpu"),
               data_dir=None, model_name_or_path=None, gradient_sampling_generator=torch.Generator().manual_seed(1))


def within_optimizer_step(event):
    while event is not None:
        if event.name.startswith("Optimizer.step"):
            return True
        event = event.cpu_parent
    return False


def synchronising_operators(function):
    """The reads of a tensor's value that `function` makes, outside the optimizer's step.

    AdamW keeps its step counters on the host (on a GPU too, unless fused or capturable) and reads them
    there; on the CPU every tensor is a host tensor, so those reads show up as `item` calls but wait for
    nothing. Everything else is counted.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        function()
    return sum(1 for event in profile.events()
               if event.name in SYNCHRONISING_OPERATORS and not within_optimizer_step(event))


@pytest.mark.parametrize("forward_path", ["unpadded", "bucketed"])
def test_ordinary_training_steps_never_read_a_device_value(tmp_path, forward_path):
    """Profiled epochs of 4 and of 12 steps (no logging step, no checkpoint) read device values equally
    often: the losses are read once, at the epoch's end, and no ordinary step reads anything."""
    model = tiny_tagger(forward_path)
    counts = {}
    for steps in (4, 12):
        run = make_run(tmp_path)
        trainer = Trainer(model, run, total_steps=100, stage="test")
        task_splits = splits({"pos": (2 * steps, 3), "ner": (2 * steps, 2)}, longest=20)
        counts[steps] = synchronising_operators(lambda: trainer.train_epoch(task_splits, {"pos": 0.5, "ner": 0.5}, 0))
        assert trainer.global_step == steps
    assert counts[4] == counts[12] <= 1
    # The one read the epoch makes is the loss for the log: there is a record of it.
    record = json.loads((tmp_path / "training_log.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 12 and record["loss"] > 0


def test_a_nan_loss_is_reported_at_the_first_bad_step_though_read_later(tmp_path):
    """The losses are read only at the epoch's end here; the error still names the first step whose loss
    was NaN (the first ner batch: its head gives NaN), its task and its batch, not a later one."""
    from utils_cross_task import epoch_batches

    model = tiny_tagger()
    with torch.no_grad():
        model.head("ner").bias.fill_(float("nan"))
    run = make_run(tmp_path)
    trainer = Trainer(model, run, total_steps=100, stage="test")
    task_splits = splits({"pos": (16, 3), "ner": (8, 2)}, longest=20)
    order = epoch_batches({task: len(split) for task, split in task_splits.items()}, 4, run.data_order_generator("test", 0))
    first_ner = next(step for step, (task, _) in enumerate(order, start=1) if task == "ner")
    assert first_ner > 1 and any(task == "pos" for task, _ in order[first_ner:])  # later steps are bad too
    with pytest.raises(FloatingPointError) as error:
        trainer.train_epoch(task_splits, {"pos": 0.5, "ner": 0.5}, 0)
    indices = sorted(order[first_ner - 1][1])
    assert f"test epoch 1 step {first_ner}: the loss of task ner is nan on the batch of training sentences " \
           f"{indices}" in str(error.value)


def test_no_checkpoint_is_written_from_weights_that_are_not_finite(tmp_path):
    model = tiny_tagger()
    run = make_run(tmp_path)
    trainer = Trainer(model, run, total_steps=10, stage="test")
    save_checkpoint(run, model, trainer, 0, 0, [0.5, 0.5])
    with torch.no_grad():
        model.encoder.encoder.layer[0].output.dense.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="the model's weights are no longer finite; the last checkpoint is kept"):
        save_checkpoint(run, model, trainer, 0, 1, [0.5, 0.5])
    assert os.listdir(tmp_path / "checkpoints") == ["checkpoint-00000001.pt"]


def test_prefetched_batches_are_the_inline_ones_and_errors_reach_the_consumer():
    from utils_cross_task import prefetched

    items = list(range(7))
    made = list(prefetched(items, lambda item: {"x": torch.full((2,), item)}, torch.device("cpu")))
    assert [int(batch["x"][0]) for batch in made] == items

    def failing(item):
        if item == 3:
            raise ValueError("bad item 3")
        return {"x": torch.zeros(1)}

    with pytest.raises(ValueError, match="bad item 3"):
        list(prefetched(items, failing, torch.device("cpu")))
    early = prefetched(items, lambda item: {"x": torch.zeros(1)}, torch.device("cpu"), depth=1)
    next(early)
    early.close()  # a consumer that stops early (the step limit) ends the producer


def test_compiled_training_matches_eager_and_recompiles_a_bounded_number_of_times(tmp_path):
    """An epoch of 12 steps over sentences of 3 to 100 tokens (7 bucket lengths), compiled with inductor,
    gives the eager epoch's losses; the whole epoch and an evaluation pass compile at most 4 graphs."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from tawt.evaluation import predict

    task_splits = splits({"pos": (24, 3), "ner": (24, 2)}, seed=3)
    lengths = {-(-len(feature.input_ids) // 16) * 16 for split in task_splits.values() for feature in split.features}
    assert len(lengths) >= 6
    losses = {}
    for compiled in (False, True):
        output = tmp_path / ("compiled" if compiled else "eager")
        output.mkdir()
        model = tiny_tagger("bucketed")
        if compiled:
            torch._dynamo.reset()
            counters.clear()
            model.compile_encoder()
        run = make_run(output, logging_steps=1)
        trainer = Trainer(model, run, total_steps=100, stage="test")
        trainer.train_epoch(task_splits, {"pos": 0.5, "ner": 0.5}, 0)
        evaluation_split = TaskSplit("ner", "dev", "<ner>", task_splits["ner"].sentences, task_splits["ner"].features,
                                     None)
        _, losses[compiled, "evaluation"] = predict(model, "ner", evaluation_split, 8, run.device, 0,
                                                    run.autocast)
        losses[compiled] = [json.loads(line)["loss"] for line in (output / "training_log.jsonl").read_text().splitlines()]
    assert len(losses[True]) == 12
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert losses[True, "evaluation"] == pytest.approx(losses[False, "evaluation"], rel=1e-4)
    assert 1 <= counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])
