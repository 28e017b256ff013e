"""The paper's Table 1 from an output tree: mean ± std over seeds, significance marks, and weight plots.

Walks OUTPUT_ROOT for run directories (those with run_args.json), and writes to --output_dir:

* `table1.md`: rows single-task, pre-training, weighted pre-training, joint, weighted joint, normalized joint,
  weighted normalized joint, and the target-aware baselines GCS, weighted GCS and OL-AUX where the tree has
  them (tawt/target_aware_baselines.py); columns the main tasks and their average. A cell is the main task's test
  score x 100 (accuracy for tagging tasks such as pos and for sentence-level tasks, F1 otherwise; read from
  `{task}_test_results.txt`),
  mean ± sample std over the seeds. Below it, every other configuration of the tree (ratio analysis, other
  main-task sizes, fixed-weight re-runs, the weighted pre-training inv_constants not shown) in one long table.
* `table1.csv`, `other_runs.csv`: the same numbers unrounded, one row per cell.
* `task_weights/*.png`: the task weights of every TAWT-weighted run, against the weight updates.

Which runs make Table 1: those without --auxiliary_main_ratio whose main-task training size is the one most
of the main task's multi-task runs share (the paper's n_main; set it with --main_train_size). Where a row has
several configurations for a main task (weighted pre-training's inv_constant 1/10/30/100), the cell shows
the one with the best mean dev score (`{task}_eval_results.txt`), or with --inv_constant_choice paper the
original's per target (pos 30, chunking 1, predicate 1, ner 100), and a footnote names it. Runs trained with
the original's optimizer (--zero_grad_in_place --legacy_adamw) make Table 1 with --table1_optimizer original;
otherwise they are listed with the other runs.

Significance marks: a row's cell gets † when it beats its baseline row (pre-training, joint, normalized
joint; joint for GCS, weighted GCS and OL-AUX; the same paradigm without the noise source) at the method
level: the per-seed differences of the table's own metric over the seeds both rows ran, tested with the
paired t-test over seeds (testing/method_comparison.py), p < --alpha after Holm's correction across the
table's marked comparisons (--correction bh for Benjamini-Hochberg's), and a positive mean difference. The cell
also shows the mean difference with its 95% t-interval and how many seeds improved.

* `method_comparisons.csv`: every comparison of two rows: the marks', TAWT against GCS and OL-AUX, TAWT against
  its ablation, normalized joint against weighted joint, and each of the other runs against its baseline row's
  run of the same data; per comparison the per-seed differences, their mean and interval, the raw and the
  corrected p (each family corrected on its own), the effect size, the seeds improved, the seeds that 80% power
  would need, and with 5 or more seeds a two-level bootstrap (seeds, then sentences within each seed).

The seeds of a row must be seeds of one experiment: runs that differ in a setting besides the seed (encoder,
learning rate, epochs, lengths, sizes, data) are refused, naming the setting and two directories; runs that
evaluated a saved model are skipped; stage-1-only pre-training runs (--pre_train_only), the ablated and the
noise-source runs are rows of their own.

Usage:
  python testing/collect_results.py out/ --output_dir out/summary
"""

import argparse
import logging
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from tawt.run_arguments import HelpFormatter
from tawt.testing.method_comparison import (
    BOOTSTRAP_MIN_SEEDS, CORRECTIONS, compare_over_seeds, distinct_resamples, holm, two_level_bootstrap,
)
from tawt.testing.output_tree import (
    ARGUMENT_DEFAULTS, BASELINE_OF, CONFIGURATION_ARGS, EXPERIMENT_SETTINGS, OTHER_COMPARISONS, TASK_WEIGHTS_FILE,
    TAWT_OF, OutputTreeError, csv_text, find_runs, read_task_weights, write_text_atomic,
)
from tawt.testing.significance_testing import DEFAULT_SAMPLES, DEFAULT_SEED, system_counts
from utils_cross_task import TaskDataError

logger = logging.getLogger(__name__)

TABLE1_ROWS = {
    "single_task": "Single-task",
    "pretraining": "Pre-training",
    "weighted_pretraining": "Weighted pre-training",
    "joint": "Joint training",
    "weighted_joint": "Weighted joint training",
    "weighted_joint_ablated": "Weighted joint training, source cosines ablated",
    "normalized_joint": "Normalized joint training",
    "weighted_normalized_joint": "Weighted normalized joint training",
    "weighted_normalized_joint_ablated": "Weighted normalized joint training, source cosines ablated",
    "joint_noise": "Joint training + noise source",
    "weighted_joint_noise": "Weighted joint training + noise source",
    # The target-aware baselines (tawt/target_aware_baselines.py), in joint training from uniform weights.
    "joint_gcs": "GCS (Du et al. 2018)",
    "joint_gcs_weighted": "Weighted GCS (Du et al. 2018)",
    "joint_gcs_gated": "GCS, gated joint training (earlier implementation)",
    "joint_gcs_weighted_gated": "Weighted GCS, gated joint training (earlier implementation)",
    "joint_olaux": "OL-AUX (Lin et al. 2019)",
    "joint_forkmerge": "ForkMerge (Jiang et al. 2023)",
}
# A gated GCS row stands in Table 1 only for a task without a row of Du et al.'s update.
GATED_ROWS = {"joint_gcs_gated": "joint_gcs", "joint_gcs_weighted_gated": "joint_gcs_weighted"}
TASK_ORDER = ("pos", "chunking", "predicate", "ner")  # the paper's column order; other tasks follow by name
TASK_TITLES = {"pos": "POS", "chunking": "Chunking", "predicate": "Predicate", "ner": "NER"}
SIGNIFICANT_MARK = "†"
CORRECTION_NAMES = {"holm": "Holm's correction", "bh": "Benjamini-Hochberg's correction"}
# The families of method_comparisons.csv, each corrected for its own comparisons: the table's marks (each
# row against its baseline), the other comparisons of Table 1's rows, and comparisons of the other runs.
FAMILIES = ("table 1 marks", "table 1 other", "other runs")


@dataclass
class Experiment:
    """The runs of one configuration, one per seed, with their main-task scores."""

    runs: list
    test_scores: list
    dev_scores: list

    @property
    def first(self):
        return self.runs[0]

    @property
    def seeds(self):
        return [run.seed for run in self.runs]

    @property
    def test_mean(self):
        return float(np.mean(self.test_scores))

    @property
    def test_std(self):
        """Sample std over seeds; NaN for one seed, where there is no spread to report."""
        return float(np.std(self.test_scores, ddof=1)) if len(self.test_scores) > 1 else float("nan")

    @property
    def dev_mean(self):
        return self.dev_mean_on(None)

    def dev_mean_on(self, seeds):
        """Mean dev score over `seeds` (None: all). Configurations are compared on the seeds they share, so
        a sweep run with one seed is compared with the chosen configuration's run of that seed."""
        known = [score for seed, score in zip(self.seeds, self.dev_scores)
                 if score is not None and (seeds is None or seed in seeds)]
        return float(np.mean(known)) if known else float("nan")


@dataclass
class Cell:
    experiment: Experiment
    chosen_from: list = field(default_factory=list)  # the other configurations the dev score beat
    chosen_on_seeds: set = None  # the seeds the configurations shared, on which the dev scores were compared
    comparison: dict = None  # the method-level comparison behind the mark: this row against its baseline
    significant: bool = False
    chosen_by: str = "dev"  # how the configuration was chosen among several: "dev" score, or the "paper"'s


def check_one_experiment(runs):
    """Refuse seeds of one configuration that differ in a setting of EXPERIMENT_SETTINGS: averaging them
    would mix experiments. A setting is compared between the runs that record it."""
    settings = [(run, run.settings) for run in runs]
    for name in EXPERIMENT_SETTINGS:
        values = {}
        for run, recorded in settings:
            if name in recorded:
                values.setdefault(recorded[name], []).append(run.directory)
        if len(values) > 1:
            (first, first_dirs), (second, second_dirs) = list(values.items())[:2]
            raise OutputTreeError(
                f"{first_dirs[0]} and {second_dirs[0]}: {runs[0].row} {runs[0].main_task} runs differ in {name} "
                f"({first!r} and {second!r}) and would be averaged as seeds of one experiment; move one set out of "
                "the output root, or collect each set from its own root"
            )


def load_experiments(runs):
    """Runs grouped by configuration into Experiments; runs without test results are skipped with a warning,
    and so are evaluation-only runs (an evaluation of a model is no seed of the experiment that trained it)."""
    grouped = defaultdict(list)
    for run in runs:
        if not run.trains:
            logger.warning("skipping %s: it evaluated a saved model (no --do_train), so it is no seed of an experiment",
                           run.directory)
            continue
        try:
            test_score = run.score("test")
        except OutputTreeError as error:
            logger.warning("skipping %s: %s", run.directory, error)
            continue
        try:
            dev_score = run.score("eval")
        except OutputTreeError:
            dev_score = None
        grouped[run.configuration].append((run, test_score, dev_score))
    experiments = []
    for members in grouped.values():
        members.sort(key=lambda member: member[0].seed)
        for (run, _, _), (other, _, _) in zip(members, members[1:]):
            if run.seed == other.seed:
                raise OutputTreeError(
                    f"{run.directory} and {other.directory}: the same configuration and seed {run.seed} twice; "
                    "delete one run, or give it another seed"
                )
        check_one_experiment([member[0] for member in members])
        experiments.append(Experiment(*map(list, zip(*members))))
    return experiments


def table1_train_sizes(experiments, overrides):
    """Per main task, Table 1's main-task training size: the one most of its multi-task runs used (the
    single-task runs of the size analysis would outvote it), or most of its single-task runs if it has no other.
    """
    multi_task_votes, single_task_votes = defaultdict(Counter), defaultdict(Counter)
    for experiment in experiments:
        run = experiment.first
        if run.row in TABLE1_ROWS and run.auxiliary_main_ratio is None:
            votes = single_task_votes if run.row == "single_task" else multi_task_votes
            votes[run.main_task][run.main_train_size] += len(experiment.runs)
    sizes = {}
    for task in set(multi_task_votes) | set(single_task_votes):
        votes = multi_task_votes.get(task) or single_task_votes[task]
        # Most votes first; on a tie the smaller size, the paper's low-resource setting.
        sizes[task] = min(votes, key=lambda size: (-votes[size], float("inf") if size is None else size))
    sizes.update(overrides)
    return sizes


def ordered_tasks(tasks):
    return [task for task in TASK_ORDER if task in tasks] + sorted(set(tasks) - set(TASK_ORDER))


def varying_settings(experiments):
    """The configuration arguments whose value is not the same in every run: what tells experiments apart."""
    values = defaultdict(set)
    for experiment in experiments:
        for name, value in experiment.first.configuration[-1]:
            values[name].add(value)
    return [name for name in CONFIGURATION_ARGS if len(values[name]) > 1]


def describe_settings(experiment, names):
    """`name=value` of the configuration arguments `names` that are set and not at a flag's default;
    `weighting` is left to the paradigm's name."""
    settings = dict(experiment.first.configuration[-1])
    settings.pop("weighting", None)
    return " ".join(
        f"{name}={list(settings[name]) if isinstance(settings[name], tuple) else settings[name]}"
        for name in names
        if settings.get(name) is not None and (name not in ARGUMENT_DEFAULTS or settings[name] != ARGUMENT_DEFAULTS[name])
    )


# The original fixed weighted pre-training's inv_constant per target (its testing/significance_testing.py).
PAPER_INV_CONSTANTS = {"pos": 30.0, "chunking": 1.0, "predicate": 1.0, "ner": 100.0}


def build_table1(experiments, train_sizes, optimizer="torch", inv_constant_choice="dev", paper_inv_constants=None):
    """{(paradigm, main task): Cell}: the runs trained with `optimizer` ('torch' or 'original'); where a row
    has several configurations for a main task, the one with the best mean dev score, or with
    inv_constant_choice 'paper' weighted pre-training's inv_constant of `paper_inv_constants` for that task
    (falling back to the dev choice, with a warning, for a task it lacks or a value that was not run)."""
    paper_inv_constants = PAPER_INV_CONSTANTS if paper_inv_constants is None else paper_inv_constants
    candidates = defaultdict(list)
    for experiment in experiments:
        run = experiment.first
        if (
            run.row in TABLE1_ROWS and run.auxiliary_main_ratio is None and run.optimizer_name == optimizer
            and run.main_task in train_sizes and run.main_train_size == train_sizes[run.main_task]
        ):
            candidates[run.row, run.main_task].append(experiment)
    for (row, task) in list(candidates):
        if row in GATED_ROWS and (GATED_ROWS[row], task) in candidates:
            del candidates[row, task]  # Du et al.'s update is the GCS row; the gated one goes to the other runs
    cells = {}
    for key, options in candidates.items():
        shared = set.intersection(*(set(option.seeds) for option in options)) or None
        if any(np.isnan(option.dev_mean_on(shared)) for option in options) and len(options) > 1:
            logger.warning("%s %s: some configurations have no dev results; they rank last", *key)
        options.sort(key=lambda option: -np.nan_to_num(option.dev_mean_on(shared), nan=-np.inf))
        chosen_by = "dev"
        if inv_constant_choice == "paper" and key[0] == "weighted_pretraining":
            wanted = paper_inv_constants.get(key[1])
            paper_choice = [option for option in options
                            if wanted is not None and float(option.first.arg("inv_constant")) == float(wanted)]
            if paper_choice:
                options.remove(paper_choice[0])
                options.insert(0, paper_choice[0])
                chosen_by = "paper"
            else:
                logger.warning("weighted pre-training %s: %s; Table 1 shows the dev choice", key[1],
                               "no paper inv_constant for this task (give --paper_inv_constant TASK=K)" if wanted is None
                               else f"no run with the paper's inv_constant {wanted:g}")
        cells[key] = Cell(options[0], chosen_from=options[1:], chosen_on_seeds=shared if len(options) > 1 else None,
                          chosen_by=chosen_by)
    return cells


def comparable(experiment):
    """What two rows' experiments must share to be compared: main task, sources (a noise source aside), sizes,
    auxiliary/main ratio and optimizer; the seeds are paired within this."""
    return experiment.first.pairing_key[:4] + experiment.first.pairing_key[5:]


def comparison_pairs(cells, experiments):
    """(family, tested Experiment, baseline Experiment) of every comparison method_comparisons.csv holds."""
    order = sorted(cells, key=lambda key: (list(TABLE1_ROWS).index(key[0]), key[1]))
    pairs = [("table 1 marks", cells[key].experiment, cells[BASELINE_OF[key[0]], key[1]].experiment)
             for key in order if key[0] in BASELINE_OF and (BASELINE_OF[key[0]], key[1]) in cells]
    others = [(TAWT_OF[row], row) for row in TAWT_OF] + OTHER_COMPARISONS
    pairs += [("table 1 other", cells[tested, task].experiment, cells[baseline, task].experiment)
              for tested, baseline in others for task in sorted({key[1] for key in cells})
              if (tested, task) in cells and (baseline, task) in cells]
    # The other runs (another optimizer, ratio, size or inv_constant) against their baseline row's run of the
    # same data; where several configurations of the baseline row qualify, the one Table 1 shows.
    shown = {id(cell.experiment) for cell in cells.values()}
    for experiment in experiments:
        baseline_row = BASELINE_OF.get(experiment.first.row)
        if id(experiment) in shown or baseline_row is None:
            continue
        candidates = [other for other in experiments
                      if other.first.row == baseline_row and comparable(other) == comparable(experiment)]
        if len(candidates) > 1:
            candidates = [other for other in candidates if id(other) in shown]
        if len(candidates) == 1:
            pairs.append(("other runs", experiment, candidates[0]))
    return pairs


def seed_counts(experiment, seeds, data_dir):
    """(family, [per-sentence counts of each seed's run]) of the main task's test predictions."""
    by_seed = dict(zip(experiment.seeds, experiment.runs))
    family, counts = None, []
    for seed in seeds:
        run = by_seed[seed]
        family, seed_count = system_counts(run.main_task, run.gold_file(data_dir), run.predictions_file())
        counts.append(seed_count)
    return family, counts


def compare_experiments(tested, baseline, data_dir, samples, seed):
    """The method-level comparison of two experiments (method_comparison.compare_over_seeds), with the
    two-level bootstrap where they share enough seeds."""
    result = compare_over_seeds(dict(zip(baseline.seeds, baseline.test_scores)),
                                dict(zip(tested.seeds, tested.test_scores)))
    shared = result["seeds"]
    result.update(bootstrap_p=None, bootstrap_low=None, bootstrap_high=None, bootstrap_note="")
    if len(shared) < BOOTSTRAP_MIN_SEEDS:
        result["bootstrap_note"] = (f"not with {len(shared)} seeds ({distinct_resamples(len(shared))} distinct seed "
                                    f"resamples); needs {BOOTSTRAP_MIN_SEEDS}") if shared else "no seed in common"
        return result
    try:
        family, baseline_counts = seed_counts(baseline, shared, data_dir)
        _, tested_counts = seed_counts(tested, shared, data_dir)
    except (TaskDataError, OutputTreeError) as error:
        result["bootstrap_note"] = f"no predictions to resample: {error}"
        return result
    result["bootstrap_p"], (result["bootstrap_low"], result["bootstrap_high"]) = two_level_bootstrap(
        family, baseline_counts, tested_counts, samples, seed)
    return result


def method_comparisons(cells, experiments, data_dir, correction="holm", alpha=0.05, samples=DEFAULT_SAMPLES,
                       seed=DEFAULT_SEED):
    """The rows of method_comparisons.csv, each family's p-values corrected together; marks each cell of
    the first family whose corrected p is below `alpha` with a positive mean difference."""
    cell_of = {id(cell.experiment): cell for cell in cells.values()}
    titles = {id(experiment): row_title(experiment, experiments, cell_of) for experiment in experiments}
    rows = []
    for family, tested, baseline in comparison_pairs(cells, experiments):
        result = compare_experiments(tested, baseline, data_dir, samples, seed)
        rows.append({
            "task": tested.first.main_task, "method": titles[id(tested)], "baseline": titles[id(baseline)],
            "family": family,
            "seeds": " ".join(map(str, result["seeds"])), "mean_difference": result["mean_difference"],
            "ci_low": result["ci_low"], "ci_high": result["ci_high"], "p_value": result["p_value"],
            "p_holm": None, "seeds_improved": result["seeds_improved"],
            "per_seed_differences": " ".join(f"{value:.4f}" for value in result["differences"]),
            "effect_size": result["effect_size"], "seeds_for_80_power": result["seeds_for_80_power"],
            "bootstrap_p": result["bootstrap_p"], "bootstrap_low": result["bootstrap_low"],
            "bootstrap_high": result["bootstrap_high"], "bootstrap_note": result["bootstrap_note"],
            "significant": False, "tested": tested, "tested_against": baseline,
        })
    for family in FAMILIES:
        members = [row for row in rows if row["family"] == family]
        for row, p_holm in zip(members, holm([row["p_value"] for row in members])):
            row["p_holm"] = p_holm
        if correction != "holm":
            for row, adjusted in zip(members, CORRECTIONS[correction]([row["p_value"] for row in members])):
                row[f"p_{correction}"] = adjusted
        for row in members:
            adjusted = row[f"p_{correction}"]
            row["significant"] = bool(adjusted is not None and adjusted < alpha and row["mean_difference"] > 0)
            if family == "table 1 marks":
                cell = cell_of[id(row["tested"])]
                cell.comparison, cell.significant = row, row["significant"]
    return rows


def row_title(experiment, experiments, shown):
    """The name of an experiment's row: Table 1's title; for one of the other runs (not in `shown`), with what
    tells it apart (main-task size, ratio, and the settings that vary in the tree)."""
    run = experiment.first
    title = TABLE1_ROWS.get(run.row, run.row)
    if id(experiment) in shown:
        return title
    extras = [f"{run.main_train_size} main sentences"] if run.main_train_size is not None else []
    if run.auxiliary_main_ratio is not None:
        extras.append(f"aux/main ratio {run.auxiliary_main_ratio}")
    settings = describe_settings(experiment, varying_settings(experiments))
    if settings:
        extras.append(settings)
    return f"{title} ({', '.join(extras)})" if extras else title


def method_comparison_csv_rows(rows, output_root):
    """The comparison rows as method_comparisons.csv writes them: differences x 100, the runs' directories."""
    written = []
    for row in rows:
        values = {name: value for name, value in row.items() if name not in ("tested", "tested_against")}
        for name, experiment in (("method_dirs", row["tested"]), ("baseline_dirs", row["tested_against"])):
            values[name] = " ".join(os.path.relpath(run.directory, output_root) for run in experiment.runs)
        written.append(values)
    return written


def format_score(mean, std):
    """x 100 with two decimals, the paper's style; std left out where there is one seed."""
    return f"{100 * mean:.2f}" if np.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def difference_text(comparison):
    """`+4.64 [-0.61, 9.89], 3/3`: a comparison's mean difference, its interval and the seeds improved."""
    if comparison is None or np.isnan(comparison["mean_difference"]):
        return ""
    interval = "" if np.isnan(comparison["ci_low"]) else f" [{comparison['ci_low']:+.2f}, {comparison['ci_high']:+.2f}]"
    return f"{comparison['mean_difference']:+.2f}{interval}, {comparison['seeds_improved']}"


def table1_rows(cells, tasks, output_root):
    """One dict per cell (and per row's average), the CSV's rows; the Markdown is built from these. Run
    directories are given relative to `output_root`, so an archived tree's table reads the same anywhere."""
    rows = []
    for paradigm, title in TABLE1_ROWS.items():
        means = []
        for task in tasks:
            cell = cells.get((paradigm, task))
            if cell is None:
                continue
            experiment, comparison = cell.experiment, cell.comparison or {}
            means.append(experiment.test_mean)
            rows.append({
                "row": title, "paradigm": paradigm, "main_task": task, "mean": experiment.test_mean,
                "std": experiment.test_std, "seeds": " ".join(map(str, experiment.seeds)),
                "main_train_size": experiment.first.main_train_size,
                "settings": describe_settings(experiment, CONFIGURATION_ARGS),
                # The method-level comparison with the row's baseline (method_comparisons.csv), x 100.
                "baseline": comparison.get("baseline"), "mean_difference": comparison.get("mean_difference"),
                "ci_low": comparison.get("ci_low"), "ci_high": comparison.get("ci_high"),
                "p_value": comparison.get("p_value"), "p_holm": comparison.get("p_holm"),
                "seeds_improved": comparison.get("seeds_improved"), "significant": cell.significant,
                "run_dirs": " ".join(os.path.relpath(run.directory, output_root) for run in experiment.runs),
            })
        if means and len(means) == len(tasks):
            rows.append({"row": title, "paradigm": paradigm, "main_task": "average", "mean": float(np.mean(means))})
    return rows


def join_names(names):
    """["a", "b", "c"] -> "a, b and c"."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def sentence_level_tasks(cells, tasks):
    """The tasks of `tasks` that Table 1 scores as sentence-level (classification) tasks, by their runs' results."""
    families = {task: cell.experiment.first.results("test").get("metric_family") for (_, task), cell in cells.items()}
    return [task for task in tasks if families.get(task) == "classification"]


def table1_markdown(cells, tasks, rows, correction, alpha):
    by_cell = {(row["paradigm"], row["main_task"]): row for row in rows}
    lines = []
    for paradigm, title in TABLE1_ROWS.items():
        if not any((paradigm, task) in by_cell for task in tasks):
            continue
        values = []
        for task in tasks:
            row = by_cell.get((paradigm, task))
            if row is None:
                values.append("–")
                continue
            mark = f" {SIGNIFICANT_MARK}" if row["significant"] else ""
            difference = difference_text(cells[paradigm, task].comparison)
            values.append(format_score(row["mean"], row["std"]) + mark + (f" ({difference})" if difference else ""))
        average = by_cell.get((paradigm, "average"))
        values.append(f"{100 * average['mean']:.2f}" if average else "–")
        lines.append([title] + values)
    header = ["Method"] + [TASK_TITLES.get(task, task) for task in tasks] + ["Avg"]
    compared = defaultdict(list)
    for paradigm in TABLE1_ROWS:
        if any(cell.comparison is not None for key, cell in cells.items() if key[0] == paradigm):
            compared[TABLE1_ROWS[BASELINE_OF[paradigm]]].append(TABLE1_ROWS[paradigm])
    against = "; ".join(f"against {baseline}: {join_names(tested)}" for baseline, tested in compared.items())
    marked = sum(cell.comparison is not None for cell in cells.values())
    sentence_tasks = sentence_level_tasks(cells, tasks)
    accuracy_for = "tagging tasks," + (
        f" and for the sentence-level task{'s' if len(sentence_tasks) > 1 else ''} {join_names(sentence_tasks)}, "
        "where it is the share of test examples labelled right;" if sentence_tasks else "")
    notes = [
        f"Test score x 100 of the main task (accuracy for {accuracy_for} F1 for span and binary tasks), "
        "mean ± sample std over seeds (no ± for one seed); Avg is the mean of the row's task means.",
        "In brackets: the row's mean difference from its baseline over the seeds both ran (x 100), its 95% "
        "t-interval over seeds, and how many seeds improved (" + (against or "no row has its baseline") + "). "
        "method_comparisons.csv has every comparison, its p-values and the seeds 80% power would need.",
        f"{SIGNIFICANT_MARK}: better than its baseline at the method level: the paired t-test over seeds on the "
        f"per-seed differences, p < {alpha} after {CORRECTION_NAMES[correction]} across the table's "
        f"{marked} marked comparison{'s' if marked != 1 else ''}. The per-seed tests "
        "of the trained models on the test sentences are in significance.csv.",
    ]
    for (paradigm, task), cell in sorted(cells.items(), key=lambda item: (list(TABLE1_ROWS).index(item[0][0]), item[0][1])):
        if cell.chosen_from:
            options = [cell.experiment] + cell.chosen_from
            names = varying_settings(options) or list(CONFIGURATION_ARGS)
            alternatives = ", ".join(
                f"{describe_settings(option, names)}: {100 * option.dev_mean_on(cell.chosen_on_seeds):.2f}"
                for option in options
            )
            seeds = ", ".join(map(str, sorted(cell.chosen_on_seeds or [])))
            seeds_text = f"seed{'s' if len(cell.chosen_on_seeds or []) > 1 else ''} {seeds}"
            if cell.chosen_by == "paper":
                how = f"the paper's choice for {task} (mean dev scores on {seeds_text}: {alternatives})"
            else:
                how = f"chosen by mean dev score on {seeds_text} ({alternatives})"
            notes.append(f"{TABLE1_ROWS[paradigm]}, {task}: {describe_settings(cell.experiment, names)}, {how}.")
    return markdown_table(header, lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def other_rows(experiments, cells):
    """Every experiment not shown in Table 1: ratio analysis, other sizes, fixed weights, other settings."""
    shown = {id(cell.experiment) for cell in cells.values()}
    rest = [experiment for experiment in experiments if id(experiment) not in shown]
    names = varying_settings(experiments)
    rest.sort(key=lambda experiment: (
        experiment.first.row, experiment.first.main_task, experiment.first.auxiliary_main_ratio or 0,
        experiment.first.main_train_size or 0, describe_settings(experiment, names),
    ))
    return [
        {
            "paradigm": experiment.first.row, "row": TABLE1_ROWS.get(experiment.first.row, experiment.first.row),
            "main_task": experiment.first.main_task,
            "sources": " ".join(experiment.first.sources), "main_train_size": experiment.first.main_train_size,
            "auxiliary_main_ratio": experiment.first.auxiliary_main_ratio,
            "settings": describe_settings(experiment, names), "seeds": " ".join(map(str, experiment.seeds)),
            "mean": experiment.test_mean, "std": experiment.test_std, "dev_mean": experiment.dev_mean,
        }
        for experiment in rest
    ]


def other_runs_markdown(rows):
    header = ["paradigm", "main task", "sources", "main size", "aux/main ratio", "settings", "seeds", "test", "dev"]
    table = [
        [
            row["paradigm"], row["main_task"], row["sources"] or "–", row["main_train_size"],
            "–" if row["auxiliary_main_ratio"] is None else row["auxiliary_main_ratio"], row["settings"] or "–",
            len(row["seeds"].split()), format_score(row["mean"], row["std"]),
            "–" if np.isnan(row["dev_mean"]) else f"{100 * row['dev_mean']:.2f}",
        ]
        for row in rows
    ]
    return markdown_table(header, table) + "\n"


def plot_task_weights(runs, output_root, plot_dir):
    """One PNG per TAWT-weighted run: each task's weight at the start and after every update."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install matplotlib); no task-weight plots")
        return []
    written = []
    for run in runs:
        path = run.path(TASK_WEIGHTS_FILE)
        if not os.path.isfile(path):
            continue
        try:
            record = read_task_weights(path)
        except OutputTreeError as error:  # one damaged file costs its plot, not the table
            logger.warning("no task-weight plot for %s: %s", run.directory, error)
            continue
        if record.get("weighting") != "tawt" or not record["history"]:
            continue  # fixed weights draw flat lines; nothing to see
        history = record["history"]
        ticks = ["initial" if entry.get("stage") == "initial" else f"step {entry.get('step')}"
                 if entry.get("stage") == "step" else f"epoch {entry.get('epoch')}" for entry in history]
        weights = np.array([entry["weights"] for entry in history])
        figure, axes = plt.subplots(figsize=(6, 4))
        for task, trajectory in zip(record["tasks"], weights.T):
            axes.plot(range(len(history)), trajectory, marker="o", label=task)
        axes.set_xticks(range(len(history)), ticks, rotation=30)
        axes.set_ylabel("task weight")
        axes.set_ylim(0, 1)
        inv_constant = run.args.get("inv_constant")
        axes.set_title(
            f"{run.paradigm}, main task {run.main_task}, seed {run.seed}"
            + (f", inv_constant {inv_constant}" if run.paradigm == "weighted_pretraining" else "")
        )
        axes.legend()
        figure.tight_layout()
        relative = os.path.relpath(run.directory, output_root)
        name = "run" if relative == "." else relative.replace(os.sep, "__")
        png_path = os.path.join(plot_dir, f"{name}.png")
        os.makedirs(plot_dir, exist_ok=True)
        temporary_path = png_path + ".tmp.png"
        figure.savefig(temporary_path, dpi=120)
        plt.close(figure)
        os.replace(temporary_path, png_path)
        written.append(png_path)
    return written


def parse_train_sizes(values, parser):
    sizes = {}
    for value in values or []:
        task, separator, size = value.partition("=")
        if not separator or not size.isdigit():
            parser.error(f"--main_train_size {value!r}: write TASK=SENTENCES, e.g. ner=500")
        sizes[task] = int(size)
    return sizes


def parse_task_constant(value, parser):
    """`TASK=K` of --paper_inv_constant as (TASK, K), K a positive number; a parser error otherwise."""
    task, separator, constant = value.partition("=")
    try:
        number = float(constant)
    except ValueError:
        number = None
    if not (separator and task and number is not None and 0 < number < float("inf")):
        parser.error(f"--paper_inv_constant {value!r}: write TASK=K with K > 0, e.g. brown_pos=30")
    return task, number


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\nUsage:")[0], formatter_class=HelpFormatter,
        epilog="example:" + __doc__.split("\nUsage:")[1],
    )
    parser.add_argument("output_root", help="the directory the runs were written below")
    parser.add_argument("--output_dir", default=None, help="where to write the tables and plots (default: OUTPUT_ROOT/summary)")
    parser.add_argument("--data_dir", default=None, help="where test_{task}.txt (or .tsv) are (default: the data_dir each "
                        "run's run_args.json records)")
    parser.add_argument(
        "--main_train_size", nargs="+", metavar="TASK=SENTENCES",
        help="Table 1's main-task training size for these main tasks (default: the size most multi-task runs used)",
    )
    parser.add_argument(
        "--correction", choices=tuple(CORRECTIONS), default="holm",
        help="the multiple-comparison correction of the marks: Holm's (default) or Benjamini-Hochberg's (bh)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the marks (default: 0.05)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples of the two-level bootstrap (5 or more seeds; default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the two-level bootstrap (default: %(default)s)")
    parser.add_argument("--no_plots", action="store_true", help="skip the task-weight plots")
    parser.add_argument("--note", default="", help="a line written under the title of table1.md (what the runs are)")
    parser.add_argument(
        "--inv_constant_choice", choices=("dev", "paper"), default="dev",
        help="weighted pre-training's cell: the inv_constant with the best mean dev score (default), or the "
             "paper's per target (pos 30, chunking 1, predicate 1, ner 100; the paper grid uses it). The footnote "
             "names the choice either way",
    )
    parser.add_argument(
        "--paper_inv_constant", nargs="+", metavar="TASK=K", default=[],
        help="with --inv_constant_choice paper: the inv_constant of other main tasks, or another for the paper's "
             "(e.g. brown_pos=30)",
    )
    parser.add_argument(
        "--table1_optimizer", choices=("torch", "original"), default="torch",
        help="Table 1 shows the runs trained with this optimizer: torch's AdamW (default) or the original's "
             "(--zero_grad_in_place --legacy_adamw); the others go to the other runs' table",
    )
    args = parser.parse_args(argv)
    args.main_train_size = parse_train_sizes(args.main_train_size, parser)
    args.paper_inv_constants = dict(PAPER_INV_CONSTANTS)
    for value in args.paper_inv_constant:
        task, constant = parse_task_constant(value, parser)
        args.paper_inv_constants[task] = constant
    args.output_dir = args.output_dir or os.path.join(args.output_root, "summary")
    return args


def collect(args):
    runs = find_runs(args.output_root)
    experiments = load_experiments(runs)
    if not experiments:
        raise OutputTreeError(f"{args.output_root}: no run has a test results file yet; wait for the runs to finish")
    train_sizes = table1_train_sizes(experiments, args.main_train_size)
    cells = build_table1(experiments, train_sizes, args.table1_optimizer, args.inv_constant_choice,
                         args.paper_inv_constants)
    comparisons = method_comparisons(cells, experiments, args.data_dir, args.correction, args.alpha, args.samples,
                                     args.seed)
    tasks = ordered_tasks({task for _, task in cells})
    rows = table1_rows(cells, tasks, args.output_root)
    rest = other_rows(experiments, cells)

    markdown = "# Table 1\n\n" + (f"{args.note}\n\n" if args.note else "") + table1_markdown(cells, tasks, rows, args.correction, args.alpha)
    if rest:
        markdown += "\n# Other runs\n\n" + other_runs_markdown(rest)
    write_text_atomic(os.path.join(args.output_dir, "table1.md"), markdown)
    if rows:
        write_text_atomic(os.path.join(args.output_dir, "table1.csv"), csv_text(rows))
    if rest:
        write_text_atomic(os.path.join(args.output_dir, "other_runs.csv"), csv_text(rest))
    if comparisons:
        write_text_atomic(os.path.join(args.output_dir, "method_comparisons.csv"),
                          csv_text(method_comparison_csv_rows(comparisons, args.output_root)))
    plots = [] if args.no_plots else plot_task_weights(runs, args.output_root, os.path.join(args.output_dir, "task_weights"))
    return markdown, plots


def main(argv=None):
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    args = parse_args(argv)
    try:
        markdown, plots = collect(args)
    except (TaskDataError, OutputTreeError) as error:
        sys.exit(f"error: {error}")
    print(markdown)
    print(f"wrote {args.output_dir}/table1.md, table1.csv" + (f" and {len(plots)} task-weight plots" if plots else ""))


if __name__ == "__main__":
    main()
