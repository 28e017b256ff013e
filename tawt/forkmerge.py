"""ForkMerge (Jiang et al., NeurIPS 2023) beside TAWT: --weighting forkmerge in joint and normalized joint training.

TAWT estimates from gradient cosines how much each source helps the main task (the target); ForkMerge asks
the target's dev score directly. The model is forked into branches, each trained with its own task
weighting, and merged at regular intervals into a convex combination of the branches' parameters whose
coefficients are chosen on the target's dev set:

  branches   --forkmerge_branches, comma-separated (default target,all): `target`, the main task alone;
             `all`, every source and the main task at the run's weights (what joint or normalized joint
             training would train); `topk:K`, the main task and the K sources that ranked best in a ranking
             stage at the start, at the run's weights renormalised over those tasks. The ranking stage trains,
             from the starting model, the main task with each source alone for --forkmerge_ranking_steps
             optimizer steps (default: one merge interval) and scores each on the main task's dev set.
  interval   every branch trains --forkmerge_merge_steps optimizer steps (default: the steps of one epoch of
             the run's whole task set), on its own tasks' batches in its own sequence of epochs; the target
             branch, whose epoch is shorter, goes through more epochs of the main task meanwhile. Each branch
             has its own AdamW state and learning-rate schedule, over the run's total number of steps.
  merge      after each interval the branches are scored on the main task's dev set and ranked; the best gets
             coefficient 1; then, greedily, branch by branch in rank order, the i-th next branch's coefficient
             is searched over alpha * (sum of the coefficients so far) / i for alpha in --forkmerge_alphas
             (default 0 0.2 0.4 0.6 0.8 1, the reference code's), each candidate the merge theta =
             sum_b lambda_b theta_b / sum_b lambda_b scored on dev, and a candidate kept only if it scores
             strictly higher than the merge so far (alpha 0: the merge so far). Every branch then restarts
             from the merged parameters.

The dev score is the main task's table metric (accuracy for tagging, F1 for spans). The test score is the
merged model's after the last merge. task_weights.json records each merge: its coefficients, each branch's
and each candidate's dev score, and as `weights` the task weights the merge stands for, sum_b lambda_b w_b
(w_b: the branch's task weights, 0 for the tasks it does not train); the ranking's scores go into the first
merge's entry.

Optimizer state: as in the reference code (thuml/ForkMerge, develop branch), each branch keeps its own
optimizer and schedule for the whole run, and a merge replaces the parameters only: a branch's Adam moments
(the reference's SGD momentum) carry over from its own earlier intervals; they are neither reset nor merged.
The reference also reloads, before merging, the checkpoint at which each branch scored best on dev so far
(scored once per epoch); here each branch's parameters at the end of the interval are merged.

Memory: one extra copy of the model's parameters per branch (the branches' parameters at the end of an
interval, and the interval's starting point until the last branch starts), and one AdamW state (two copies
of the parameters) per branch instead of one. All of it stays on the device. With --save_steps N > 0 a
checkpoint is written after every merge (the branches' optimizers and positions, the merges so far), so a
run interrupted after a merge resumes exactly; one interrupted between two merges goes back to the last.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch

from tawt import training_loop
from tawt.dev_evaluation import evaluates_during
from tawt.evaluation import score
from tawt.run_arguments import FORKMERGE_TOP_K, parse_forkmerge_branches
from tawt.sequence_metrics import primary_metric
from tawt.training_loop import Trainer, steps_per_epoch, training_schedule

logger = logging.getLogger("tawt")

@dataclass
class Branch:
    name: str
    tasks: list  # the tasks it trains, in the run's order
    weights: np.ndarray  # over the run's tasks (0 for those it does not train)
    trainer: Trainer
    epoch: int = 0  # where its sequence of epochs stands
    batch: int = 0


class QuietTrainer(Trainer):
    """A ranking run's trainer: its losses are checked, not logged (training_log.jsonl holds the branches')."""

    def _log(self, epoch, mean_loss):
        self.task_losses.take_means()


class ForkMerge:
    """The branches, their merges and everything a checkpoint needs to continue them."""

    def __init__(self, model, run, stage, task_splits, task_weights, dev_split, total_steps):
        self.model, self.run, self.stage = model, run, stage
        self.task_splits, self.tasks = task_splits, list(task_splits)
        self.main_task = run.main_task
        self.task_weights = np.asarray(task_weights, dtype=np.float64)
        self.dev_split, self.total_steps = dev_split, total_steps
        self.names = parse_forkmerge_branches(run.args.forkmerge_branches, [task for task in self.tasks if task != self.main_task])
        batch_size = run.args.per_gpu_train_batch_size
        self.merge_steps = run.args.forkmerge_merge_steps or steps_per_epoch(task_splits, batch_size)
        self.ranking_steps = run.args.forkmerge_ranking_steps or self.merge_steps
        self.parameters = list(model.parameters())
        self.metric = None
        self.ranking = None  # source -> the main task's dev score after training with it alone
        self.branches = None
        self.merges = 0

    # -- the model's parameters

    def snapshot(self):
        return [parameter.detach().clone() for parameter in self.parameters]

    @torch.no_grad()
    def load(self, parameters):
        torch._foreach_copy_(self.parameters, parameters)

    @torch.no_grad()
    def load_merge(self, ends, coefficients):
        """theta = sum_b lambda_b theta_b / sum_b lambda_b, written into the model; a lone branch is copied."""
        total = sum(coefficients)
        chosen = [(end, coefficient / total) for end, coefficient in zip(ends, coefficients) if coefficient > 0]
        self.load(chosen[0][0])
        if len(chosen) > 1:
            torch._foreach_mul_(self.parameters, chosen[0][1])
            for end, coefficient in chosen[1:]:
                torch._foreach_add_(self.parameters, end, alpha=coefficient)

    def dev_score(self):
        results = score(self.run, self.model, self.main_task, self.dev_split)[0]
        self.metric = self.metric or primary_metric(results["metric_family"])
        return float(results[self.metric])

    # -- branches

    def restricted_weights(self, tasks):
        """The run's weights over `tasks` (renormalised), 0 elsewhere; every task: the run's weights as given."""
        if len(tasks) == len(self.tasks):
            return self.task_weights.copy()
        weights = np.array([self.task_weights[index] if task in tasks else 0.0 for index, task in enumerate(self.tasks)])
        if weights.sum() <= 0:  # the run gives these tasks no weight: train them equally
            weights = np.array([1.0 if task in tasks else 0.0 for task in self.tasks])
        return weights / weights.sum()

    def branch_tasks(self, name):
        sources = [task for task in self.tasks if task != self.main_task]
        if name == "target":
            chosen = []
        elif name == "all":
            chosen = sources
        else:
            ranked = sorted(sources, key=lambda task: -self.ranking[task])  # stable: ties keep the run's order
            chosen = ranked[:int(FORKMERGE_TOP_K.match(name).group(1))]
        return [task for task in self.tasks if task in chosen or task == self.main_task]

    def new_trainer(self, name, quiet=False):
        trainer = (QuietTrainer if quiet else Trainer)(self.model, self.run, self.total_steps, self.stage)
        trainer.branch = name
        return trainer

    def build_branches(self):
        self.branches = []
        for name in self.names:
            tasks = self.branch_tasks(name)
            weights = np.array([1.0 if task == self.main_task else 0.0 for task in self.tasks]) if name == "target" \
                else self.restricted_weights(tasks)
            self.branches.append(Branch(name, tasks, weights, self.new_trainer(name)))

    def train_branch(self, branch, steps):
        """`steps` more optimizer steps of `branch` (fewer at the run's end), continuing its epochs."""
        trainer = branch.trainer
        splits = {task: self.task_splits[task] for task in branch.tasks}
        weights = {task: float(branch.weights[self.tasks.index(task)]) for task in branch.tasks}
        per_epoch = steps_per_epoch(splits, self.run.args.per_gpu_train_batch_size)
        target = min(trainer.total_steps, trainer.global_step + steps)
        while trainer.global_step < target:
            end = min(per_epoch, branch.batch + target - trainer.global_step)
            trainer.train_epoch(splits, weights, branch.epoch, start_batch=branch.batch, end_batch=end)
            branch.batch = end
            if branch.batch == per_epoch:
                branch.epoch, branch.batch = branch.epoch + 1, 0

    def rank_sources(self):
        """The ranking stage of topk:K branches: the main task trained with each source alone, from the start."""
        start = self.snapshot()
        self.ranking = {}
        for source in [task for task in self.tasks if task != self.main_task]:
            self.load(start)
            tasks = [task for task in self.tasks if task in (source, self.main_task)]
            ranking = Branch(f"ranking:{source}", tasks, self.restricted_weights(tasks),
                             self.new_trainer(f"ranking:{source}", quiet=True))
            self.train_branch(ranking, self.ranking_steps)
            self.ranking[source] = self.dev_score()
            self.model.zero_grad(set_to_none=True)
            logger.info("ForkMerge ranking: %s with %s for %d steps: dev %s %.4f", self.main_task, source,
                        self.ranking_steps, self.metric, self.ranking[source])
        self.load(start)

    def start(self, restored_state=None):
        if restored_state is not None:
            self.load_state_dict(restored_state)
            return
        if any(FORKMERGE_TOP_K.match(name) for name in self.names):
            self.rank_sources()
        self.build_branches()

    @property
    def step(self):
        return self.branches[0].trainer.global_step

    @property
    def done(self):
        return self.branches[0].trainer.done

    # -- one interval and its merge

    def fork_and_merge(self):
        """Train every branch for one interval from the current model, then merge them into it; returns the
        merge's record for task_weights.json."""
        forked = len(self.branches) > 1
        start = self.snapshot() if forked else None
        ends, branch_scores = [], []
        for index, branch in enumerate(self.branches):
            if index > 0:
                # Another branch's leftover gradients (--zero_grad_in_place keeps them) are not this one's.
                self.model.zero_grad(set_to_none=True)
                self.load(start)
            if index == len(self.branches) - 1:
                start = None  # the last branch starts: its copy is no longer needed
            self.train_branch(branch, self.merge_steps)
            branch_scores.append(self.dev_score())
            ends.append(self.snapshot() if forked else None)
        if forked:
            self.model.zero_grad(set_to_none=True)
        ranked = sorted(range(len(self.branches)), key=lambda index: -branch_scores[index])
        lambdas = [0.0] * len(self.branches)
        lambdas[ranked[0]] = 1.0
        best, candidates = branch_scores[ranked[0]], []
        for position, index in enumerate(ranked[1:], start=1):
            upper_bound = sum(lambdas) / position
            chosen = 0.0
            for alpha in self.run.args.forkmerge_alphas:
                if alpha == 0:  # the merge so far, already scored
                    continue
                lambdas[index] = alpha * upper_bound
                self.load_merge(ends, lambdas)
                value = self.dev_score()
                candidates.append({"coefficients": normalised(lambdas), "dev": value})
                if value > best:
                    best, chosen = value, lambdas[index]
            lambdas[index] = chosen
        if forked:
            self.load_merge(ends, lambdas)
        coefficients = normalised(lambdas)
        self.merges += 1
        weights = sum(coefficient * branch.weights for coefficient, branch in zip(coefficients, self.branches))
        logger.info("ForkMerge merge %d (step %d): dev %s %s -> coefficients %s, merged %.4f", self.merges, self.step,
                    self.metric, ", ".join(f"{branch.name} {value:.4f}" for branch, value in
                                           zip(self.branches, branch_scores)),
                    ", ".join(f"{branch.name} {value:.3f}" for branch, value in zip(self.branches, coefficients)), best)
        record = {"forkmerge_branches": [branch.name for branch in self.branches],
                  "forkmerge_branch_weights": [branch.weights.tolist() for branch in self.branches],
                  "forkmerge_metric": self.metric, "forkmerge_branch_dev": branch_scores,
                  "forkmerge_candidates": candidates, "forkmerge_coefficients": coefficients, "forkmerge_dev": best}
        if self.merges == 1 and self.ranking is not None:
            record["forkmerge_ranking_dev"] = [self.ranking.get(task) for task in self.tasks]
        return weights, record

    # -- checkpoints

    def state_dict(self):
        return {"ranking": self.ranking, "merges": self.merges, "metric": self.metric,
                "branches": [{"name": branch.name, "epoch": branch.epoch, "batch": branch.batch,
                              "trainer": branch.trainer.state_dict()} for branch in self.branches]}

    def load_state_dict(self, state):
        self.ranking, self.merges, self.metric = state["ranking"], state["merges"], state["metric"]
        self.build_branches()
        for branch, saved in zip(self.branches, state["branches"]):
            branch.trainer.load_state_dict(saved["trainer"])
            branch.epoch, branch.batch = saved["epoch"], saved["batch"]


def normalised(coefficients):
    total = sum(coefficients)
    return [coefficient / total for coefficient in coefficients]


def train(model, run, stage, task_splits, task_weights, history, dev_split):
    """ForkMerge over one training stage (in place of training_loop.train_stage); returns the task weights the
    last merge stands for. The model ends as the last merge."""
    _, total_steps = training_schedule(run.args, task_splits)
    run.reporter.start_stage(stage, total_steps)
    if stage in run.completed_stages:
        return np.array(run.completed_stages[stage])
    method = ForkMerge(model, run, stage, task_splits, task_weights, dev_split, total_steps)
    restored = None
    if run.resume is not None and run.resume.stage == stage:
        restored, run.resume = run.restored_target_aware_baseline, None
        logger.info("resuming ForkMerge after merge %d (step %d)", restored["merges"],
                    restored["branches"][0]["trainer"]["global_step"])
    method.start(restored)
    run.target_aware_baseline = method  # its state goes into every checkpoint
    weights = np.asarray(history.history[-1]["weights"]) if method.merges else np.asarray(task_weights)
    dev = evaluates_during(run, task_splits)
    while not method.done and not (dev is not None and dev.stopped):
        weights, record = method.fork_and_merge()
        history.add_to_next_entry(**record)
        history.record("merge", method.merges, weights, step=method.step)
        stopped = dev is not None and dev.evaluate(model, stage, method.merges - 1, method.step)
        if run.args.save_steps > 0:
            training_loop.save_checkpoint(run, model, method.branches[0].trainer, method.merges, 0, weights)
        if stopped:
            break
    run.completed_stages[stage] = [float(weight) for weight in weights]
    return weights
