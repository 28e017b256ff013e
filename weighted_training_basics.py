"""Target-aware weighted training (TAWT): task gradients, their similarities, the weight update.

After each epoch (and, with --weight_update_steps N, every N steps), each weighted task t gets a gradient
G_t of its loss on one randomly drawn batch (or the mean over --gradient_sampling_batches M of them), taken
with respect to the shared encoder's parameters only: the heads are task-specific, so only the encoder
is where tasks can help or hurt each other. The weight gradient is g_t = -cos(G_main, G_t), and the
weights take one exponentiated-gradient (mirror descent) step on the probability simplex:
w_t <- w_t * exp(-weight_lr * s * g_t), renormalised.

The update runs through the public object `tawt.TAWT` (tawt/weighting.py), which the paradigm scripts and a
user's own training loop share; this module holds its math and the project's side of it (the encoder
gradient of a tagging task's loss, sampled batches as chunks, the throw-away head of weighted pre-training).
The cosines are computed where the gradients live (the GPU), one parameter tensor at a time and
accumulated in float32: the encoder is never flattened into one vector, let alone into host memory, and
with one batch at most two encoder gradients (the main task's and the current task's) exist at once.
"""

import contextlib
import copy
import logging
import math
from typing import NamedTuple

import numpy as np
import torch

from tawt import distributed
from modeling_multi_bert import dropout_off, token_classification_loss
from tawt.training_loop import adamw_with_linear_schedule
from utils_cross_task import IGNORED_LABEL_ID, collate, epoch_batches

logger = logging.getLogger(__name__)


def sample_batch_indices(num_examples, batch_size, generator):
    """Indices of one batch drawn without replacement, from a generator of its own.

    The sampler has its own seeded generator so drawing these batches never disturbs the training data
    order (a resumed run and an uninterrupted one must see the same batches).
    """
    return torch.randperm(num_examples, generator=generator)[: min(batch_size, num_examples)].tolist()


# The sampled batch is run as length-sorted chunks of this many sentences: the same gradient as one padded
# batch (the chunk losses are summed before one backward pass), with far less padding to compute.
GRADIENT_CHUNK_SENTENCES = 16


def encoder_gradient(model, task, batch, autocast=contextlib.nullcontext, extra_parameters=()):
    """Gradient of `task`'s mean loss on `batch` w.r.t. the encoder's parameters, with dropout off.

    `batch` is one collated batch or a list of them (chunks of one sampled batch): the loss is the mean
    over all their labelled tokens, as if they were one batch. Returns one tensor per encoder parameter
    (zeros where the loss does not reach a parameter), then one per `extra_parameters` (GCS as Du et al.
    define it also takes the main task's head). Uses torch.autograd.grad, so the model is neither
    copied nor are its `.grad` buffers touched: this can run between training steps without disturbing
    the optimizer.
    """
    chunks = batch if isinstance(batch, list) else [batch]
    parameters = list(model.encoder_parameters()) + list(extra_parameters)
    with dropout_off(model):  # the similarity is about the tasks, not about random masks
        loss = chunked_batch_loss(model, task, chunks, autocast)
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(parameters, gradients)]


def labelled_tokens(chunks):
    """The labelled tokens of a sampled batch's chunks: what its mean loss is a mean over."""
    return sum(int((chunk["labels"] != IGNORED_LABEL_ID).sum()) for chunk in chunks)


def chunked_batch_loss(model, task, chunks, autocast=contextlib.nullcontext):
    """`task`'s mean loss over all labelled tokens of `chunks` (one sampled batch, run chunk by chunk)."""
    labelled = labelled_tokens(chunks)
    loss = 0.0
    for chunk in chunks:
        with autocast():
            _, logits = model(task, chunk["input_ids"], chunk["attention_mask"],
                              token_type_ids=chunk.get("token_type_ids"))
        chunk_loss = token_classification_loss(logits, chunk["labels"], reduction="sum")
        loss = loss + chunk_loss / max(1, labelled)  # no labelled token: a zero gradient
    return loss


def gradient_dot_and_norms(first, second):
    """(<first, second>, |first|^2, |second|^2) over all tensors together, accumulated in float32."""
    dot = torch.zeros((), dtype=torch.float32, device=first[0].device)
    first_squared = torch.zeros_like(dot)
    second_squared = torch.zeros_like(dot)
    for a, b in zip(first, second):
        a, b = a.float(), b.float()
        dot += torch.sum(a * b)
        first_squared += torch.sum(a * a)
        second_squared += torch.sum(b * b)
    return dot, first_squared, second_squared


def cosine_similarity(first, second):
    """Cosine between two gradients given as lists of tensors; None where a gradient is zero (undefined)."""
    dot, first_squared, second_squared = (value.item() for value in gradient_dot_and_norms(first, second))
    if not all(math.isfinite(value) for value in (dot, first_squared, second_squared)):
        logger.warning("a gradient's dot product or norm is not finite (%s, %s, %s): its loss or gradient "
                       "overflowed (under --fp16, try --bf16); the cosine is undefined", dot, first_squared,
                       second_squared)
        return None
    if first_squared == 0.0 or second_squared == 0.0:
        return None
    return max(-1.0, min(1.0, dot / math.sqrt(first_squared * second_squared)))


class TaskSimilarities(NamedTuple):
    """cos(G_main, G_t) for each weighted task, in order; None where undefined (a zero gradient).

    `cosines` are those of the task gradients averaged over the M sampled batches: what the weight step
    uses. `batch_means` and `batch_stds` are the mean and the sample standard deviation of the M batches'
    own cosines (each batch's main-task gradient against the task's gradient on the same round): how much
    one batch's cosine varies. With M = 1 the mean is the cosine and the spread is None.
    """

    cosines: list
    batch_means: list
    batch_stds: list


def compare_with_main_task(model, main_task, weighted_tasks, batch_rounds, autocast=contextlib.nullcontext):
    """The TaskSimilarities of `weighted_tasks` with `main_task`, over M rounds of sampled batches, on the
    model's encoder gradients (see `compare_gradients`)."""
    return compare_gradients(lambda task, batch: encoder_gradient(model, task, batch, autocast), main_task,
                             weighted_tasks, batch_rounds)


def compare_gradients(gradient_of, main_task, weighted_tasks, batch_rounds):
    """The TaskSimilarities of `weighted_tasks` with `main_task`, over M rounds of sampled batches.

    `gradient_of(task, batch)` is a task's gradient (a list of tensors) on one batch. `batch_rounds` is a
    list of M dicts, each mapping every task (the main task included) to one sampled batch. The main task's
    own cosine is exactly 1 by definition: it is not computed. Memory: the M main-task gradients and their
    sum are kept, and one task at a time holds its running sum and its current batch's gradient: at most
    M + 3 gradients exist at once (2 with M = 1).
    """
    main_gradients = [gradient_of(main_task, batches[main_task]) for batches in batch_rounds]
    main_batch_is_zero = [is_zero_gradient(gradient) for gradient in main_gradients]
    main_sum = summed_gradients(main_gradients)
    main_is_zero = main_batch_is_zero[0] if len(main_gradients) == 1 else is_zero_gradient(main_sum)
    cosines, batch_cosines = [], []
    for task in weighted_tasks:
        if task == main_task:
            cosines.append(None if main_is_zero else 1.0)
            batch_cosines.append([None if zero else 1.0 for zero in main_batch_is_zero])
            continue
        task_sum, per_batch = None, []
        for main_gradient, batches in zip(main_gradients, batch_rounds):
            task_gradient = gradient_of(task, batches[task])
            per_batch.append(cosine_similarity(main_gradient, task_gradient))
            if task_sum is None:
                task_sum = task_gradient
            else:
                torch._foreach_add_(task_sum, task_gradient)
            del task_gradient  # keep one batch's gradient and the running sum alive, no more
        # With one batch the cosine of the "averages" is that batch's cosine, already computed.
        cosines.append(per_batch[0] if len(per_batch) == 1 else cosine_similarity(main_sum, task_sum))
        batch_cosines.append(per_batch)
        del task_sum
    spreads = [mean_and_spread(values) for values in batch_cosines]
    return TaskSimilarities(cosines, [mean for mean, _ in spreads], [spread for _, spread in spreads])


def summed_gradients(gradients):
    """The sum of gradients given as lists of tensors (the only one itself when there is one).

    The cosine is scale-free, so the sum stands for the mean.
    """
    if len(gradients) == 1:
        return gradients[0]
    total = [tensor.clone() for tensor in gradients[0]]
    for gradient in gradients[1:]:
        torch._foreach_add_(total, gradient)
    return total


def is_zero_gradient(gradient):
    return sum(torch.sum(g.float() * g.float()) for g in gradient).item() == 0.0


def mean_and_spread(cosines):
    """(mean, sample standard deviation) of the defined cosines; None where there are too few of them."""
    defined = [cosine for cosine in cosines if cosine is not None]
    if not defined:
        return None, None
    mean = float(np.mean(defined))
    return mean, float(np.std(defined, ddof=1)) if len(defined) > 1 else None


def similarities_to_main_task(model, main_task, weighted_tasks, batches, autocast=contextlib.nullcontext):
    """cos(G_main, G_t) for each weighted task on one batch per task (`batches`: task -> batch)."""
    return compare_with_main_task(model, main_task, weighted_tasks, [batches], autocast).cosines


def weight_step_size(weight_lr, normalized_gradients, inv_constant):
    """The multiplier of g_t in the exponent: weight_lr * s, s = 1 (--normalized_gradients) or --inv_constant."""
    scale = 1.0 if normalized_gradients else inv_constant
    return weight_lr * scale


def exponentiated_gradient_step(weights, weight_gradients, step_size):
    """One mirror-descent step on the simplex: w_t * exp(-step_size * g_t), renormalised.

    Computed in log space as a softmax, so it is exact for any finite step size: the gradients are
    taken relative to the one the step favours most (exp(-step_size * g_min) cancels in the
    normalisation), so step_size * (g_t - g_min) is never negative, and where it overflows to infinity
    the task's weight rightly goes to the floor. Weights are floored at the smallest positive double so
    they stay positive (a weight of exactly 0 could never recover). A gradient of None keeps that task's
    weight as it is; the other tasks share the rest of the mass.
    """
    weights = np.asarray(weights, dtype=np.float64)
    kept = np.array([g is None for g in weight_gradients])
    if kept.all():
        return weights.copy()
    gradients = np.array([0.0 if g is None else g for g in weight_gradients], dtype=np.float64)
    if not np.all(np.isfinite(gradients)) or not math.isfinite(step_size):
        raise ValueError(f"weight gradients and step size must be finite, got {gradients.tolist()}, {step_size}")
    stepped = gradients[~kept]
    favoured = stepped.min() if step_size >= 0 else stepped.max()
    with np.errstate(over="ignore"):
        # Halved first so that the difference itself never overflows (and 0 * inf never makes a NaN).
        exponent = np.log(weights[~kept]) - 2.0 * (step_size * (stepped / 2 - favoured / 2))
    exponent -= exponent.max()
    updated = np.exp(exponent)
    updated /= updated.sum()
    new_weights = weights.copy()
    new_weights[~kept] = updated * (1.0 - weights[kept].sum())
    new_weights = np.maximum(new_weights, np.finfo(np.float64).tiny)
    return new_weights / new_weights.sum()


def gradient_batch_chunks(features, pad_token_id, device):
    """A sampled batch as length-sorted chunks of GRADIENT_CHUNK_SENTENCES, collated, on `device`."""
    features = sorted(features, key=lambda feature: len(feature.input_ids))
    return [
        {name: tensor.to(device) for name, tensor in collate(features[start : start + GRADIENT_CHUNK_SENTENCES],
                                                              pad_token_id).items()}
        for start in range(0, len(features), GRADIENT_CHUNK_SENTENCES)
    ]


def sample_gradient_batches(task_splits, batch_size, generator, pad_token_id, device, rounds=1):
    """`rounds` independent draws of one random batch of `batch_size` sentences per task.

    Returns a list of `rounds` dicts (task -> the batch as chunks for `encoder_gradient`). Each round draws
    the tasks in order from `generator`, so one round draws exactly what a single batch per task draws.
    """
    batch_rounds = []
    for _ in range(rounds):
        batches = {}
        for task, split in task_splits.items():
            indices = sample_batch_indices(len(split.features), batch_size, generator)
            batches[task] = gradient_batch_chunks([split.features[index] for index in indices], pad_token_id,
                                                  device)
        batch_rounds.append(batches)
    return batch_rounds


def tawt_update(model, run, weights, weighted_tasks, main_task, task_splits, generator=None):
    """The whole TAWT weight update, through `tawt.TAWT`: sample, compare with the main task, step.

    Returns (new weights, TaskSimilarities). `weights` are over `weighted_tasks` (which hold the main task
    in joint training, not in weighted pre-training); `run` gives the arguments, device, precision and the
    sampler's own generator (`generator`, when given, draws the batches instead). Each task's gradient is
    averaged over --gradient_sampling_batches batches. Every process calls it: in a multi-process run each
    computes the gradients of its share of the sampled batches, the shares are summed, and every process
    ends with the main process's weights.
    """
    tawt = run_tawt(model, run, weighted_tasks, main_task, weights, generator)
    splits = {task: task_splits[task].features for task in tawt.sampled_tasks()}
    batches = tawt.sample_batches(splits, lambda features: gradient_batch_chunks(features, run.pad_token_id,
                                                                                 run.device))
    def ablated(cosines):
        step_cosines = ablated_cosines(cosines, weighted_tasks, main_task)
        # The measured cosines stay in the history (cosine_similarities); the step uses these.
        run.weight_history.add_to_next_entry(weight_step_cosines=step_cosines)
        return step_cosines

    tawt.update(lambda task, chunks: chunked_batch_loss(model, task, chunks), batches,
                step_cosines=ablated if getattr(run.args, "ablate_source_cosines", False) else None)
    return np.array([tawt.weights[task] for task in weighted_tasks]), tawt.similarities


def run_tawt(model, run, weighted_tasks, main_task, weights, generator=None):
    """A `tawt.TAWT` with the run's settings and precision, starting from `weights`, drawing its batches from
    `generator` (default: the run's gradient-sampling generator, which the checkpoints save)."""
    from tawt.weighting import TAWT  # tawt.weighting builds on this module's math: imported at use

    args = run.args
    return TAWT(weighted_tasks, main_task, model=model, weight_lr=args.weight_lr,
                inv_constant=None if args.normalized_gradients else args.inv_constant, initial_weights=weights,
                gradient_sampling_batch_size=args.gradient_sampling_batch_size,
                gradient_sampling_batches=args.gradient_sampling_batches,
                generator=generator or run.gradient_sampling_generator, autocast=run.autocast,
                count_items=labelled_tokens)


def ablated_cosines(cosines, weighted_tasks, main_task):
    """--ablate_source_cosines: every source's cosine replaced by 0, the main task's kept (1, or None where its
    gradient is zero). The main task's weight then follows TAWT's schedule while the sources share the rest in
    their starting proportions: what the update would do if the similarities carried no information.

    After k updates of step size s from w_0: w_main = w_0,main e^(k s) / (w_0,main e^(k s) + sum of w_0,source).
    """
    return [cosine if task == main_task else 0.0 for task, cosine in zip(weighted_tasks, cosines)]


def weight_gradients(cosines):
    """g_t = -cos(G_main, G_t); None (keep the weight) where the cosine is undefined."""
    return [None if cosine is None else -cosine for cosine in cosines]


@torch.no_grad()
def labelled_token_features(model, split, batch_size, device, pad_token_id, autocast=contextlib.nullcontext):
    """The encoder's states at every labelled position of `split`, with their labels, grouped by feature.

    Returns (features [tokens, hidden] in float32, labels [tokens], offsets: a list of len(split) + 1
    ints, on the host): the labelled tokens of feature i are rows offsets[i]:offsets[i + 1]. Only
    labelled positions are kept:
    a token-level head never looks at the others, so caching them would only cost memory.
    """
    # Batches of similar lengths pad little; the rows are put back in the split's order at the end.
    order = sorted(range(len(split.features)), key=lambda index: len(split.features[index].input_ids))
    states, labels, counts = [], [], []
    with dropout_off(model):
        for start in range(0, len(order), batch_size):
            features = [split.features[index] for index in order[start : start + batch_size]]
            batch = model.collate_batch(features, pad_token_id, rows=batch_size)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            with autocast():
                hidden = model.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_index"),
                                      batch.get("token_type_ids"))
                # A sentence-level task's head reads one pooled state per example (its one labelled position).
                hidden = model.task_states(split.task, hidden, batch["attention_mask"])
            labelled = (batch["labels"] != IGNORED_LABEL_ID)[: len(features)]  # rows past them: bucket padding
            states.append(hidden[: len(features)][labelled].float())
            labels.append(batch["labels"][: len(features)][labelled])
            counts.append(labelled.sum(dim=1))
    sorted_counts = torch.cat(counts).tolist()  # labelled tokens of each feature, in `order`
    states_by_feature = torch.cat(states).split(sorted_counts)
    labels_by_feature = torch.cat(labels).split(sorted_counts)
    # For each feature of the split, in the split's order, its position in `order`.
    positions = sorted(range(len(order)), key=lambda position: order[position])
    offsets = [0]
    for position in positions:
        offsets.append(offsets[-1] + sorted_counts[position])
    return (torch.cat([states_by_feature[p] for p in positions]),
            torch.cat([labels_by_feature[p] for p in positions]), offsets)


def fit_head_on_frozen_encoder(model, task, split, run, generator, epochs=1):
    """A copy of `task`'s head, trained for `epochs` epochs (weighted pre-training: one) on the frozen encoder.

    As in the original, the model's own head is left as it is: every epoch's fit starts from the untouched
    head, and fine-tuning later starts from it too (a head trained here for extra epochs would give
    weighted pre-training a head start that plain pre-training never gets). The copy is trained like a
    training stage of its own: AdamW with --learning_rate, --weight_decay (default 0) and a linear decay
    to 0 over the fit's steps; `generator` orders the batches; the global random state (the dropout
    masks) is left as it was, so later training sees the same randomness as in an unweighted run.

    The encoder's states for the task's training set are computed once, with the encoder in eval mode,
    and the head is trained on them: the encoder runs once instead of at every step. Relative to
    re-running a frozen encoder in training mode at each step, the only difference is the encoder's own
    dropout: its states are the deterministic, dropout-free ones, while the head's dropout still applies
    to them. In a multi-process run the main process fits the copy and broadcasts it, so every process
    holds the same one. Returns (fitted head, mean training loss of the fit's last epoch).
    """
    head = copy.deepcopy(model.head(task))
    mean_loss = None
    if distributed.is_main_process():
        with untouched_random_state(run.device):
            mean_loss = _fit_head(model, head, task, split, run, generator, epochs)
    distributed.broadcast_parameters(head)
    return head, mean_loss


def untouched_random_state(device):
    """A block whose random draws (dropout) leave the global generators as they were before it."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else [])


def _fit_head(model, head, task, split, run, generator, epochs):
    args = run.args
    features, labels, offsets = labelled_token_features(
        model, split, args.per_gpu_eval_batch_size, run.device, run.pad_token_id, run.autocast,
    )
    batches = [batch for _ in range(epochs)
               for batch in epoch_batches({task: len(split)}, args.per_gpu_train_batch_size, generator)]
    last_epoch_start = len(batches) - len(batches) // epochs
    optimizer, scheduler = adamw_with_linear_schedule(head.parameters(), args, len(batches), run.device)
    was_training = model.training
    model.train()  # the dropout before the head is on, as in training
    losses = []
    # Every step's rows are known on the host and go to the device at once: the steps never wait for it.
    step_rows = [np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices]) for _, indices in batches]
    step_ends = np.cumsum([len(rows) for rows in step_rows]).tolist()
    all_rows = torch.from_numpy(np.concatenate(step_rows).astype(np.int64)).to(run.device)
    for step, end in enumerate(step_ends):
        rows = all_rows[end - len(step_rows[step]) : end]
        if len(rows) == 0:
            scheduler.step()
            continue
        logits = head(model.dropout(features[rows]))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm > 0:  # 0 turns clipping off, as in training
            torch.nn.utils.clip_grad_norm_(head.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if step >= last_epoch_start:
            losses.append(loss.detach())
    model.train(was_training)
    return torch.stack(losses).mean().item() if losses else float("nan")
