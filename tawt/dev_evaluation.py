"""The main task on dev during training (--eval_strategy): its dev curve, the best model, early stopping.

The stages that train the main task score it on dev_{main_task}.txt after every epoch (--eval_strategy
epoch) or every --eval_steps optimizer steps of the stage (steps): the one stage of single-task and joint
training, and the fine-tuning stage of pre-training (before fine-tuning the main task's head is untrained,
so a score there would measure nothing). Every score goes to dev_curve.json and to TensorBoard.

--load_best_model_at_end keeps the weights of the best score (--metric_for_best_model; default the main
task's table metric: accuracy for tagging, F1 otherwise; `loss` counts lower as better), and at the end they
replace the last ones: the saved model, the final dev and test results and the test predictions are the best
model's. --early_stopping_patience N stops training after N scores in a row that do not beat the best.

Scoring draws no random number and leaves the model in the mode it was in, so a run that only records its
dev curve trains exactly as one that does not. What the decisions depend on (the scores so far, the best
one and its weights, whether training has stopped) is part of every checkpoint, so a resumed run decides as
the uninterrupted one does.
"""

import logging

from tawt import distributed
from tawt.errors import UsageError
from tawt.evaluation import score, split_results
from tawt.output_files import DEV_CURVE_FILE, write_json_atomic
from tawt.sequence_metrics import primary_metric

logger = logging.getLogger("tawt")


class DevEvaluation:
    """The dev scores of the main task during training, the best of them, and when to stop."""

    def __init__(self, run, model, split):
        args = run.args
        self.run, self.split, self.task = run, split, run.main_task
        # The metrics this task's family reports: those of its gold labels scored against themselves.
        reference = split_results(model, self.task, split, [sentence.labels for sentence in split.sentences], 0.0)
        metrics = sorted(key for key, value in reference.items() if isinstance(value, float))
        requested = args.metric_for_best_model
        if requested is not None and requested.startswith("eval_"):  # Hugging Face's spelling, eval_f1
            requested = requested[len("eval_"):]
        self.metric = requested or primary_metric(reference["metric_family"])
        if self.metric not in metrics:
            raise UsageError(f"--metric_for_best_model {args.metric_for_best_model}: the main task {self.task} "
                             f"({reference['metric_family']} metrics) reports {', '.join(metrics)}; give one of those")
        self.greater_is_better = self.metric != "loss"
        self.evaluations = []  # one entry per score: stage, epoch, step and the metrics
        self.best = None  # the entry of the best score so far
        self.best_state = None  # the model's weights at the best score (--load_best_model_at_end, main process)
        self.scores_since_best = 0
        self.stopped = False

    def evaluate(self, model, stage, epoch, step):
        """Score the model on dev after optimizer step `step` of `stage` (in epoch `epoch`, 0-based); returns
        whether training stops here (--early_stopping_patience)."""
        args = self.run.args
        results = score(self.run, model, self.task, self.split)[0] if distributed.is_main_process() else None
        # Every process takes the main process's score, so that all of them stop at the same step.
        results = distributed.broadcast_from_main(results)
        entry = {"stage": stage, "epoch": epoch + 1, "step": step,
                 **{key: value for key, value in results.items() if isinstance(value, float)}}
        self.evaluations.append(entry)
        if self.best is None or self._better(entry[self.metric], self.best[self.metric]):
            self.best, self.scores_since_best = entry, 0
            if args.load_best_model_at_end and distributed.is_main_process():
                self.best_state = {name: tensor.detach().to("cpu", copy=True)
                                   for name, tensor in model.state_dict().items()}
        else:
            self.scores_since_best += 1
        patience = args.early_stopping_patience
        if patience is not None and self.scores_since_best >= patience:
            self.stopped = True
            logger.info("early stopping at %s step %d: %d dev scores without beating %s %.4f (step %d)", stage, step,
                        patience, self.metric, self.best[self.metric], self.best["step"])
        logger.info("dev %s, %s epoch %d step %d: %s %.4f (best %.4f)", self.task, stage, epoch + 1, step,
                    self.metric, entry[self.metric], self.best[self.metric])
        self.write()
        self.run.reporter.dev_score(self.task, step, entry)
        return self.stopped

    def _better(self, value, best):
        return value > best if self.greater_is_better else value < best

    def load_best_model(self, model):
        """With --load_best_model_at_end, put the best score's weights back into `model` (main process)."""
        if not self.run.args.load_best_model_at_end or self.best_state is None:
            return
        model.load_state_dict(self.best_state)
        logger.info("loaded the best model: %s %.4f on dev at %s epoch %d step %d", self.metric,
                    self.best[self.metric], self.best["stage"], self.best["epoch"], self.best["step"])

    def write(self):
        if not distributed.is_main_process():
            return
        args = self.run.args
        write_json_atomic(self.run.path(DEV_CURVE_FILE), {
            "task": self.task,
            "metric_for_best_model": self.metric,
            "greater_is_better": self.greater_is_better,
            "eval_strategy": args.eval_strategy,
            "eval_steps": args.eval_steps,
            "evaluations": self.evaluations,
            "best": self.best,
            "best_model_loaded_at_end": bool(args.load_best_model_at_end),
            "stopped_early": self.stopped,
        })

    def state_dict(self):
        return {"evaluations": list(self.evaluations), "best": self.best, "best_state": self.best_state,
                "scores_since_best": self.scores_since_best, "stopped": self.stopped}

    def load_state_dict(self, state):
        self.evaluations = list(state["evaluations"])
        self.best, self.best_state = state["best"], state["best_state"]
        self.scores_since_best, self.stopped = state["scores_since_best"], state["stopped"]


def start_dev_evaluation(run, model, data):
    """The run's DevEvaluation (None without --eval_strategy), continuing a checkpoint's when resuming."""
    if run.args.eval_strategy == "no":
        return None
    evaluation = DevEvaluation(run, model, data.dev[run.main_task])
    if run.restored_dev_evaluation is not None:
        evaluation.load_state_dict(run.restored_dev_evaluation)
        run.restored_dev_evaluation = None
    return evaluation


def evaluates_during(run, task_splits):
    """The run's DevEvaluation when the stage training `task_splits` scores the main task on dev, else None."""
    evaluation = getattr(run, "dev_evaluation", None)
    return evaluation if evaluation is not None and run.main_task in task_splits else None
