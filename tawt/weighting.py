"""TAWT's task weighting as an object, for any PyTorch model whose tasks share some parameters.

Two calls, as in a training loop (FAMO's shape): `weighted_loss(task, loss)` at every step, and
`update(loss_fn, batches)` every so often (the paper: after each epoch). The update compares each weighted
task's gradient on the shared parameters with the target task's, cos(G_main, G_t), and takes one
exponentiated-gradient step on the simplex, w_t <- w_t * exp(-weight_lr * s * (-cos)), renormalised.

The math is that of weighted_training_basics.py (cosines accumulated in float32 tensor by tensor, the step
in log space); this object takes the task's loss from a callable, `loss_fn(task, batch) -> loss`, so that any
model's signature fits, and makes the update hold under DistributedDataParallel. The paradigm scripts update
their weights through it too (weighted_training_basics.tawt_update).
"""

import contextlib
import logging

import numpy as np
import torch
import torch.distributed as dist

from weighted_training_basics import (
    TaskSimilarities, compare_gradients, exponentiated_gradient_step, sample_batch_indices, untouched_random_state,
    weight_gradients, weight_step_size,
)

logger = logging.getLogger(__name__)

# The paper's size of a gradient-sampling batch (sentences).
GRADIENT_SAMPLING_BATCH_SIZE = 64


def encoder_parameters(model):
    """The trainable parameters a model's tasks share: its encoder's.

    This project's MultiTaskTagger says so itself (`encoder_parameters()`); a Hugging Face model's encoder
    is its `base_model` (the heads sit outside it); otherwise a module called `encoder`.
    """
    if hasattr(model, "encoder_parameters"):
        return list(model.encoder_parameters())
    base_model = getattr(model, "base_model", None)
    encoder = base_model if isinstance(base_model, torch.nn.Module) and base_model is not model else None
    encoder = encoder if encoder is not None else getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise ValueError(f"cannot tell which parameters of {type(model).__name__} the tasks share: it has no "
                         "`base_model` or `encoder` module; pass shared_parameters=[...] yourself")
    return [parameter for parameter in encoder.parameters() if parameter.requires_grad]


def _world():
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def count_examples(batch):
    """The number of examples in a batch: the first dimension of a tensor, of a dict's first value or of a
    tuple's first element ((inputs, targets)); the length of anything else (a list of examples)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return count_examples(next(iter(batch.values())))
    if isinstance(batch, tuple):
        return count_examples(batch[0])
    return len(batch)


def shared_gradient(loss_fn, task, batch, parameters, count_items=count_examples):
    """The gradient of `task`'s mean loss on a whole sampled batch w.r.t. `parameters`, in float32.

    Under DistributedDataParallel each process holds its share of the batch (None: an empty share): the
    share's gradient is weighted by its number of items (`count_items`), summed over the processes and
    divided by the total, so every process gets the gradient of the whole batch, not of its share. Uses
    torch.autograd.grad: the parameters' `.grad` buffers (the optimizer's) are left alone.
    """
    _, world_size = _world()
    items = 0 if batch is None else count_items(batch)
    gradient = None
    if items:
        loss = loss_fn(task, batch)
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        # The dot products are summed over ~10^8 terms: float32 even where the model computes in bfloat16.
        gradient = [torch.zeros_like(p, dtype=torch.float32) if g is None else g.detach().float()
                    for p, g in zip(parameters, gradients)]
    if world_size == 1:
        return gradient if gradient is not None else [torch.zeros_like(p, dtype=torch.float32) for p in parameters]
    if gradient is None:
        gradient = [torch.zeros_like(p, dtype=torch.float32) for p in parameters]
    total = torch.tensor([float(items)], dtype=torch.float32, device=parameters[0].device)
    dist.all_reduce(total)
    if items:
        torch._foreach_mul_(gradient, float(items))
    for tensor in gradient:
        dist.all_reduce(tensor)
    torch._foreach_div_(gradient, max(1.0, total.item()))
    return gradient


class TAWT:
    """Target-aware weighted training's task weights: the weighted loss, and their update.

    `tasks` are the weighted tasks, `main_task` the target. In joint training the target is one of the
    weighted tasks (its own cosine is 1); in weighted pre-training it is not (the weights are over the
    sources only), and its loss is left unweighted. `shared_parameters`: the parameters whose gradients
    are compared (default: `model`'s encoder, see `encoder_parameters`). `weight_lr` and `inv_constant`
    make the step size weight_lr * s, with s = 1 (`inv_constant=None`: the paper's normalised gradients) or
    s = inv_constant. Each update draws `gradient_sampling_batches` rounds of one batch of
    `gradient_sampling_batch_size` examples per task, from a generator of its own (`generator`, or one
    seeded with `seed`), so drawing them never moves the training's random state.

    `model`, when given, is put in eval mode during the update (the similarity is about the tasks, not
    about random dropout masks) and back after. `autocast`, when given, is a context manager factory the
    update's losses run in (e.g. `lambda: torch.autocast("cuda", torch.bfloat16)`); the gradients compared
    are float32 whatever the model computes in. `count_items(batch)` counts what a batch's mean loss is a
    mean over (default: its examples; for token classification, its labelled tokens), so that under
    DistributedDataParallel the processes' shares add up to the whole sampled batch's mean.

    Under DistributedDataParallel, build the object identically on every process (the same seed), call
    `update` on every process, and let `loss_fn` call the model itself, not its DDP wrapper (the update
    differentiates with torch.autograd.grad, which a DDP forward does not expect). Every process ends an
    update with the same weights: the gradients are all-reduced and the main process's weights broadcast.
    """

    def __init__(self, tasks, main_task, shared_parameters=None, *, model=None, weight_lr=1.0, inv_constant=None,
                 initial_weights=None, gradient_sampling_batch_size=GRADIENT_SAMPLING_BATCH_SIZE,
                 gradient_sampling_batches=1, seed=1, generator=None, autocast=None, count_items=count_examples):
        self.tasks = list(tasks)
        if len(set(self.tasks)) != len(self.tasks) or not self.tasks:
            raise ValueError(f"tasks {self.tasks}: give each weighted task once")
        self.main_task = main_task
        if shared_parameters is None:
            if model is None:
                raise ValueError("give the shared parameters (shared_parameters=[...]) or the model whose encoder "
                                 "they are (model=...)")
            shared_parameters = encoder_parameters(model)
        self.shared_parameters = list(shared_parameters)
        if not self.shared_parameters:
            raise ValueError("shared_parameters is empty: TAWT compares the tasks' gradients on these")
        self.model = model
        self.weight_lr = float(weight_lr)
        self.inv_constant = None if inv_constant is None else float(inv_constant)
        if gradient_sampling_batch_size < 1 or gradient_sampling_batches < 1:
            raise ValueError(f"gradient_sampling_batch_size {gradient_sampling_batch_size} and gradient_sampling_"
                             f"batches {gradient_sampling_batches}: give at least 1 each")
        self.gradient_sampling_batch_size = int(gradient_sampling_batch_size)
        self.gradient_sampling_batches = int(gradient_sampling_batches)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.autocast = autocast or contextlib.nullcontext
        self.count_items = count_items
        if initial_weights is None:
            initial_weights = np.full(len(self.tasks), 1.0 / len(self.tasks))
        initial_weights = np.asarray(initial_weights, dtype=np.float64)
        # A zero weight is allowed (a task left out at the start); the first update floors it to the smallest
        # positive double, from which it can grow back only as fast as the exponentiated step allows.
        if initial_weights.shape != (len(self.tasks),) or np.any(initial_weights < 0) or \
                not np.isclose(initial_weights.sum(), 1.0):
            raise ValueError(f"initial_weights {initial_weights.tolist()}: give one non-negative weight per task "
                             f"({len(self.tasks)}), summing to 1")
        self._weights = initial_weights
        self.similarities = None  # the last update's TaskSimilarities
        self.history = [self._entry("initial", None, 0)]

    @property
    def step_size(self):
        return weight_step_size(self.weight_lr, self.inv_constant is None, self.inv_constant)

    @property
    def weights(self):
        """{task: weight}, summing to 1 over the weighted tasks."""
        return {task: float(weight) for task, weight in zip(self.tasks, self._weights)}

    @property
    def cosines(self):
        """{task: cos(G_main, G_t)} of the last update (None where undefined: a zero gradient); {} before one."""
        if self.similarities is None:
            return {}
        return dict(zip(self.tasks, self.similarities.cosines))

    def loss_multiplier(self, task):
        """w_t * K (K: the number of weighted tasks): uniform weights give plain, unweighted training."""
        if task not in self.tasks:
            if task == self.main_task:
                return 1.0  # weighted pre-training: the target is trained apart, unweighted
            raise KeyError(f"task {task!r} is not one of the weighted tasks {self.tasks}")
        return float(self._weights[self.tasks.index(task)] * len(self.tasks))

    def weighted_loss(self, task, loss):
        """`task`'s loss on a batch, weighted: loss * w_t * K."""
        return loss * self.loss_multiplier(task)

    def sample_batches(self, datasets, collate_fn):
        """The update's batches: `gradient_sampling_batches` rounds of one random batch per task.

        `datasets` maps each task (weighted and main) to a sized, indexable data set; `collate_fn` turns a
        list of its examples into a batch. Under DistributedDataParallel every process draws the same
        indices and collates its share of them (None where its share is empty).
        """
        rank, world_size = _world()
        missing = [task for task in self.sampled_tasks() if task not in datasets]
        if missing:
            raise KeyError(f"no data set for task(s) {missing}; give one for each of {self.sampled_tasks()}")
        rounds = []
        for _ in range(self.gradient_sampling_batches):
            batches = {}
            for task in self.sampled_tasks():
                indices = sample_batch_indices(len(datasets[task]), self.gradient_sampling_batch_size, self.generator)
                share = indices[rank::world_size]
                batches[task] = collate_fn([datasets[task][index] for index in share]) if share else None
            rounds.append(batches)
        return rounds

    def sampled_tasks(self):
        """The tasks each update draws a batch of: the weighted tasks, and the target."""
        return list(dict.fromkeys(self.tasks + [self.main_task]))

    def update(self, loss_fn, batches, stage="step", epoch=None, step=0, step_cosines=None):
        """One TAWT update; returns the new weights ({task: weight}).

        `loss_fn(task, batch)` returns `task`'s mean loss on `batch` (one of `batches`: the output of
        `sample_batches`, or your own rounds of {task: batch} dicts, or one such dict). `stage`, `epoch`
        and `step` go into the history entry. The global random state is left as it was (the dropout masks
        training draws next are those of a run without the update). `step_cosines`, for ablations, maps the
        measured cosines (a list over the tasks) to those the step uses; the history keeps both.
        """
        rounds = [batches] if isinstance(batches, dict) else list(batches)
        device = self.shared_parameters[0].device

        def loss_in_autocast(task, batch):
            # The forward pass only: the backward pass runs outside autocast, in the forward's dtypes.
            with self.autocast():
                return loss_fn(task, batch)

        with untouched_random_state(device), self._eval_mode():
            similarities = compare_gradients(
                lambda task, batch: shared_gradient(loss_in_autocast, task, batch, self.shared_parameters,
                                                    self.count_items),
                self.main_task, self.tasks, rounds)
        undefined = [task for task, cosine in zip(self.tasks, similarities.cosines) if cosine is None]
        if undefined:
            logger.warning(
                "cosine undefined for %s (a zero gradient: no labelled item in the sampled batches, or a zero loss; "
                "or a gradient that is not finite, warned above); keeping their weights", undefined)
        cosines = similarities.cosines if step_cosines is None else list(step_cosines(similarities.cosines))
        weights = exponentiated_gradient_step(self._weights, weight_gradients(cosines), self.step_size)
        self._weights = self._same_on_every_process(weights, device)
        self.similarities = similarities
        entry = self._entry(stage, epoch, step, similarities)
        if step_cosines is not None:
            entry["weight_step_cosines"] = cosines
        self.history.append(entry)
        return self.weights

    @contextlib.contextmanager
    def _eval_mode(self):
        if self.model is None:
            yield
            return
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    @staticmethod
    def _same_on_every_process(weights, device):
        """The main process's weights: the processes computed the same ones, but not necessarily to the bit."""
        _, world_size = _world()
        if world_size == 1:
            return weights
        holder = torch.tensor(weights, dtype=torch.float64, device=device)
        dist.broadcast(holder, src=0)
        return holder.cpu().numpy()

    def _entry(self, stage, epoch, step, similarities=None):
        """A history entry, in the shape of the paradigm scripts' task_weights.json entries."""
        def listed(values):
            return None if values is None else [None if value is None else float(value) for value in values]

        return {"stage": stage, "epoch": epoch, "step": step, "weights": [float(w) for w in self._weights],
                "cosine_similarities": listed(similarities and similarities.cosines),
                "cosine_batch_mean": listed(similarities and similarities.batch_means),
                "cosine_batch_std": listed(similarities and similarities.batch_stds)}

    def weights_file(self):
        """What task_weights.json holds: the tasks, the target, the update's settings and the history."""
        return {"tasks": self.tasks, "main_task": self.main_task, "weighting": "tawt", "weight_lr": self.weight_lr,
                "inv_constant": self.inv_constant, "normalized_gradients": self.inv_constant is None,
                "gradient_sampling_batch_size": self.gradient_sampling_batch_size,
                "gradient_sampling_batches": self.gradient_sampling_batches, "history": self.history}

    def state_dict(self):
        """What a checkpoint needs to continue exactly: the weights, the history, the sampler's state."""
        return {"tasks": list(self.tasks), "weights": [float(w) for w in self._weights],
                "history": [dict(entry) for entry in self.history], "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"the saved TAWT state is for tasks {state['tasks']}, this one for {self.tasks}")
        self._weights = np.asarray(state["weights"], dtype=np.float64)
        self.history = [dict(entry) for entry in state["history"]]
        self.generator.set_state(state["generator"])
        last = self.history[-1]
        self.similarities = None if last["cosine_similarities"] is None else TaskSimilarities(
            last["cosine_similarities"], last["cosine_batch_mean"], last["cosine_batch_std"])
