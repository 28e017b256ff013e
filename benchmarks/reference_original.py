"""The original code's approach (TAWT research code, 2020), kept here as the benchmarks' baseline.

Each function mirrors what the original did, on this project's model and batches, so that a benchmark
compares approaches and not models:
- every sentence padded to --max_seq_length (128) sub-tokens, and run through the encoder's own forward
  (never this project's unpadded one: `padded_forward`);
- the task gradient taken on a deep copy of the model, then flattened into a Python list
  (`extend(list(gradient.view(-1).cpu().data.numpy()))`), turned into a numpy array, the cosine computed
  with numpy (`get_cosine`), every source's array kept until the end;
- the main head fitted on the frozen encoder by running the encoder at every step;
- evaluation accumulating logits with `np.append` after every batch.
"""

import contextlib
import copy
import functools

import numpy as np
import torch
from torch.autograd import grad

from utils_cross_task import IGNORED_LABEL_ID, epoch_batches

from tawt.benchmarks.workloads import collate_padded_to_max_length


@contextlib.contextmanager
def padded_forward(model):
    """The model computing on every padded position, as the original's encoder did."""
    forward_path = model.forward_path
    model.forward_path = "encoder"
    try:
        yield model
    finally:
        model.forward_path = forward_path


def on_padded_forward(function):
    """`function(model, ...)` run with `padded_forward(model)`."""
    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        with padded_forward(model):
            return function(model, *args, **kwargs)
    return wrapper


def get_flatten_vectors(gradients_tensors):
    flatten_vectors = []
    for gradient_parts in gradients_tensors:
        if gradient_parts is not None:
            flatten_vectors.extend(list(gradient_parts.view(-1).cpu().data.numpy()))
    return flatten_vectors


def get_average_feature_gradients(static_model, task, batch, autocast=contextlib.nullcontext):
    """The original's gradient: a deep copy of the model, dropout off, one batch, encoder parameters.

    `autocast`: the forward's precision context, the same as the implementation it is compared with."""
    model = copy.deepcopy(static_model)
    for param in model.encoder.parameters():
        param.requires_grad = True
    model.eval()
    with autocast():
        loss, _ = model(task, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return grad(loss, model.encoder.parameters(), retain_graph=False, create_graph=False, allow_unused=True)


def get_cosine(a, b):
    return np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))


@on_padded_forward
def weight_update(model, batches, auxiliary_tasks, main_task, task_weights, weight_lr=1.0,
                  autocast=contextlib.nullcontext):
    """One TAWT weight update of weighted joint training, as the original computed it.

    `batches` are padded to 128. Returns (new weights, seconds spent outside the forward/backward passes).
    """
    import time

    outside_gradients = 0.0
    source_gradients = []
    for task in auxiliary_tasks:
        gradients = get_average_feature_gradients(model, task, batches[task], autocast)
        start = time.perf_counter()
        source_gradients.append(np.array(get_flatten_vectors(list(gradients))))
        outside_gradients += time.perf_counter() - start
    gradients = get_average_feature_gradients(model, main_task, batches[main_task], autocast)
    start = time.perf_counter()
    target = np.array(get_flatten_vectors(list(gradients)))
    task_weights_gradients = [-get_cosine(target, source) for source in source_gradients]
    task_weights_gradients.append(-get_cosine(target, target))
    task_weights = np.asarray(task_weights) * np.exp(-weight_lr * np.array(task_weights_gradients))
    task_weights = task_weights / task_weights.sum()
    outside_gradients += time.perf_counter() - start
    return task_weights, outside_gradients


@on_padded_forward
def fit_head_rerunning_encoder(model, task, split, run, generator):
    """The main head trained for one epoch with the encoder frozen but run again at every step."""
    args = run.args
    encoder_parameters = model.encoder_parameters()
    for parameter in encoder_parameters:
        parameter.requires_grad = False
    head = model.head(task)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.learning_rate, eps=args.adam_epsilon)
    model.train()
    try:
        for _, indices in epoch_batches({task: len(split)}, args.per_gpu_train_batch_size, generator):
            batch = collate_padded_to_max_length([split.features[index] for index in indices], run.pad_token_id)
            batch = {name: tensor.to(run.device) for name, tensor in batch.items()}
            with run.autocast():  # the same precision as the implementation it is compared with
                loss, _ = model(task, batch["input_ids"], batch["attention_mask"], batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), args.max_grad_norm)
            optimizer.step()
    finally:
        for parameter in encoder_parameters:
            parameter.requires_grad = True


@on_padded_forward
@torch.no_grad()
def predict_with_np_append(model, task, split, batch_size, device, pad_token_id):
    """The original's evaluation loop: batches in file order padded to 128, logits np.append-ed."""
    labels = model.task_labels[task]
    model.eval()
    preds, out_label_ids, eval_loss, steps = None, None, 0.0, 0
    for start in range(0, len(split.features), batch_size):
        batch = collate_padded_to_max_length(split.features[start : start + batch_size], pad_token_id)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        loss, logits = model(task, batch["input_ids"], batch["attention_mask"], batch["labels"])
        eval_loss += loss.item()
        steps += 1
        if preds is None:
            preds = logits.detach().float().cpu().numpy()  # numpy has no bfloat16
            out_label_ids = batch["labels"].detach().cpu().numpy()
        else:
            preds = np.append(preds, logits.detach().float().cpu().numpy(), axis=0)
            out_label_ids = np.append(out_label_ids, batch["labels"].detach().cpu().numpy(), axis=0)
    preds = np.argmax(preds, axis=2)
    preds_list = [[] for _ in range(out_label_ids.shape[0])]
    for i in range(out_label_ids.shape[0]):
        for j in range(out_label_ids.shape[1]):
            if out_label_ids[i, j] != IGNORED_LABEL_ID:
                preds_list[i].append(labels[preds[i][j]])
    return preds_list, eval_loss / max(1, steps)


class OriginalTrainingLoop:
    """The original's training loop (run_joint_training_multi.py's `train`), on this project's model.

    Its batches were collated before training (every sentence padded to 128; a list of every task's
    DataLoader batches, shuffled), so collation is not part of its steps. Each step: `model.train()`, the
    batch copied to the device, the encoder's own forward, `loss.backward()`, `tr_loss += loss.item()`
    (the host waits for the device at every step), gradient clipping, an AdamW step that updates one
    parameter at a time (transformers 2.8's AdamW did; torch's `foreach=False` is the same loop),
    the schedule, `model.zero_grad()`.
    """

    def __init__(self, model, args, total_steps):
        self.model, self.args = model, args
        no_decay = [parameter for parameter in model.parameters() if parameter.ndim < 2]
        decay = [parameter for parameter in model.parameters() if parameter.ndim >= 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.learning_rate, eps=args.adam_epsilon, foreach=False)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, (total_steps - step) / max(1, total_steps)))

    def epoch(self, batches, device):
        """One pass over `batches` ((task, batch padded to 128) pairs); returns the summed loss."""
        model, tr_loss = self.model, 0.0
        model.zero_grad()
        with padded_forward(model):
            for task, batch in batches:
                model.train()
                batch = {name: tensor.to(device) for name, tensor in batch.items()}
                loss, _ = model(task, batch["input_ids"], batch["attention_mask"], batch["labels"])
                loss.backward()
                tr_loss += loss.item()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                model.zero_grad()
        return tr_loss


def original_batches(task_splits, batch_size, generator, pad_token_id):
    """The original's list of batches: each task's sentences shuffled and cut, padded to 128, all shuffled."""
    return [(task, collate_padded_to_max_length([task_splits[task].features[index] for index in indices],
                                                pad_token_id))
            for task, indices in epoch_batches({task: len(split) for task, split in task_splits.items()}, batch_size,
                                               generator)]
