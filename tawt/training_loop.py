"""The training loop every paradigm shares: weighted one-task batches in stages, checkpoints, resume.

A paradigm is a sequence of *stages* (joint training; or pre-training then fine-tuning), each a
`train_stage` call: AdamW + linear schedule over the stage's epochs, task t's batch loss
multiplied by w_t * K (K weighted tasks), and after each epoch (and every --weight_update_steps
steps) an optional TAWT weight update.

With --save_steps N a checkpoint is written every N steps (after an update made at that step) and after
every epoch's weight update. It holds
everything needed to continue exactly: the model, optimizer, scheduler and scaler, the stage, epoch and
batch reached, the task weights and their history, and the random states. The epoch's batch order is
not stored: it is a function of (seed, stage, epoch), so the resumed run draws the same one.
"""

import contextlib
import glob
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tawt import distributed
from tawt.dev_evaluation import evaluates_during
from tawt.errors import UsageError
from tawt.output_files import CHECKPOINT_DIR, DISK_FULL_ERRORS, TRAINING_LOG_FILE, write_failure
from tawt.run_reporting import TaskLosses
from utils_cross_task import epoch_batches, prefetched

logger = logging.getLogger("tawt")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")

# Arguments that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_ARGUMENT_CHANGES = {
    "output_dir", "overwrite_output_dir", "logging_steps", "save_steps", "resume_from_checkpoint", "do_eval",
    "do_predict", "per_gpu_eval_batch_size", "local_rank", "report_to",
}


# ---------------------------------------------------------------------------------------------------------
# Stages


def steps_per_epoch(task_splits, batch_size):
    batches = sum(math.ceil(len(split) / batch_size) for split in task_splits.values())
    return math.ceil(batches / distributed.world_size())


def training_schedule(args, task_splits):
    """(epochs, total optimizer steps) of one training stage over `task_splits`."""
    per_epoch = steps_per_epoch(task_splits, args.per_gpu_train_batch_size)
    if args.max_steps > 0:
        return math.ceil(args.max_steps / per_epoch), args.max_steps
    epochs = int(args.num_train_epochs)
    return epochs, epochs * per_epoch


def train_stage(model, run, stage, task_splits, task_weights, history=None, update_weights=None, adjust_gradients=None):
    """One training stage over `task_splits` with task weights (an array over its tasks, in order).

    After each epoch, `update_weights(weights, epoch, None) -> (weights, similarities)` (the TAWT step, when
    given) moves the weights and `history` records them; with --weight_update_steps N it is also called
    every N optimizer steps within an epoch, as `update_weights(weights, epoch, step)`. `adjust_gradients`
    (see `Trainer.train_epoch`) may change each step's gradients before the optimizer uses them. A stage that
    trains the main task scores it on dev with --eval_strategy (tawt/dev_evaluation.py), and ends early when
    --early_stopping_patience says so. Returns the final weights. A stage that a resumed run had already
    finished is skipped; one it was in the middle of continues where it stopped.
    """
    epochs, total_steps = training_schedule(run.args, task_splits)
    run.reporter.start_stage(stage, total_steps)  # also for a skipped stage: the later stages' steps follow it
    if stage in run.completed_stages:  # only a resumed run can have finished a stage before it began
        logger.info("stage %s was finished before the interruption: skipping it", stage)
        return np.array(run.completed_stages[stage])
    trainer = Trainer(model, run, total_steps, stage)
    task_weights = np.asarray(task_weights, dtype=np.float64)
    start_epoch, start_batch = 0, 0
    resume = run.resume
    if resume is not None and resume.stage == stage:
        trainer.load_state_dict(resume.trainer_state)
        task_weights = np.array(resume.task_weights)
        start_epoch, start_batch = resume.epoch, resume.batches_done
        run.resume = None  # consumed: later stages start fresh
        logger.info("resuming stage %s at epoch %d, batch %d (step %d)", stage, start_epoch + 1, start_batch,
                    trainer.global_step)

    def updated_weights(weights, epoch, step):
        weights, similarities = update_weights(weights, epoch, step)
        distributed.check_identical([float(weight) for weight in weights], "task weights")
        if history is not None:
            history.record("epoch" if step is None else "step", epoch + 1, weights, similarities, trainer.global_step)
        return weights

    tasks = list(task_splits)
    within_epoch = update_weights is not None and run.args.weight_update_steps > 0
    dev = evaluates_during(run, task_splits)
    for epoch in range(start_epoch, epochs):
        if dev is not None and dev.stopped:  # a resumed run whose checkpoint came after it stopped early
            break

        def checkpoint(batches_done, epoch=epoch):
            save_checkpoint(run, model, trainer, epoch, batches_done, task_weights)

        def update_within_epoch(epoch=epoch):
            # Checkpoints read task_weights: one written at this step holds the weights now in effect.
            nonlocal task_weights
            task_weights = updated_weights(task_weights, epoch, trainer.global_step)
            return dict(zip(tasks, task_weights))

        def evaluate_within_epoch(epoch=epoch):
            return dev.evaluate(model, stage, epoch, trainer.global_step)

        trainer.train_epoch(task_splits, dict(zip(tasks, task_weights)), epoch,
                            start_batch=start_batch if epoch == start_epoch else 0, checkpoint=checkpoint,
                            update_weights=update_within_epoch if within_epoch else None,
                            adjust_gradients=adjust_gradients,
                            evaluate=evaluate_within_epoch if dev is not None and run.args.eval_strategy == "steps"
                            else None)
        stopped = dev is not None and dev.stopped
        if update_weights is not None and not stopped:  # a weight update after the stop would serve nothing
            task_weights = updated_weights(task_weights, epoch, None)
        if dev is not None and run.args.eval_strategy == "epoch":
            stopped = dev.evaluate(model, stage, epoch, trainer.global_step)
        if run.args.save_steps > 0:
            save_checkpoint(run, model, trainer, epoch + 1, 0, task_weights)
        if trainer.done or stopped:
            break
    run.completed_stages[stage] = [float(weight) for weight in task_weights]
    return task_weights


def adamw_with_linear_schedule(parameters, args, total_steps, device):
    """AdamW (weight decay on matrices only, not on biases and LayerNorm) and a linear schedule: warm-up
    over --warmup_steps, then decay to 0 at `total_steps`. Training stages and the head fit both use it.

    torch's AdamW by default; with --legacy_adamw the step of transformers 2.8's AdamW, which the original
    code used (`Transformers28AdamW`).
    """
    parameters = [parameter for parameter in parameters if parameter.requires_grad]
    decay = [parameter for parameter in parameters if parameter.ndim >= 2]
    no_decay = [parameter for parameter in parameters if parameter.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.legacy_adamw:
        optimizer = Transformers28AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon)
    else:
        # The fused kernel (CPU and CUDA) is several times faster than the per-tensor default on a CPU.
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon,
                                      fused=device.type in ("cpu", "cuda"))
    warmup = args.warmup_steps

    def linear_decay(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay)


class Transformers28AdamW(torch.optim.Optimizer):
    """The AdamW step of transformers 2.8 (`transformers.AdamW`, correct_bias=True), which the original used.

    It differs from torch's AdamW in two places: eps is added to the raw sqrt(v) and the bias corrections
    are folded into the step size, lr * sqrt(1 - beta2^t) / (1 - beta1^t), so its eps acts like torch's eps
    divided by sqrt(1 - beta2^t) (about 30 times larger at the first step, the same after a few thousand);
    and weight decay is applied after the Adam step, to the updated parameter (torch: before it). With
    --weight_decay 0 (the paper's) only the first difference remains. As in both, a parameter whose
    gradient is None is skipped; one whose gradient is zero is stepped on its moments.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(parameter)
                    state["exp_avg_sq"] = torch.zeros_like(parameter)
                state["step"] += 1
                grad, exp_avg, exp_avg_sq = parameter.grad, state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denominator = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                parameter.addcdiv_(exp_avg, denominator, value=-step_size)
                if group["weight_decay"] > 0.0:
                    parameter.add_(parameter, alpha=-group["lr"] * group["weight_decay"])
        return loss


class ParameterUpdateNorms:
    """How far the encoder and the main task's head moved since the last reading: the norm of the difference
    between their parameters now and at the last reading (the updates the optimizer actually made, whatever
    gradients, scales and Adam normalisation made them). Keeps one copy of those parameters."""

    def __init__(self, model, main_task):
        self.groups = {"encoder": list(model.encoder_parameters()),
                       "main_head": list(model.head(main_task).parameters())}
        self.start = self._copy()

    def _copy(self):
        return {name: [parameter.detach().clone() for parameter in parameters]
                for name, parameters in self.groups.items()}

    def read(self):
        """{"encoder": norm, "main_head": norm} since the last reading; the next reading starts from now."""
        norms = {}
        for name, parameters in self.groups.items():
            squared = sum(torch.sum((parameter.detach().float() - start.float()) ** 2)
                          for parameter, start in zip(parameters, self.start[name]))
            norms[name] = math.sqrt(float(squared))
        self.start = self._copy()
        return norms

    def state_dict(self):
        return {name: [tensor.cpu() for tensor in tensors] for name, tensors in self.start.items()}

    def load_state_dict(self, state):
        self.start = {name: [tensor.to(parameter.device) for tensor, parameter in zip(state[name], self.groups[name])]
                      for name in self.groups}


class Trainer:
    """AdamW + linear schedule over one training stage, with one-task batches and weighted losses."""

    branch = None  # a ForkMerge branch's name (tawt/forkmerge.py): its training_log.jsonl records carry it

    def __init__(self, model, run, total_steps, stage):
        self.model, self.run, self.stage = model, run, stage
        self.training_model = distributed.wrap_for_training(model, run.device)
        self.total_steps = total_steps
        self.global_step = 0
        self.optimizer, self.scheduler = adamw_with_linear_schedule(model.parameters(), run.args, total_steps,
                                                                    run.device)
        self.scaler = torch.amp.GradScaler(run.device.type, enabled=run.args.fp16)
        self.task_losses = TaskLosses()
        # --log_update_norms: how far the encoder and the main task's head moved between two log lines
        self.update_norms = (ParameterUpdateNorms(model, run.main_task)
                             if getattr(run.args, "log_update_norms", False) else None)

    @property
    def done(self):
        return self.global_step >= self.total_steps

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "global_step": self.global_step}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]

    def train_epoch(self, task_splits, task_weights, epoch, start_batch=0, checkpoint=None, update_weights=None,
                    adjust_gradients=None, evaluate=None, end_batch=None):
        """One epoch over shuffled one-task batches; task t's loss is multiplied by w_t * K.

        `task_weights` maps each task to its weight; K is the number of weighted tasks, so uniform weights
        reproduce plain training. Batches before `start_batch` were trained before an interruption; with
        `end_batch` the epoch's batches from there on are left for a later call (ForkMerge's branches train
        in turns, tawt/forkmerge.py).
        `update_weights()` (new weights, task -> weight) is called every --weight_update_steps steps, before
        that step's checkpoint, but not after the epoch's last batch (the update after the epoch follows).
        `checkpoint(batches_done)` is called every --save_steps steps. `adjust_gradients(task, step,
        learning_rate)` is called after each backward pass (gradients unscaled, before clipping): GCS and
        OL-AUX (tawt/target_aware_baselines.py) read or change the `.grad` buffers there. `evaluate()` (the dev
        score, --eval_strategy steps) is called every --eval_steps steps, before that step's checkpoint, which
        then holds the score; when it returns True (early stopping) the epoch ends after that step.
        """
        args, run = self.run.args, self.run

        def loss_multipliers(task_weights):
            return {task: float(weight) * len(task_weights) for task, weight in task_weights.items()}

        multipliers = loss_multipliers(task_weights)
        lengths = None
        if args.group_by_length:
            lengths = {task: [len(feature.input_ids) for feature in split.features] for task, split in task_splits.items()}
        batches = epoch_batches({task: len(split) for task, split in task_splits.items()},
                                args.per_gpu_train_batch_size, run.data_order_generator(self.stage, epoch), lengths)
        batches = distributed.shard_batches(batches)
        self.training_model.train()
        # Nothing in a step waits for the device: the losses stay there until a step that must look at
        # them (a logging step, a weight update, a checkpoint, the epoch's end) reads them all at once.
        losses = StepLosses(self.stage, epoch)

        def collated(batch):
            task, indices = batch
            return self.model.collate_batch([task_splits[task].features[index] for index in indices],
                                            run.pad_token_id, rows=args.per_gpu_train_batch_size)

        end_batch = len(batches) if end_batch is None else min(end_batch, len(batches))
        progress = tqdm(range(start_batch, end_batch), desc=f"{self.stage} epoch {epoch + 1}", leave=False,
                        disable=not distributed.is_main_process())
        # Closed after the loop (an exception closes it when the generator is freed): the thread stops.
        loaded = prefetched(batches[start_batch:end_batch], collated, run.device)
        for batch_number, batch in zip(progress, loaded):
            if self.done:
                break
            task, indices = batches[batch_number]
            if self.model.compiled_states is not None:
                torch.compiler.cudagraph_mark_step_begin()  # a new step: CUDA graphs may reuse their memory
            with run.autocast():
                loss, _ = self.training_model(task, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                              batch.get("token_index"), batch.get("token_type_ids"))
            self.task_losses.add(task, loss)
            loss = loss * multipliers[task]
            losses.add(loss, self.global_step + 1, task, indices)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if adjust_gradients is not None:
                adjust_gradients(task, self.global_step + 1, self.scheduler.get_last_lr()[0])
            if args.max_grad_norm > 0:  # 0 turns clipping off, as in Hugging Face's Trainer
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            # By default a parameter outside this batch (another task's head) has no gradient and AdamW
            # leaves it alone; --zero_grad_in_place zeroes gradients as the original's model.zero_grad() did
            # in torch 1.4, so AdamW steps every parameter that has ever had one, on its moments alone.
            self.optimizer.zero_grad(set_to_none=not args.zero_grad_in_place)
            self.global_step += 1
            if args.logging_steps > 0 and self.global_step % args.logging_steps == 0:
                mean_loss = losses.mean_since_last_log()
                progress.set_postfix(task=task, loss=f"{mean_loss:.4f}")
                self._log(epoch, mean_loss)
            if (update_weights is not None and self.global_step % args.weight_update_steps == 0
                    and batch_number + 1 < len(batches) and not self.done):
                losses.check()
                multipliers = loss_multipliers(update_weights())
            stop = evaluate is not None and self.global_step % args.eval_steps == 0 and evaluate()
            if checkpoint is not None and args.save_steps > 0 and self.global_step % args.save_steps == 0:
                losses.check()
                checkpoint(batch_number + 1)
            if stop:
                break
        loaded.close()
        if losses.unlogged():
            self._log(epoch, losses.mean_since_last_log())

    def _log(self, epoch, mean_loss):
        task_losses = self.task_losses.take_means()  # on every process: the next window starts afresh
        if not distributed.is_main_process():
            return
        record = {"stage": self.stage, "epoch": epoch, "step": self.global_step, "loss": mean_loss,
                  "learning_rate": self.scheduler.get_last_lr()[0], "task_losses": task_losses}
        if self.branch is not None:
            record["branch"] = self.branch
        if self.update_norms is not None:
            record["parameter_update_norm"] = self.update_norms.read()
        line = json.dumps(record) + "\n"
        try:
            with open(self.run.path(TRAINING_LOG_FILE), "a") as handle:
                handle.write(line)
        except OSError as error:
            if error.errno not in DISK_FULL_ERRORS:
                raise
            raise write_failure(self.run.path(TRAINING_LOG_FILE), len(line), error) from None
        self.run.reporter.training_log(record)


class StepLosses:
    """The training losses of an epoch's steps, kept on the device until a step reads them.

    Reading them (`check`) is the one point where the host waits for the device: every loss not yet
    read is copied at once, and the first that is NaN or infinite stops the run, naming its step, task
    and batch (the steps after it trained on what it left; nothing of theirs was saved).
    """

    def __init__(self, stage, epoch):
        self.stage, self.epoch = stage, epoch
        self.unread = []  # (loss on the device, step, task, sentence indices)
        self.read_values = []  # losses read since the last log

    def add(self, loss, step, task, indices):
        self.unread.append((loss.detach(), step, task, indices))

    def check(self):
        if not self.unread:
            return
        values = torch.stack([loss for loss, *_ in self.unread]).float().tolist()
        for value, (_, step, task, indices) in zip(values, self.unread):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{self.stage} epoch {self.epoch + 1} step {step}: the loss of task {task} is {value} on the "
                    f"batch of training sentences {sorted(indices)[:8]}{'...' if len(indices) > 8 else ''}; the last "
                    "checkpoint is kept. Lower --learning_rate, or use --bf16 instead of --fp16"
                )
        self.read_values.extend(values)
        self.unread.clear()

    def unlogged(self):
        return bool(self.unread or self.read_values)

    def mean_since_last_log(self):
        self.check()
        values, self.read_values = self.read_values, []
        return sum(values) / len(values)


def all_finite(parameters):
    """Whether every entry of every parameter is finite (one wait for the device)."""
    return bool(torch.stack([torch.isfinite(parameter).all() for parameter in parameters]).all())


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class ResumePoint:
    """Where the interrupted stage continues (the rest of a checkpoint is restored at once)."""

    stage: str
    epoch: int
    batches_done: int
    task_weights: list
    trainer_state: dict  # optimizer, scheduler, scaler, step: loaded when the stage's Trainer exists


def restore_checkpoint(run, model, state):
    """Put back everything a checkpoint holds: the one place that reads one (see `save_checkpoint`).

    The model's weights, the finished stages, the weight history (`run.restored_weight_history`, for
    `start_weight_history`) and the random states are restored now; the interrupted stage's optimizer,
    epoch, batch and weights wait in `run.resume` until `train_stage` reaches that stage. Nothing between
    this call and that point draws random numbers.
    """
    model.load_state_dict(state["model"])
    run.completed_stages = dict(state["completed_stages"])
    run.checkpoint_number = run.resumed_from_checkpoint = state["checkpoint_number"]
    run.restored_weight_history = state["history"]
    run.restored_target_aware_baseline = state.get("target_aware_baseline")
    run.restored_dev_evaluation = state.get("dev_evaluation")
    restore_random_states(run, state["random_states"])
    run.resume = ResumePoint(state["stage"], state["epoch"], state["batches_done"], state["task_weights"],
                             state["trainer"])


def random_states(run):
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "gradient_sampling": run.gradient_sampling_generator.get_state(),
    }


def restore_random_states(run, states):
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    run.gradient_sampling_generator.set_state(states["gradient_sampling"])


def checkpoint_paths(output_dir):
    """The complete checkpoints in `output_dir`, oldest first (a half-written one is never named so)."""
    found = []
    for path in glob.glob(os.path.join(output_dir, CHECKPOINT_DIR, "checkpoint-*.pt")):
        match = CHECKPOINT_PATTERN.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def save_checkpoint(run, model, trainer, epoch, batches_done, task_weights):
    """Write checkpoint-<n>.pt atomically (temporary file, then rename), then drop the older ones.

    Weights that are no longer finite are never written: the run stops, and the last checkpoint is kept."""
    if not all_finite(model.parameters()):
        raise FloatingPointError(
            f"{trainer.stage} step {trainer.global_step}: the model's weights are no longer finite; the last "
            "checkpoint is kept. Lower --learning_rate or --max_grad_norm, or use --bf16 instead of --fp16"
        )
    run.checkpoint_number += 1
    if not distributed.is_main_process():
        return
    directory = os.path.join(run.output_dir, CHECKPOINT_DIR)
    os.makedirs(directory, exist_ok=True)
    state = {
        "format": 1,
        "args": dict(vars(run.args)),
        # What a resumption must match besides the flags: the paradigm (two scripts share most flags) and
        # the training data (a file edited since would silently continue a model trained on the old one).
        "paradigm": run.paradigm,
        "training_data": run.training_data,
        "checkpoint_number": run.checkpoint_number,
        "stage": trainer.stage,
        "epoch": epoch,
        "batches_done": batches_done,
        "completed_stages": dict(run.completed_stages),
        "task_weights": [float(weight) for weight in task_weights],
        # The run's whole weight history (a fine-tuning stage has no weights of its own to record).
        "history": None if run.weight_history is None else run.weight_history.history,
        "model": model.state_dict(),
        "trainer": trainer.state_dict(),
        # GCS's or OL-AUX's cached target gradient, counters and accumulators (tawt/target_aware_baselines.py).
        "target_aware_baseline": None if run.target_aware_baseline is None else run.target_aware_baseline.state_dict(),
        # The dev scores so far, the best one and its weights, and whether training stopped (tawt/dev_evaluation.py).
        "dev_evaluation": None if run.dev_evaluation is None else run.dev_evaluation.state_dict(),
        "random_states": random_states(run),
    }
    path = os.path.join(directory, f"checkpoint-{run.checkpoint_number:08d}.pt")
    temporary = os.path.join(directory, f".tmp-checkpoint-{run.checkpoint_number:08d}-{os.getpid()}.pt")
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as error:  # torch reports a failed write as a RuntimeError
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.errno not in DISK_FULL_ERRORS:
            raise
        raise write_failure(path, state_bytes(state), error, fix="free some space (or choose another --output_dir) "
                            "and rerun the same command: it resumes from the last checkpoint written") from None
    os.replace(temporary, path)
    for older in checkpoint_paths(run.output_dir)[:-1]:
        os.remove(older)


def state_bytes(state):
    """About how many bytes `state` takes on disk: its tensors' and arrays' bytes (the rest is small)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, np.ndarray):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(value) for value in state)
    return 64


def load_checkpoint(path, args, paradigm):
    """Read a checkpoint and check that it was made by the same command (up to harmless flags) of the same
    paradigm; `check_training_data` compares its data once that is read."""
    try:
        # Our own file: it holds random states and numpy arrays, not only tensors.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise UsageError(f"{path}: cannot be read as a checkpoint ({str(error).splitlines()[0]}); "
                         f"{_without_checkpoint(path, args)}") from None
    if not (isinstance(state, dict) and isinstance(state.get("args"), dict)):
        raise UsageError(f"{path}: not a checkpoint of these scripts (they write OUTPUT_DIR/checkpoints/"
                         "checkpoint-<n>.pt, with the run's arguments, model and optimizer); give one of those")
    saved_paradigm = state.get("paradigm")
    if saved_paradigm is not None and saved_paradigm != paradigm:
        raise UsageError(f"{path} was written by a {saved_paradigm} run, and this is a {paradigm} run; resume it "
                         "with the script and command that made it, or use another --output_dir")
    saved, current = state["args"], vars(args)
    differences = sorted(
        name for name in set(saved) | set(current)
        if name not in RESUMABLE_ARGUMENT_CHANGES and saved.get(name) != current.get(name)
    )
    if differences:
        shown = ", ".join(f"--{name} {saved.get(name)!r} -> {current.get(name)!r}" for name in differences)
        raise UsageError(
            f"{path} was written by a different command ({shown}); rerun the same command, or use another "
            "--output_dir"
        )
    return state


def _without_checkpoint(path, args):
    """What to do when the checkpoint at `path` cannot be used: resume from an older one, or start again."""
    if args.resume_from_checkpoint:
        return "give another checkpoint with --resume_from_checkpoint, or leave it out"
    older = [other for other in checkpoint_paths(args.output_dir) if os.path.abspath(other) != os.path.abspath(path)]
    if older:
        return f"delete it to resume from the older {older[-1]}"
    return ("it is the only one, so the run cannot be resumed: pass --overwrite_output_dir to start it again (its "
            "files are removed first)")


def check_training_data(path, state, training_data):
    """Refuse to resume the checkpoint at `path` on training data other than the data it was made on.

    `training_data` is the run's `cross_task_training.training_data_fingerprint`; a checkpoint written
    before fingerprints were recorded has none, and is not compared."""
    saved = state.get("training_data")
    if saved is None:
        return
    for task in sorted(set(saved) | set(training_data)):
        before, now = saved.get(task), training_data.get(task)
        if before == now:
            continue
        if before is None or now is None:
            change = "was not trained on then" if before is None else "is not trained on now"
            raise UsageError(f"{path} was made on other tasks: {task} {change}; rerun the command that made it")
        if before["sha256"] != now["sha256"]:
            sizes = (f"{before['bytes']} bytes then, {now['bytes']} now" if before["bytes"] != now["bytes"]
                     else "the same size, other contents")
            change = f"{now['file']} has changed since ({sizes})"
        elif before["labels"] != now["labels"]:
            change = f"the labels of {task} have changed since ({before['labels']} -> {now['labels']})"
        else:
            change = f"{task} used {before['sentences']} training sentences then, {now['sentences']} now"
        raise UsageError(f"{path} was made on other training data: {change}; restore the data it was made on, "
                         "or pass --overwrite_output_dir to train again from the start")


def remove_checkpoints(output_dir):
    for path in checkpoint_paths(output_dir) + glob.glob(os.path.join(output_dir, CHECKPOINT_DIR, ".tmp-*")):
        os.remove(path)
    with contextlib.suppress(OSError):  # the folder goes too, unless something else was put there
        os.rmdir(os.path.join(output_dir, CHECKPOINT_DIR))
