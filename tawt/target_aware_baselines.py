"""Target-aware baselines beside TAWT: GCS (Du et al. 2018) and OL-AUX (Lin et al. 2019).

Both read, like TAWT, how a source's gradient on the shared encoder relates to the main task's (the
target's); they differ in what they do with it. Every batch still holds one task.

GCS, "Adapting Auxiliary Losses Using Gradient Similarity" (Du et al. 2018), --weighting gcs: at a step on
a source's batch, after the backward pass, the source's encoder gradient G_s is compared with a target
gradient G_main. Unweighted GCS (--gcs_mode unweighted, the default) keeps G_s if cos(G_main, G_s) > 0 and
zeroes it otherwise; weighted GCS (--gcs_mode weighted) multiplies it by max(0, cos). Only the encoder's
gradient is gated: the source's own head is always updated. The task weights stay as given.
With --gcs_variant du (the default) the step's update is, as in the paper and in AuxiLearn's GradCosine,
the main task's gradient plus the gated source gradient: G_main (the target gradient, on the encoder and on
the main task's head, times the main task's loss multiplier w_main * K) is added to the source's, so the
main task trains at every step, not only on its own batches. --gcs_variant gated applies the gated source
gradient alone (the main task trains only on its own batches): gated joint training, what --weighting gcs
computed before --gcs_variant existed, kept so that those runs can be reproduced.

OL-AUX, "Adaptive Auxiliary Task Weighting for Reinforcement Learning" (Lin et al. 2019), --weighting
olaux: each source k has a loss coefficient lambda_k (the main task's is fixed at 1), moved by the gradient
of the main task's loss with respect to it. To first order, a step of size alpha on source k's gradient G_k
changes the main loss by -alpha <G_main, G_k>, so over a horizon of steps
lambda_k <- max(floor, lambda_k + beta * sum_j alpha_j <G_main, G_k>_j),
summed over the horizon's steps on source k (alpha_j: that step's learning rate, beta: --olaux_lr). The
horizon is --weight_update_steps (and an epoch's end); the weights the loss uses are the coefficients
normalised to sum 1, like every other paradigm's. An additive step on raw dot products, where TAWT takes an
exponentiated step on cosines.

The target gradient is the encoder gradient of the main task's mean loss on --gradient_sampling_batch_size
main-task sentences drawn from the run's gradient-sampling generator, with dropout off (as the TAWT
update draws it). It is refreshed at a source step when it is --target_gradient_steps R or more steps old
(R = 1: a fresh one at every source step, as in both papers, which use the current main-task batch). Its
cost is one forward and backward pass over that many sentences every R source steps; the cosine or dot
product itself is one pass over the encoder's gradients. What each method did goes into task_weights.json
(the entries' gcs_* and olaux_* fields; parameter_update_norm: how far the encoder and the main task's head
moved since the previous entry, the norm of the difference of their parameters) and, with --report_to
tensorboard, into TensorBoard scalars
(tawt/run_reporting.py); its state (the cached target gradient, the counters, OL-AUX's coefficients and
accumulators) goes into every checkpoint, so a resumed run continues exactly.
"""

import math

import numpy as np
import torch

from tawt.errors import UsageError
from tawt.run_arguments import TARGET_AWARE_BASELINES
from tawt.training_loop import ParameterUpdateNorms
from weighted_training_basics import (
    cosine_similarity, encoder_gradient, gradient_dot_and_norms, sample_gradient_batches, untouched_random_state,
)

# A source's coefficient never falls below this: at 0 its loss, hence its gradient, would vanish and OL-AUX
# could never measure it again (the paper computes the gradient of each auxiliary loss unweighted).
OLAUX_MIN_COEFFICIENT = 1e-3


def paradigm_name(base, args):
    """joint_gcs, joint_gcs_weighted, joint_olaux (and normalized_joint_...)."""
    if args.weighting == "gcs":
        return f"{base}_gcs" + ("_weighted" if args.gcs_mode == "weighted" else "")
    return f"{base}_olaux"


class TargetGradient:
    """The main task's encoder gradient on a sampled batch, cached for --target_gradient_steps steps.

    With `with_head`, the gradient of the main task's head on the same batch is kept too (`head_gradient`):
    GCS as Du et al. define it adds both to every update.
    """

    def __init__(self, model, run, main_task, split, with_head=False):
        self.model, self.run, self.main_task, self.split = model, run, main_task, split
        self.with_head = with_head
        self.gradient, self.head_gradient, self.step = None, None, None
        self.refreshes = 0

    def at(self, step):
        if self.gradient is None or step - self.step >= self.run.args.target_gradient_steps:
            with untouched_random_state(self.run.device):  # the dropout masks of training stay as they were
                batch = sample_gradient_batches({self.main_task: self.split}, self.run.args.gradient_sampling_batch_size,
                                                self.run.gradient_sampling_generator, self.run.pad_token_id,
                                                self.run.device)[0][self.main_task]
                head = list(self.model.head(self.main_task).parameters()) if self.with_head else []
                gradient = encoder_gradient(self.model, self.main_task, batch, self.run.autocast, head)
            encoder_tensors = len(gradient) - len(head)
            self.gradient, self.head_gradient = gradient[:encoder_tensors], gradient[encoder_tensors:]
            self.step, self.refreshes = step, self.refreshes + 1
        return self.gradient

    def state_dict(self):
        def on_host(gradient):
            return None if gradient is None else [tensor.cpu() for tensor in gradient]

        return {"gradient": on_host(self.gradient), "head_gradient": on_host(self.head_gradient), "step": self.step,
                "refreshes": self.refreshes}

    def load_state_dict(self, state):
        def on_device(gradient):
            return None if gradient is None else [tensor.to(self.run.device) for tensor in gradient]

        self.gradient, self.head_gradient = on_device(state["gradient"]), on_device(state.get("head_gradient"))
        self.step, self.refreshes = state["step"], state["refreshes"]


def source_encoder_gradient(model):
    """The encoder's .grad buffers after the backward pass (zeros where the loss did not reach a parameter)."""
    return [torch.zeros_like(parameter) if parameter.grad is None else parameter.grad
            for parameter in model.encoder_parameters()]


class GradientSimilarity:
    """GCS: each source batch's encoder gradient kept, dropped or scaled by its cosine with the target's; with
    --gcs_variant du, the target gradient (encoder and main head) added to the step."""

    def __init__(self, model, run, tasks, main_task, split, task_weights):
        self.model, self.run, self.tasks, self.main_task = model, run, list(tasks), main_task
        self.weighted = run.args.gcs_mode == "weighted"
        self.adds_main_gradient = getattr(run.args, "gcs_variant", "du") == "du"
        # The main task's loss multiplier in training (w_main * K): its gradient enters a source step at the
        # scale it has on its own batches.
        self.main_multiplier = float(task_weights[self.tasks.index(main_task)]) * len(self.tasks)
        self.target = TargetGradient(model, run, main_task, split, with_head=self.adds_main_gradient)
        self.update_norms = ParameterUpdateNorms(model, main_task)
        # Per task, since the last history entry and over the whole run: source steps, steps kept (scale > 0),
        # the sum of the scales applied, the sum of the defined cosines and their number.
        self.interval = self._zero_counts()
        self.total = self._zero_counts()

    def _zero_counts(self):
        return {name: {task: 0 for task in self.tasks}
                for name in ("steps", "kept", "scale_sum", "cosine_sum", "cosines")}

    def adjust_gradients(self, task, step, learning_rate):
        if task == self.main_task:
            return
        gradient = source_encoder_gradient(self.model)
        cosine = cosine_similarity(self.target.at(step), gradient)
        if cosine is None:  # a zero gradient: nothing to compare; the step is left as plain joint training
            scale = 1.0
        else:
            scale = max(0.0, cosine) if self.weighted else float(cosine > 0)
        if scale != 1.0:
            torch._foreach_mul_([parameter.grad for parameter in self.model.encoder_parameters()
                                 if parameter.grad is not None], scale)
        if self.adds_main_gradient:
            self.target.at(step)  # already fresh: the cosine above read it
            parameters = list(self.model.encoder_parameters()) + list(self.model.head(self.main_task).parameters())
            add_to_gradients(parameters, self.target.gradient + self.target.head_gradient, self.main_multiplier)
        for counts in (self.interval, self.total):
            counts["steps"][task] += 1
            counts["kept"][task] += scale > 0
            counts["scale_sum"][task] += scale
            if cosine is not None:
                counts["cosine_sum"][task] += cosine
                counts["cosines"][task] += 1

    def update_weights(self, weights, epoch, step):
        """The weights stay; the history entry reports what GCS did since the previous one."""
        self.run.weight_history.add_to_next_entry(
            gcs_mode="weighted" if self.weighted else "unweighted",
            gcs_variant="du" if self.adds_main_gradient else "gated",
            gcs_since_previous_entry=self._summary(self.interval), gcs_whole_run=self._summary(self.total),
            target_gradients_computed=self.target.refreshes, parameter_update_norm=self.update_norms.read())
        self.interval = self._zero_counts()
        return np.asarray(weights, dtype=np.float64), None

    def _summary(self, counts):
        def ratio(numerator, denominator):
            return [None if counts[denominator][task] == 0 else counts[numerator][task] / counts[denominator][task]
                    for task in self.tasks]

        return {"source_steps": [counts["steps"][task] for task in self.tasks],
                "kept_fraction": ratio("kept", "steps"), "mean_scale": ratio("scale_sum", "steps"),
                "mean_cosine": ratio("cosine_sum", "cosines")}

    def state_dict(self):
        return {"target": self.target.state_dict(), "interval": self.interval, "total": self.total,
                "update_norms": self.update_norms.state_dict()}

    def load_state_dict(self, state):
        self.target.load_state_dict(state["target"])
        self.interval, self.total = state["interval"], state["total"]
        if "update_norms" in state:
            self.update_norms.load_state_dict(state["update_norms"])


def add_to_gradients(parameters, gradient, multiplier):
    """parameter.grad += multiplier * gradient, for each parameter (a missing .grad becomes that product)."""
    for parameter, addition in zip(parameters, gradient):
        if parameter.grad is None:
            parameter.grad = addition.to(parameter.dtype) * multiplier
        else:
            parameter.grad.add_(addition.to(parameter.grad.dtype), alpha=multiplier)


class OnlineAuxiliaryWeighting:
    """OL-AUX: source coefficients moved by the summed <G_main, G_k> of their steps over a horizon."""

    def __init__(self, model, run, tasks, main_task, split, task_weights):
        self.model, self.run, self.tasks, self.main_task = model, run, list(tasks), main_task
        self.main_index = self.tasks.index(main_task)
        self.target = TargetGradient(model, run, main_task, split)
        weights = np.asarray(task_weights, dtype=np.float64)
        if weights[self.main_index] <= 0:
            raise UsageError("--weighting olaux keeps the main task's coefficient at 1: give the main task a positive "
                             "weight in --task_weights")
        # Coefficients relative to the main task's (fixed at 1, as in the paper); uniform weights: all 1.
        self.coefficients = [float(weight / weights[self.main_index]) for weight in weights]
        self.accumulated = [0.0] * len(self.tasks)  # sum of lr * <G_main, G_k> since the last step
        self.steps = [0] * len(self.tasks)  # source steps in the accumulation
        self.update_norms = ParameterUpdateNorms(model, main_task)

    @property
    def weights(self):
        coefficients = np.array(self.coefficients)
        return coefficients / coefficients.sum()

    def adjust_gradients(self, task, step, learning_rate):
        if task == self.main_task:
            return
        index = self.tasks.index(task)
        # The training gradient is the task's loss gradient times its loss multiplier w_k * K: undone here.
        multiplier = self.weights[index] * len(self.tasks)
        dot, _, _ = gradient_dot_and_norms(self.target.at(step), source_encoder_gradient(self.model))
        dot = dot.item() / multiplier
        if math.isfinite(dot):  # an overflowed float16 step is skipped by the scaler; so is its measurement
            self.accumulated[index] += learning_rate * dot
            self.steps[index] += 1

    def update_weights(self, weights, epoch, step):
        """The end of a horizon: one additive step of the source coefficients, then the accumulators restart."""
        beta = self.run.args.olaux_lr
        self.run.weight_history.add_to_next_entry(
            olaux_coefficients_before=list(self.coefficients), olaux_lr_times_dot_sum=list(self.accumulated),
            olaux_source_steps=list(self.steps), target_gradients_computed=self.target.refreshes,
            parameter_update_norm=self.update_norms.read())
        for index in range(len(self.tasks)):
            if index != self.main_index:
                self.coefficients[index] = max(OLAUX_MIN_COEFFICIENT,
                                               self.coefficients[index] + beta * self.accumulated[index])
        self.accumulated = [0.0] * len(self.tasks)
        self.steps = [0] * len(self.tasks)
        return self.weights, None

    def state_dict(self):
        return {"target": self.target.state_dict(), "coefficients": list(self.coefficients),
                "accumulated": list(self.accumulated), "steps": list(self.steps),
                "update_norms": self.update_norms.state_dict()}

    def load_state_dict(self, state):
        self.target.load_state_dict(state["target"])
        self.coefficients, self.accumulated, self.steps = state["coefficients"], state["accumulated"], state["steps"]
        if "update_norms" in state:
            self.update_norms.load_state_dict(state["update_norms"])


def start_baseline(model, run, tasks, main_task, task_splits, task_weights):
    """The run's GCS or OL-AUX method (None for --weighting fixed or tawt), with its state restored when the
    run resumes from a checkpoint; `run.target_aware_baseline` holds it for the checkpoints."""
    weighting = run.args.weighting
    if weighting not in TARGET_AWARE_BASELINES:
        return None
    if weighting == "gcs":
        method = GradientSimilarity(model, run, tasks, main_task, task_splits[main_task], task_weights)
    else:
        method = OnlineAuxiliaryWeighting(model, run, tasks, main_task, task_splits[main_task], task_weights)
    if run.restored_target_aware_baseline is not None:
        method.load_state_dict(run.restored_target_aware_baseline)
    run.target_aware_baseline = method
    return method
