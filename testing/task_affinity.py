"""Which sources help my target? The TAWT task affinities of candidate sources, before paying for training.

For the main task and for every candidate source, a throw-away copy of its head is fitted on the frozen
encoder (weighted pre-training's head fit: AdamW with a linear decay, here for about --head_fit_steps steps
on the task's training sentences). Then each task's encoder gradient is taken through its own fitted head on
M = --gradient_sampling_batches sampled batches, and compared with the main task's: cos(G_main, G_t), the
similarity that TAWT's weight update follows. A head must be fitted first: through an untrained head, a
source's gradient says nothing about its task.

    python testing/task_affinity.py --main_task brown_pos --candidate_tasks pos chunking ner predicate \\
        --main_task_train_sent_num 300 --add_shuffled_control --output_dir out/affinity

It prints the candidates ranked by their mean cosine over the M batches, with the spread over the batches,
the cosine of the M-batch mean gradients, and the weights that one TAWT update from uniform weights over the
candidates would give (and four updates, the paper's four epochs, had the cosines stayed as measured); the
table is written to OUTPUT_DIR/task_affinity_<main>.csv and .json.

--matrix: every given task (the main task, the candidates, the control) as the main task in turn, on the
same sampled batches and fitted heads: task_affinity_matrix.csv, .json and a heatmap, task_affinity_matrix.png
(needs matplotlib).

--add_shuffled_control: a control source, shuffled_<source>, whose labels are those of --control_source
(default: the first candidate) permuted across all its words and sentences: the same label distribution,
no relation to the words. It should rank last.

--model_name_or_path: a pretrained encoder, or the output directory of a trained run (the affinities after
fine-tuning). The heads are always fitted afresh, so two encoders are compared on the same footing.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from tawt.cross_task_training import (
    Run, UsageError, load_task_data, load_tokenizer, resolve_data_dir, resolve_model_name_or_path, run_main, set_seed,
)
from modeling_multi_bert import MultiTaskTagger, load_encoder
from tawt.output_files import write_text_atomic
from tawt.run_arguments import check_optimizer_arguments, check_positive, check_task_name, check_weight_lr, parse_task_list
from tawt.testing.output_tree import csv_text
from utils_cross_task import IGNORED_LABEL_ID, TaskSplit
from weighted_training_basics import (
    compare_with_main_task, exponentiated_gradient_step, fit_head_on_frozen_encoder, sample_gradient_batches,
    weight_gradients,
)

logger = logging.getLogger("tawt")

PAPER_UPDATES = 4  # the paper trains 4 epochs: four weight updates


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main_task", required=True, help="the target task, e.g. brown_pos")
    parser.add_argument("--candidate_tasks", nargs="+", required=True,
                        help="the candidate source tasks, e.g. 'pos chunking ner predicate' (commas also work)")
    parser.add_argument("--data_dir", default=None,
                        help="directory of train_{task}.txt and {task}_labels.txt; default: the embedded default data")
    parser.add_argument("--model_name_or_path", default=None,
                        help="a Hugging Face encoder, or a trained run's output directory; default: the embedded "
                             "default's MiniLM")
    parser.add_argument("--output_dir", default="task_affinity", help="where the tables (and heatmap) go")
    parser.add_argument("--main_task_train_sent_num", type=int, default=None,
                        help="main-task training sentences to fit its head and sample from (a random N, as in "
                             "training); default: all")
    parser.add_argument("--candidate_train_sent_num", type=int, default=2000,
                        help="training sentences of each candidate to fit its head and sample from (a random N; "
                             "0: all); default 2000, plenty for a linear head")
    parser.add_argument("--gradient_sampling_batches", type=int, default=4,
                        help="M: batches per task on which the gradients are compared (the spread needs M >= 2)")
    parser.add_argument("--gradient_sampling_batch_size", type=int, default=64, help="sentences per sampled batch")
    parser.add_argument("--head_fit_steps", type=int, default=500,
                        help="optimizer steps of each head's fit, rounded up to whole epochs over its sentences: "
                             "every head gets about as many, whatever its task's size")
    parser.add_argument("--learning_rate", type=float, default=1e-2,
                        help="AdamW learning rate of the head fits (a linear head on frozen states; training's "
                             "5e-5 leaves it nearly untrained)")
    parser.add_argument("--per_gpu_train_batch_size", type=int, default=32, help="sentences per head-fit step")
    parser.add_argument("--per_gpu_eval_batch_size", type=int, default=64,
                        help="sentences per batch when the frozen encoder's states are computed")
    parser.add_argument("--max_seq_length", type=int, default=128, help="sub-tokens per sentence (longer ones are cut)")
    parser.add_argument("--weight_lr", type=float, default=1.0,
                        help="step size of the TAWT update behind the weight columns (paper: 1; weighted "
                             "pre-training's --weight_lr x --inv_constant)")
    parser.add_argument("--matrix", action="store_true",
                        help="also every given task as main in turn: an all-pairs table and a heatmap (matplotlib)")
    parser.add_argument("--add_shuffled_control", action="store_true",
                        help="add shuffled_<source>: --control_source's labels permuted across its words")
    parser.add_argument("--control_source", default=None, help="the source the control shuffles; default: the first "
                                                               "candidate")
    parser.add_argument("--seed", type=int, default=1, help="seed of the heads, their fits and the sampled batches")
    parser.add_argument("--data_seed", type=int, default=42, help="seed of the training files' sentence order")
    parser.add_argument("--keep_order", action="store_true", help="take the files' first N sentences instead")
    parser.add_argument("--no_cuda", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the cosines stay float32)")
    # What the shared head fit and data loading read, at the training scripts' defaults.
    parser.set_defaults(weight_decay=0.0, adam_epsilon=1e-8, warmup_steps=0, max_grad_norm=1.0, fp16=False,
                        legacy_adamw=False)
    args = parser.parse_args(argv)
    args.candidate_tasks = parse_task_list(args.candidate_tasks)
    check_arguments(args)
    return args


def check_arguments(args):
    """The training scripts' checks of the flags the probe shares with them, and the probe's own."""
    candidates = args.candidate_tasks
    check_task_name(args.main_task, "--main_task")
    for task in candidates:
        check_task_name(task, "--candidate_tasks")
    check_positive(args.main_task_train_sent_num, "--main_task_train_sent_num", "sentence; leave it out to use all")
    check_optimizer_arguments(args, typical_learning_rate="default 1e-2, for a linear head on frozen states")
    check_weight_lr(args.weight_lr, "It only sets the weight columns of the table")
    if args.main_task in candidates:
        raise UsageError(f"--main_task {args.main_task} is also in --candidate_tasks; name it once, as the main task")
    repeated = sorted({task for task in candidates if candidates.count(task) > 1})
    if repeated:
        raise UsageError(f"--candidate_tasks names {repeated} more than once; name each candidate once")
    for flag in ("gradient_sampling_batches", "gradient_sampling_batch_size", "head_fit_steps"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} {getattr(args, flag)}: give at least 1")
    if args.candidate_train_sent_num < 0:
        raise UsageError(f"--candidate_train_sent_num {args.candidate_train_sent_num}: give a number of sentences, "
                         "or 0 for all")
    if args.control_source is not None and not args.add_shuffled_control:
        raise UsageError("--control_source names the source of the control: add --add_shuffled_control")
    if args.add_shuffled_control:
        args.control_source = args.control_source or candidates[0]
        if args.control_source not in candidates:
            raise UsageError(f"--control_source {args.control_source} is not in --candidate_tasks {candidates}")
        if control_name(args.control_source) in candidates + [args.main_task]:
            raise UsageError(f"a task is already named {control_name(args.control_source)}; rename it to add the "
                             "shuffled control")
    if args.matrix:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--matrix draws its heatmap with matplotlib, which is not installed: pip install "
                             "matplotlib") from None


def control_name(source):
    return f"shuffled_{source}"


def shuffled_control(split, seed):
    """`split` with its labels permuted across all its labelled words (every sentence's together).

    Each word keeps a label of the source's own distribution, drawn without regard to the word: a source
    that shares the encoder with the main task but carries no information a tagger could learn.
    """
    labels = np.array([label for feature in split.features for label in feature.label_ids if label != IGNORED_LABEL_ID])
    shuffled = iter(np.random.default_rng(seed).permutation(labels).tolist())
    features = [
        dataclasses.replace(feature, label_ids=[label if label == IGNORED_LABEL_ID else next(shuffled)
                                                for label in feature.label_ids])
        for feature in split.features
    ]
    return TaskSplit(control_name(split.task), split.split, split.path, split.sentences, features, split.report)


def probe_run(args):
    """A Run holding what the shared head fit, data loading and sampling read."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    tasks = [args.main_task] + args.candidate_tasks
    return Run(args=args, paradigm="task_affinity", main_task=args.main_task, tasks=tasks, device=device,
               data_dir=resolve_data_dir(args.data_dir),
               model_name_or_path=resolve_model_name_or_path(args.model_name_or_path),
               gradient_sampling_generator=torch.Generator().manual_seed(args.seed + 7919))


def load_probe_data(run, tokenizer):
    """Training splits of the main task and the candidates (and the control); returns (labels, splits)."""
    args = run.args
    limits = {args.main_task: args.main_task_train_sent_num}
    limits.update({task: args.candidate_train_sent_num or None for task in args.candidate_tasks})
    data = load_task_data(run, tokenizer, limits, eval_tasks=[])
    labels, splits = dict(data.labels), dict(data.train)
    if args.add_shuffled_control:
        control = shuffled_control(splits[args.control_source], args.seed)
        splits[control.task], labels[control.task] = control, labels[args.control_source]
    return labels, splits


def fit_heads(model, run, splits):
    """A fitted copy of every task's head, and the mean loss of its fit's last epoch."""
    heads, losses = {}, {}
    for task in tqdm(list(splits), desc="fitting heads"):
        order = run.data_order_generator(f"affinity head-fit {task}", 0)
        steps_per_epoch = math.ceil(len(splits[task]) / run.args.per_gpu_train_batch_size)
        epochs = math.ceil(run.args.head_fit_steps / steps_per_epoch)
        heads[task], losses[task] = fit_head_on_frozen_encoder(model, task, splits[task], run, order, epochs)
        logger.info("%s: head fitted on %d sentences, last-epoch loss %.4f", task, len(splits[task]), losses[task])
    return heads, losses


def affinities(model, run, splits, main_tasks):
    """Fit every task's head copy, sample M rounds of batches, and compare each of `main_tasks` with every
    other task of `splits` on them. Returns ({main task: TaskSimilarities over the others, in order},
    {task: its head fit's last-epoch loss})."""
    args = run.args
    heads, fit_losses = fit_heads(model, run, splits)
    batch_rounds = sample_gradient_batches(splits, args.gradient_sampling_batch_size, run.gradient_sampling_generator,
                                           run.pad_token_id, run.device, args.gradient_sampling_batches)
    similarities = {}
    with model.replaced_heads(heads):
        for main_task in tqdm(main_tasks, desc="comparing gradients", disable=len(main_tasks) == 1):
            others = [task for task in splits if task != main_task]
            similarities[main_task] = compare_with_main_task(model, main_task, others, batch_rounds, run.autocast)
    return similarities, fit_losses


def weights_after_updates(cosines, step_size, updates):
    """The weights over the candidates after `updates` TAWT steps from uniform, the cosines held fixed."""
    weights = np.full(len(cosines), 1.0 / len(cosines))
    for _ in range(updates):
        weights = exponentiated_gradient_step(weights, weight_gradients(cosines), step_size)
    return weights


def ranked_table(main_task, candidates, similarities, fit_losses, splits, step_size):
    """One row per candidate, the highest mean cosine first (an undefined cosine last)."""
    one_step = weights_after_updates(similarities.cosines, step_size, 1)
    paper_steps = weights_after_updates(similarities.cosines, step_size, PAPER_UPDATES)
    rows = [{
        "main_task": main_task,
        "task": task,
        "mean_cosine": similarities.batch_means[index],
        "cosine_std": similarities.batch_stds[index],
        "cosine_of_mean_gradients": similarities.cosines[index],
        "weight_after_1_update": float(one_step[index]),
        f"weight_after_{PAPER_UPDATES}_updates": float(paper_steps[index]),
        "head_fit_loss": fit_losses[task],
        "train_sentences": len(splits[task]),
    } for index, task in enumerate(candidates)]
    rows.sort(key=lambda row: (row["mean_cosine"] is None, -(row["mean_cosine"] or 0.0)))
    return [{"rank": rank, **row} for rank, row in enumerate(rows, start=1)]


def format_table(main_task, rows, batches, main_fit_loss):
    def signed(value):
        return "-" if value is None else f"{value:+.3f}"

    lines = [f"main task {main_task} (head-fit loss {main_fit_loss:.3f}); cosines over {batches} sampled batches",
             f"{'rank':>4}  {'task':<20} {'mean cos':>9} {'std':>7} {'cos(mean)':>9} {'w, 1 update':>11} "
             f"{f'w, {PAPER_UPDATES} updates':>12} {'fit loss':>8}"]
    for row in rows:
        lines.append(
            f"{row['rank']:>4}  {row['task']:<20} {signed(row['mean_cosine']):>9} "
            f"{'-' if row['cosine_std'] is None else format(row['cosine_std'], '.4f'):>7} "
            f"{signed(row['cosine_of_mean_gradients']):>9} {row['weight_after_1_update']:>11.4f} "
            f"{row[f'weight_after_{PAPER_UPDATES}_updates']:>12.4f} {row['head_fit_loss']:>8.3f}")
    return "\n".join(lines)


def pairwise(similarities, tasks, field, own=None):
    """A tasks x tasks list of `field` of the TaskSimilarities: row = main task; `own` on the diagonal."""
    matrix = []
    for main_task in tasks:
        others = [task for task in tasks if task != main_task]
        values = getattr(similarities[main_task], field)
        matrix.append([own if task == main_task else values[others.index(task)] for task in tasks])
    return matrix


def heatmap(tasks, matrix, path, title):
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    values = np.array([[np.nan if value is None else value for value in row] for row in matrix], dtype=float)
    figure, axes = plt.subplots(figsize=(1.1 * len(tasks) + 2.5, 0.9 * len(tasks) + 1.8))
    image = axes.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
    axes.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    axes.set_yticks(range(len(tasks)), tasks)
    axes.set_xlabel("task t")
    axes.set_ylabel("main task")
    for row_index, row in enumerate(values):
        for column_index, value in enumerate(row):
            if np.isfinite(value):
                axes.text(column_index, row_index, f"{value:+.2f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axes, label="mean cos(G_main, G_t)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def seconds_text(seconds):
    """A duration as people read it: tenths below a minute (a probe of seconds is not '0 s')."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def main(argv=None):
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    set_seed(args.seed)
    run = probe_run(args)
    tokenizer = load_tokenizer(run)
    run.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    labels, splits = load_probe_data(run, tokenizer)
    tasks = list(splits)  # main task, candidates, control
    candidates = tasks[1:]
    sentence_tasks = [task for task in tasks if splits[task].features[0].sentence_level]
    model = MultiTaskTagger(load_encoder(run.model_name_or_path), {task: labels[task] for task in tasks},
                            sentence_tasks=sentence_tasks).to(run.device)
    similarities, fit_losses = affinities(model, run, splits, tasks if args.matrix else [args.main_task])
    wall_seconds, cpu_seconds = time.perf_counter() - started_wall, time.process_time() - started_cpu

    os.makedirs(args.output_dir, exist_ok=True)
    record = {"model_name_or_path": run.model_name_or_path, "data_dir": run.data_dir, "device": str(run.device),
              "wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds, "args": vars(args)}
    rows = ranked_table(args.main_task, candidates, similarities[args.main_task], fit_losses, splits, args.weight_lr)
    table_path = os.path.join(args.output_dir, f"task_affinity_{args.main_task}")
    write_text_atomic(table_path + ".csv", csv_text(rows))
    write_text_atomic(table_path + ".json", json.dumps(
        {**record, "main_task": args.main_task, "main_task_head_fit_loss": fit_losses[args.main_task],
         "candidates": rows}, indent=2) + "\n")
    print(format_table(args.main_task, rows, args.gradient_sampling_batches, fit_losses[args.main_task]))
    if args.matrix:
        matrix, spreads = pairwise(similarities, tasks, "batch_means", 1.0), pairwise(similarities, tasks, "batch_stds")
        matrix_rows = [{"main_task": main_task, **dict(zip(tasks, values))} for main_task, values in zip(tasks, matrix)]
        matrix_path = os.path.join(args.output_dir, "task_affinity_matrix")
        write_text_atomic(matrix_path + ".csv", csv_text(matrix_rows))
        write_text_atomic(matrix_path + ".json", json.dumps(
            {**record, "tasks": tasks, "mean_cosine": matrix, "cosine_std": spreads, "head_fit_loss": fit_losses},
            indent=2) + "\n")
        heatmap(tasks, matrix, matrix_path + ".png",
                f"mean cos(G_main, G_t) over {args.gradient_sampling_batches} batches, "
                f"{os.path.basename(run.model_name_or_path.rstrip('/'))}")
        print(f"all pairs: {matrix_path}.csv, .json, .png")
    print(f"written to {table_path}.csv and .json; the probe took {seconds_text(wall_seconds)} "
          f"({seconds_text(cpu_seconds)} of CPU time)")
    return rows


if __name__ == "__main__":
    run_main(main)
