"""Every flag the paradigm scripts share, and every check of what a user may say before anything is loaded.

The flags keep the original scripts' names and the paper's defaults. Each check raises a UsageError whose
one line names the flag and the fix, so that a mistake stops the run before any data or model is read.
A paradigm script adds its own few flags beside these (and checks them in its parse_arguments).

This module imports neither torch nor transformers (tests/test_help.py checks it): --help and a mistyped
flag answer at once, and the choices the flags offer (the forward paths, the target-aware baselines' modes,
ForkMerge's branches) are defined here for the modules that use them.
"""

import argparse
import logging
import math
import os
import re

import numpy as np

from tawt.errors import UsageError
from tawt.output_files import TRAINING_LOG_FILE

logger = logging.getLogger("tawt")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """A script's docstring as written, and each flag's default after its help.

    Switches (store_true) show none: they are off unless given. A flag whose default is None, or whose help
    already describes its default, says in its help what leaving it out does.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text.lower() or action.default is None or action.default is argparse.SUPPRESS
                or action.nargs == 0):
            return text
        return text + " (default: %(default)s)"


def argument_parser(description):
    """An ArgumentParser with the scripts' HelpFormatter."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


# The forward paths of a BERT-family encoder (modeling_multi_bert.MultiTaskTagger); "encoder" is the encoder's
# own forward.
FORWARD_PATHS = ("unpadded", "bucketed")
# How a sentence-level task's head reads an example: its first token's state ([CLS] for BERT), or the
# mean of its tokens' states.
SENTENCE_POOLINGS = ("first", "mean")
REPORT_TO_CHOICES = ("tensorboard", "none")


def add_report_to_argument(group):
    group.add_argument(
        "--report_to", choices=REPORT_TO_CHOICES, default=None,
        help="tensorboard: also write TensorBoard event files to OUTPUT_DIR/tensorboard (each task's training "
             "loss and the learning rate every --logging_steps steps, the task weights and cosines of every "
             "update, the head-fit loss, the dev scores during training (--eval_strategy), dev and test metrics, the "
             "arguments); none: only the run's own files. "
             "Default: tensorboard when the tensorboard package is installed, else none (with a warning)",
    )


def add_common_arguments(parser):
    data = parser.add_argument_group("data, model and output")
    data.add_argument("--data_dir", default=None,
                      help="directory of {train,dev,test}_{task}.txt and {task}_labels.txt; default: the embedded "
                           "default data (Brown corpus with spaCy labels), built and cached on first use")
    data.add_argument("--model_type", default=None,
                      help="accepted for compatibility with the original scripts; the architecture is read from "
                           "the model's config")
    data.add_argument("--model_name_or_path", default=None,
                      help="a Hugging Face encoder directory or name (BERT, RoBERTa, ...); default: the MiniLM "
                           "encoder of the embedded default. Without --do_train: a directory saved by a run")
    data.add_argument("--output_dir", required=True, help="where the model, results and predictions go")
    data.add_argument("--overwrite_output_dir", action="store_true",
                      help="allow writing into an output directory that already holds a run's results")
    data.add_argument("--max_seq_length", type=int, default=128,
                      help="sub-tokens per sentence, special tokens included; longer training sentences are cut "
                           "(and counted), longer evaluation sentences are predicted in windows")
    data.add_argument("--keep_order", action="store_true",
                      help="keep the training files' sentence order: --main_task_train_sent_num / --train_sent_num "
                           "N (and the ratio analysis' cut) then take a file's first N sentences. By default each "
                           "task's training file is shuffled first, with an order of its own drawn from "
                           "--data_seed, as the original's data converter did")
    data.add_argument("--data_seed", type=int, default=42,
                      help="seed of the training files' sentence order (not of training: runs with different "
                           "--seed train on the same sentences); recorded in run_args.json")
    data.add_argument("--eval_main_task_only", action="store_true",
                      help="evaluate and predict the main task only (the sources' dev and test sets are not read); "
                           "by default every task with a head is evaluated. Single-task runs have only one task")
    data.add_argument("--do_train", action="store_true", help="train")
    data.add_argument("--do_eval", action="store_true", help="evaluate on dev_{task}.txt")
    data.add_argument("--do_predict", action="store_true",
                      help="evaluate on test_{task}.txt and write {task}_test_predictions.txt")
    add_report_to_argument(data)

    training = parser.add_argument_group("training (the paper's defaults)")
    training.add_argument("--per_gpu_train_batch_size", type=int, default=32, help="sentences per training batch")
    training.add_argument("--per_gpu_eval_batch_size", type=int, default=64, help="sentences per evaluation batch")
    training.add_argument("--learning_rate", type=float, default=5e-5, help="AdamW learning rate")
    training.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases/norms)")
    training.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon")
    training.add_argument("--max_grad_norm", type=float, default=1.0,
                          help="clip the gradient's norm to this value; 0: no clipping")
    training.add_argument("--num_train_epochs", type=float, default=4.0, help="training epochs (whole numbers)")
    training.add_argument("--max_steps", type=int, default=-1,
                          help="if > 0: stop after this many optimizer steps (overrides --num_train_epochs)")
    training.add_argument("--warmup_steps", type=int, default=0, help="linear warm-up steps")
    training.add_argument("--group_by_length", action="store_true",
                          help="batch sentences of similar length together (less padding, faster); batches are "
                               "still random, but no longer uniformly so: off by default, as in the paper")
    training.add_argument("--padded_forward", action="store_true",
                          help="run the encoder's own forward on padded batches instead of the unpadded one "
                               "(BERT-family encoders compute on real tokens only: same results, about twice as "
                               "fast on Brown-length sentences); for checking, or for encoders of another shape")
    training.add_argument("--forward_path", choices=("auto",) + FORWARD_PATHS, default="auto",
                          help="how a BERT-family encoder runs: unpadded (on the real tokens only; the faster on a "
                               "CPU), bucketed (batches padded to a multiple of 16 positions and to the full batch, "
                               "SDPA attention: few distinct shapes, for GPUs and --torch_compile); auto: unpadded "
                               "on a CPU, bucketed on a GPU. Same results either way; run_args.json records the "
                               "path taken")
    training.add_argument("--torch_compile", action="store_true",
                          help="compile the encoder's forward and backward with torch.compile (training, the head "
                               "fit's encoder pass and evaluation; the TAWT update too). Costs a compilation at the "
                               "start (seconds to minutes) and a C++ compiler")
    training.add_argument("--torch_compile_mode", default=None,
                          choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"),
                          help="torch.compile's mode (implies --torch_compile); reduce-overhead adds CUDA graphs on "
                               "a GPU. Default: torch.compile's default")
    training.add_argument("--dropout", type=float, default=None,
                          help="dropout before the task heads; default: the encoder's hidden_dropout_prob")
    training.add_argument("--sentence_pooling", choices=SENTENCE_POOLINGS, default="first",
                          help="what a sentence-level task's head reads: the first token's state (first, [CLS]) or "
                               "the mean of the example's token states (mean)")
    training.add_argument("--logging_steps", type=int, default=50,
                          help=f"write the mean training loss every N steps to {TRAINING_LOG_FILE}")
    training.add_argument("--log_update_norms", action="store_true",
                          help="with each of those lines, how far the encoder and the main task's head moved since "
                               "the previous one (parameter_update_norm: the norm of the parameters' change, what "
                               "the optimizer actually did); keeps one more copy of those parameters")
    training.add_argument("--save_steps", type=int, default=0,
                          help="write a checkpoint to OUTPUT_DIR/checkpoints every N steps and after every epoch "
                               "(0: never). Rerunning the same command after an interruption resumes from the "
                               "newest one; the checkpoints are deleted once the results are written")
    training.add_argument("--resume_from_checkpoint", default=None,
                          help="resume from this checkpoint file (or directory of checkpoints) instead of the "
                               "newest one in --output_dir")
    during = parser.add_argument_group(
        "the main task on dev during training (default: none, the last model is kept, as in the paper)")
    during.add_argument("--eval_strategy", choices=("no", "epoch", "steps"), default="no",
                        help="score the main task on dev_{main_task}.txt after every epoch, or every --eval_steps "
                             "optimizer steps, of the stages that train it (pre-training: its fine-tuning stage); "
                             "the scores go to dev_curve.json and TensorBoard. Needs --do_train and --do_eval")
    during.add_argument("--eval_steps", type=int, default=None,
                        help="with --eval_strategy steps: score every N optimizer steps of the stage")
    during.add_argument("--load_best_model_at_end", action="store_true",
                        help="keep the model of the best dev score (kept in every checkpoint too) and save, evaluate "
                             "and predict with it instead of the last one")
    during.add_argument("--metric_for_best_model", default=None,
                        help="the dev metric that picks the best model and counts for early stopping: any the main "
                             "task reports (f1, precision, recall, accuracy, micro_f1, macro_f1) or loss (lower "
                             "is better); default: the main task's table metric (accuracy for tagging, F1 "
                             "otherwise)")
    during.add_argument("--early_stopping_patience", type=int, default=None,
                        help="stop training after N dev scores in a row that do not beat the best one")
    original = parser.add_argument_group(
        "the original's optimizer (both together reproduce its steps; docs/differences_from_the_original.md)")
    original.add_argument("--zero_grad_in_place", action="store_true",
                          help="zero the gradients after each step instead of clearing them, as the original's "
                               "model.zero_grad() did in torch 1.4: AdamW then keeps stepping every parameter that "
                               "has had a gradient (another task's head, on its momentum) at every later step. "
                               "Default: a head outside the batch is left untouched")
    original.add_argument("--legacy_adamw", action="store_true",
                          help="the AdamW step of transformers 2.8, which the original used (eps added to the raw "
                               "sqrt(v), bias corrections in the step size, weight decay after the step) instead "
                               "of torch's AdamW")
    training.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    training.add_argument("--seed", type=int, default=1, help="random seed")
    training.add_argument("--no_cuda", action="store_true", help="run on the CPU even when a GPU is present")
    precision = training.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 autocast with a gradient scaler (GPU)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU, or a CPU that supports it)")
    return parser


def add_multi_task_arguments(parser, main_task_weighted=True, target_aware_baselines=False):
    """The knobs shared by every multi-task script: which tasks, their weights, and the TAWT update (and,
    with `target_aware_baselines`, --weighting gcs and olaux: tawt/target_aware_baselines.py)."""
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--auxiliary_task_list", nargs="+", required=True,
                       help="the source tasks, e.g. 'pos chunking predicate' (commas also work)")
    tasks.add_argument("--main_task", required=True, help="the target task, e.g. ner")
    tasks.add_argument("--noise_source", default=None, metavar="TASK",
                       help="add a control source, TASK_noise: the source TASK's training labels permuted across all "
                            "its words (seeded by --seed), trained as one more source (its weight follows the "
                            "sources' in --task_weights). It carries no information a tagger could learn: how much "
                            "weight it gets, and how much it hurts, is the control for the real sources")
    tasks.add_argument("--main_task_train_sent_num", type=int, default=None,
                       help="use the first N sentences of train_{main_task}.txt (paper: pos 100, chunking 100, "
                            "predicate 300, ner 500); default: all")

    weighting = parser.add_argument_group("task weights and the TAWT update")
    order = "sources in order, main task last" if main_task_weighted else "one per source, in order"
    weighting.add_argument("--task_weights", nargs="+", type=float, default=None,
                           help=f"starting task weights ({order}); normalised to sum 1; default: uniform")
    # forkmerge: ForkMerge (tawt/forkmerge.py), a target-aware baseline of its own kind (several model copies).
    weighting.add_argument("--weighting", choices=("fixed", "tawt") + (TARGET_AWARE_BASELINES + (FORKMERGE,)
                                                                       if target_aware_baselines else ()),
                           default="tawt",
                           help="fixed: the weights stay as given; tawt: they follow the TAWT update after each epoch "
                                "(and every --weight_update_steps steps)" + (
                                    "; gcs: GCS (Du et al. 2018), fixed weights and each source batch's encoder "
                                    "gradient kept or scaled by its cosine with the main task's; olaux: OL-AUX (Lin "
                                    "et al. 2019), weights moved additively by <G_main, G_source>; forkmerge: "
                                    "ForkMerge (Jiang et al. 2023), branches trained with different task weights and "
                                    "merged by the main task's dev score (tawt/forkmerge.py)"
                                    if target_aware_baselines else ""))
    weighting.add_argument("--weight_lr", type=float, default=1.0, help="step size of the weight update (paper: 1)")
    weighting.add_argument("--normalized_gradients", action="store_true",
                           help="exponent -weight_lr * g_t (g_t = -cosine); without it, -weight_lr * "
                                "inv_constant * g_t")
    weighting.add_argument("--inv_constant", type=float, default=1.0,
                           help="scale s of the weight gradient when --normalized_gradients is not given "
                                "(paper's weighted pre-training: 1, 10, 30, 100)")
    weighting.add_argument("--gradient_sampling_batch_size", type=int, default=64,
                           help="sentences in each sampled batch whose encoder gradient is compared (paper: 64)")
    weighting.add_argument("--gradient_sampling_batches", type=int, default=1,
                           help="M: each task's encoder gradient is the mean over M independently sampled batches "
                                "(paper and original: 1); task_weights.json also records the mean and spread of "
                                "the M batches' own cosines")
    weighting.add_argument("--weight_update_steps", type=int, default=0,
                           help="also update the weights every N optimizer steps within an epoch (0: only after "
                                "each epoch, as in the paper)")
    if main_task_weighted:
        weighting.add_argument("--ablate_source_cosines", action="store_true",
                               help="an ablation of TAWT: the update with every source's cosine replaced by 0 (the "
                                    "main task keeps its 1), so the main task's weight follows TAWT's schedule and "
                                    "the sources keep their starting proportions; task_weights.json records the "
                                    "measured cosines and those the step used")
    return parser


def parse_task_list(values):
    return [task for value in values for task in value.split(",") if task]


def check_task_name(task, flag):
    """A task name becomes part of file names (train_{task}.txt, {task}_test_results.txt in --output_dir): it
    must be a plain name, so that no file is read or written outside the data or output directory."""
    if not task or any(character in task for character in ("/", "\\", "\0")) or task in (".", ".."):
        raise UsageError(f"{flag} {task!r}: a task name must be a plain name without '/' or '\\' (it names "
                         "the files train_{task}.txt and {task}_test_results.txt), e.g. ner")


def check_task_lists(auxiliary_tasks, main_task):
    for task in auxiliary_tasks:
        check_task_name(task, "--auxiliary_task_list")
    check_task_name(main_task, "--main_task")
    if len(set(auxiliary_tasks)) != len(auxiliary_tasks):
        repeated = sorted({task for task in auxiliary_tasks if auxiliary_tasks.count(task) > 1})
        raise UsageError(f"--auxiliary_task_list names {repeated} more than once; name each source once")
    if main_task in auxiliary_tasks:
        raise UsageError(f"--main_task {main_task} is also in --auxiliary_task_list; a task is a source or the main task")


def initial_task_weights(given, tasks, flag="--task_weights"):
    """The starting weights over `tasks`: the given ones normalised to sum 1, or uniform."""
    if given is None:
        return np.full(len(tasks), 1.0 / len(tasks))
    weights = np.asarray(given, dtype=np.float64)
    if len(weights) != len(tasks):
        raise UsageError(f"{flag} has {len(weights)} values but there are {len(tasks)} weighted tasks ({' '.join(tasks)})")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise UsageError(f"{flag} {' '.join(map(str, given))}: weights must be finite and non-negative")
    if not weights.any():
        raise UsageError(f"{flag} are all zero; give at least one positive weight")
    # Divided by the largest first, so that the sum cannot overflow (1e308 1e308 would sum to inf and
    # normalise to zeros): the largest becomes 1 and the sum lies between 1 and the number of weights.
    scaled = weights / weights.max()
    normalised = scaled / scaled.sum()
    if not (np.all(np.isfinite(normalised)) and math.isclose(normalised.sum(), 1.0, rel_tol=1e-9)):
        raise UsageError(f"{flag} {' '.join(map(str, given))} cannot be normalised to sum 1; give weights of "
                         "ordinary size, e.g. 0.2 0.2 0.6")
    with np.errstate(over="ignore"):  # an infinite sum is merely not 1
        total = weights.sum()
    if not math.isclose(total, 1.0, rel_tol=1e-6):
        logger.warning("%s sum to %g, not 1: normalising them to %s", flag, total, normalised.round(6).tolist())
    return normalised


def check_multi_task_arguments(args):
    """Normalise and check the multi-task flags that need no data; returns `args`.

    Called by each script's parse_arguments, so a mistake stops the run before anything is loaded.
    """
    args.auxiliary_task_list = parse_task_list(args.auxiliary_task_list)
    check_task_lists(args.auxiliary_task_list, args.main_task)
    if getattr(args, "noise_source", None) is not None:
        add_noise_source(args)
    check_weighting_arguments(args)
    if hasattr(args, "target_gradient_steps"):
        check_target_aware_baseline_arguments(args)
    return args


NOISE_SUFFIX = "_noise"


def add_noise_source(args):
    """--noise_source TASK: TASK_noise joins the sources, last (run_args.json records both)."""
    source, noise = args.noise_source, args.noise_source + NOISE_SUFFIX
    if source not in args.auxiliary_task_list:
        raise UsageError(f"--noise_source {source} is not in --auxiliary_task_list {' '.join(args.auxiliary_task_list)}; "
                         "give one of the sources (its labels are permuted)")
    if noise in args.auxiliary_task_list + [args.main_task]:
        raise UsageError(f"--noise_source {source}: a task is already named {noise}; rename it, or leave the flag out")
    args.auxiliary_task_list = args.auxiliary_task_list + [noise]


def noise_sources(args):
    """{TASK_noise: TASK} for --noise_source TASK, else {}: the tasks read from another task's files."""
    source = getattr(args, "noise_source", None)
    return {} if source is None else {source + NOISE_SUFFIX: source}


def check_ratio_arguments(ratio, main_task_sentences):
    """The ratio analysis' --auxiliary_main_ratio r: every source is cut to round(r * n_main) sentences, so r
    must be finite and positive, n_main given, and the cut must leave each source at least one sentence."""
    if ratio is None:
        return
    if not (math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"--auxiliary_main_ratio {ratio}: give a finite positive ratio (paper: 1 to 128)")
    if main_task_sentences is None:
        raise UsageError("--auxiliary_main_ratio needs --main_task_train_sent_num (n_main)")
    source_sentences = ratio * main_task_sentences
    if not math.isfinite(source_sentences) or round(source_sentences) < 1:
        raise UsageError(
            f"--auxiliary_main_ratio {ratio} with --main_task_train_sent_num {main_task_sentences} cuts every source "
            f"to {round(source_sentences)} sentences; give a ratio of at least {1 / main_task_sentences:g} (one "
            "sentence)"
            if math.isfinite(source_sentences) else
            f"--auxiliary_main_ratio {ratio} times --main_task_train_sent_num {main_task_sentences} overflows; "
            "give a smaller ratio")


def check_weighting_arguments(args):
    check_positive(args.main_task_train_sent_num, "--main_task_train_sent_num", "sentences; leave it out to use all")
    if not math.isfinite(args.inv_constant):
        raise UsageError(f"--inv_constant {args.inv_constant}: give a finite number (paper: 1, 10, 30, 100)")
    if args.weighting == "tawt":
        check_weight_lr(args.weight_lr, "Use --weighting fixed to keep the weights fixed")
        if not args.normalized_gradients and args.inv_constant <= 0:
            raise UsageError(
                f"--inv_constant {args.inv_constant} would freeze (or reverse) the TAWT update; give a positive "
                "value, --normalized_gradients, or --weighting fixed to keep the weights fixed"
            )
        # The step size of weighted_training_basics.weight_step_size, which a check must not import (torch).
        if not math.isfinite(args.weight_lr * (1.0 if args.normalized_gradients else args.inv_constant)):
            raise UsageError(f"--weight_lr {args.weight_lr} times --inv_constant {args.inv_constant} overflows; "
                             "give smaller values")
    if args.gradient_sampling_batch_size < 1:
        raise UsageError("--gradient_sampling_batch_size must be at least 1")
    if args.gradient_sampling_batches < 1:
        raise UsageError(f"--gradient_sampling_batches {args.gradient_sampling_batches}: give at least 1 batch")
    if getattr(args, "ablate_source_cosines", False) and args.weighting != "tawt":
        raise UsageError(f"--ablate_source_cosines changes the TAWT update, and --weighting is {args.weighting}; give "
                         "--weighting tawt, or leave the flag out")
    if args.weight_update_steps < 0:
        raise UsageError(f"--weight_update_steps {args.weight_update_steps}: give 0 (after each epoch only) or a "
                         "positive number of steps")


def check_weight_lr(weight_lr, alternative):
    """The TAWT update's step size: finite and positive; `alternative` says what to do instead."""
    if not (math.isfinite(weight_lr) and weight_lr > 0):
        raise UsageError(f"--weight_lr {weight_lr}: give a finite positive step size (paper: 1); a negative one "
                         f"reverses the update. {alternative}")


def check_positive(value, flag, fix):
    """A count flag that, when given, must be at least 1 (0 or less would silently mean something else)."""
    if value is not None and value < 1:
        raise UsageError(f"{flag} {value}: give at least 1 {fix}")


def check_optimizer_arguments(args, typical_learning_rate="paper: 5e-5"):
    """Batch sizes, learning rate, gradient clipping and sequence length: shared by the training scripts and
    the affinity probe, whose head fits read them too."""
    check_positive(args.per_gpu_train_batch_size, "--per_gpu_train_batch_size", "sentence per batch (paper: 32)")
    check_positive(args.per_gpu_eval_batch_size, "--per_gpu_eval_batch_size", "sentence per batch")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning_rate {args.learning_rate}: give a finite positive value "
                         f"({typical_learning_rate})")
    if not (math.isfinite(args.max_grad_norm) and args.max_grad_norm >= 0):
        raise UsageError(
            f"--max_grad_norm {args.max_grad_norm}: give a finite value >= 0 (paper: 1.0; 0 turns clipping off)"
        )
    if args.max_seq_length < 1:
        raise UsageError(f"--max_seq_length {args.max_seq_length}: give a positive length (paper: 128)")


def check_training_arguments(args):
    """The flags every script shares whose bad values would otherwise run to a meaningless end."""
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UsageError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    if args.num_train_epochs != int(args.num_train_epochs) or args.num_train_epochs < 1:
        raise UsageError(f"--num_train_epochs {args.num_train_epochs}: give a whole number of epochs (>= 1)")
    check_optimizer_arguments(args)
    check_output_dir_is_not_the_model(args)
    if args.torch_compile or args.torch_compile_mode:
        check_compiler()
    check_dev_evaluation_arguments(args)


def check_dev_evaluation_arguments(args):
    """--eval_strategy and the flags that act on its dev scores (the metric's name is checked against the
    main task's metrics once its labels are read: tawt/dev_evaluation.py)."""
    strategy = args.eval_strategy
    if strategy == "steps" and args.eval_steps is None:
        raise UsageError("--eval_strategy steps needs --eval_steps N (score the main task every N optimizer steps)")
    if args.eval_steps is not None and strategy != "steps":
        raise UsageError(f"--eval_steps {args.eval_steps} acts with --eval_strategy steps only; add it, or leave "
                         "--eval_steps out")
    check_positive(args.eval_steps, "--eval_steps", "optimizer step")
    check_positive(args.early_stopping_patience, "--early_stopping_patience", "dev score")
    if strategy == "no":
        given = [flag for flag, value in (("--load_best_model_at_end", args.load_best_model_at_end),
                                          ("--metric_for_best_model", args.metric_for_best_model),
                                          ("--early_stopping_patience", args.early_stopping_patience)) if value]
        if given:
            raise UsageError(f"{given[0]} acts on the dev scores taken during training; add --eval_strategy epoch "
                             "(or steps with --eval_steps N)")
        return
    if not args.do_train:
        raise UsageError(f"--eval_strategy {strategy} scores the model during training; add --do_train, or leave "
                         "--eval_strategy out")
    if not args.do_eval:
        raise UsageError(f"--eval_strategy {strategy} scores the main task on its dev set; add --do_eval (it also "
                         "reads that set)")


def check_output_dir_is_not_the_model(args):
    """Training into the encoder's own directory would replace the model it reads by the fine-tuned one (only
    an evaluation may write its results beside a saved model)."""
    model, output_dir = args.model_name_or_path, args.output_dir
    if (args.do_train and model and os.path.isdir(model) and os.path.isdir(output_dir)
            and os.path.samefile(model, output_dir)):
        raise UsageError(f"--output_dir {output_dir} is the --model_name_or_path directory: training there would "
                         "replace the model it starts from; choose another --output_dir")


def check_compiler():
    """torch.compile needs a C++ compiler, and would only find none at the first step, after the run's files
    were written."""
    from torch._inductor import exc
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise UsageError("--torch_compile: no C++ compiler found (torch.compile's inductor needs one: g++, or the "
                         "one the CXX environment variable names); install one, or leave --torch_compile out") from None


def check_max_seq_length(max_seq_length, config):
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_seq_length > limit:
        raise UsageError(f"--max_seq_length {max_seq_length} exceeds the model's {limit} positions; use at most {limit}")


def repeated_flags(argv):
    """The flags given more than once in `argv`, each with its values in the order given ({flag: [values]}).

    argparse keeps the last value: a flag a preset gives and the user gives again (the grid's EXTRA_ARGS
    come after the preset's flags) takes the user's value, and the run records both.
    """
    given, flag = {}, None
    for token in argv:
        if token.startswith("--"):
            flag, _, value = token.partition("=")
            given.setdefault(flag, []).append([value] if value else [])
        elif flag is not None:
            given[flag][-1].append(token)
    return {flag: [" ".join(values) for values in occurrences] for flag, occurrences in given.items()
            if len(occurrences) > 1}


# --weighting gcs and olaux: tawt/target_aware_baselines.py.
TARGET_AWARE_BASELINES = ("gcs", "olaux")
# OL-AUX's beta multiplies raw gradient dot products, so no value carries over between models and losses.
# On the medium grid (MiniLM, learning rate 5e-4) lr * <G_main, G_k> is about 1e-4 per source step: beta = 100
# moves a coefficient (1 at the start) by about 0.01 per step, by O(1) over a run. Not tuned on dev.
OLAUX_LR = 100.0
GCS_MODES = ("unweighted", "weighted")
# du: every update holds the main task's gradient (Du et al. 2018); gated: a source step applies the gated
# source gradient alone (what --weighting gcs computed before the variants were named).
GCS_VARIANTS = ("du", "gated")


def add_target_aware_baseline_arguments(parser):
    group = parser.add_argument_group("target-aware baselines (--weighting gcs, --weighting olaux)")
    group.add_argument("--gcs_mode", choices=GCS_MODES, default="unweighted",
                       help="GCS (Du et al. 2018): unweighted keeps a source batch's encoder gradient when its cosine "
                            "with the target gradient is > 0 and drops it otherwise; weighted scales it by max(0, cos)")
    group.add_argument("--gcs_variant", choices=GCS_VARIANTS, default="du",
                       help="GCS: du (default), as Du et al. 2018 and AuxiLearn's GradCosine compute it: each update is "
                            "the main task's gradient plus the kept (or cosine-scaled) source gradient; gated: a step "
                            "on a source batch applies the gated source gradient alone, so the main task trains only "
                            "on its own batches (the runs made before this flag existed)")
    group.add_argument("--target_gradient_steps", type=int, default=1,
                       help="GCS and OL-AUX: refresh the target gradient (the main task's encoder gradient on "
                            "--gradient_sampling_batch_size sampled sentences) at a source step once it is this many "
                            "steps old; 1: at every source step, as in both papers")
    group.add_argument("--olaux_lr", type=float, default=OLAUX_LR,
                       help="OL-AUX (Lin et al. 2019): step size beta of the coefficients, lambda_k += beta * "
                            "sum over the horizon (--weight_update_steps) of lr * <G_main, G_k> (default %(default)s)")
    return parser


def check_target_aware_baseline_arguments(args):
    if args.target_gradient_steps < 1:
        raise UsageError(f"--target_gradient_steps {args.target_gradient_steps}: give at least 1 (1: a fresh target "
                         "gradient at every source step)")
    if args.weighting == "olaux" and not (math.isfinite(args.olaux_lr) and args.olaux_lr > 0):
        raise UsageError(f"--olaux_lr {args.olaux_lr}: give a finite positive step size (default {OLAUX_LR:g})")
    # torchrun's WORLD_SIZE, read before the processes connect: fail before anything is loaded.
    if args.weighting in TARGET_AWARE_BASELINES and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"--weighting {args.weighting} runs in one process only; start it without torchrun")


# --weighting forkmerge: tawt/forkmerge.py.
FORKMERGE = "forkmerge"
DEFAULT_BRANCHES = "target,all"
DEFAULT_ALPHAS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # the reference code's --alphas
FORKMERGE_TOP_K = re.compile(r"^topk:(\d+)$")


def add_forkmerge_arguments(parser):
    group = parser.add_argument_group("ForkMerge (--weighting forkmerge)")
    group.add_argument("--forkmerge_branches", default=DEFAULT_BRANCHES,
                       help="the branches, comma-separated: target (the main task alone), all (every source and the "
                            "main task at the run's weights), topk:K (the main task and the K sources that score "
                            "best in the ranking stage) (default %(default)s)")
    group.add_argument("--forkmerge_merge_steps", type=int, default=None,
                       help="optimizer steps each branch trains between two merges (default: one epoch of the run's "
                            "whole task set)")
    group.add_argument("--forkmerge_alphas", type=float, nargs="+", default=DEFAULT_ALPHAS,
                       help="the grid each merge searches a branch's coefficient on, as fractions of the mean "
                            "coefficient of the branches before it (default %(default)s)")
    group.add_argument("--forkmerge_ranking_steps", type=int, default=None,
                       help="topk:K branches: optimizer steps the ranking stage trains the main task with each source "
                            "(default: --forkmerge_merge_steps)")
    return parser


def parse_forkmerge_branches(text, sources):
    """The branch names of --forkmerge_branches, checked against the run's sources."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--forkmerge_branches {text!r}: name at least one branch, e.g. {DEFAULT_BRANCHES}")
    for name in names:
        match = FORKMERGE_TOP_K.match(name)
        if name in ("target", "all"):
            continue
        if match is None:
            raise UsageError(f"--forkmerge_branches: {name!r} is not a branch; give target, all or topk:K, "
                             f"comma-separated (e.g. {DEFAULT_BRANCHES},topk:1)")
        count = int(match.group(1))
        if not 1 <= count < len(sources):
            raise UsageError(f"--forkmerge_branches: {name} with {len(sources)} source(s); K must lie between 1 and "
                             f"{len(sources) - 1} (topk:{len(sources)} is the branch all)")
    if len(set(names)) != len(names):
        raise UsageError(f"--forkmerge_branches {text}: a branch is named twice; name each once")
    return names


def check_forkmerge_arguments(args):
    """The ForkMerge flags, after check_multi_task_arguments (so --noise_source's source is counted)."""
    if args.weighting != FORKMERGE:
        return
    parse_forkmerge_branches(args.forkmerge_branches, args.auxiliary_task_list)
    for flag in ("forkmerge_merge_steps", "forkmerge_ranking_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} {value}: give at least 1 optimizer step (leave it out for the default)")
    if not all(math.isfinite(alpha) and alpha >= 0 for alpha in args.forkmerge_alphas):
        raise UsageError(f"--forkmerge_alphas {' '.join(map(str, args.forkmerge_alphas))}: give finite values >= 0 "
                         "(the reference's: 0 0.2 0.4 0.6 0.8 1)")
    if args.weight_update_steps > 0:
        raise UsageError("--weight_update_steps moves TAWT's or OL-AUX's weights; ForkMerge merges every "
                         "--forkmerge_merge_steps steps: leave --weight_update_steps out")
    if args.do_train and not args.do_eval:
        raise UsageError("--weighting forkmerge chooses each merge by the main task's dev score; add --do_eval (it "
                         "also reads that set)")
    # torchrun's WORLD_SIZE, read before the processes connect: fail before anything is loaded.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--weighting forkmerge runs in one process only; start it without torchrun")
    if getattr(args, "eval_strategy", "no") == "steps":
        raise UsageError("--weighting forkmerge scores the merged model after each merge: use --eval_strategy epoch "
                         "(a score at every merge) instead of steps")
