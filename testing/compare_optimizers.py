"""What the original's optimizer changes: runs trained one way paired with the same runs trained the other way.

Pairs each run of FLAG_ROOT with the run of DEFAULT_ROOT that has the same paradigm, main task and seed (the
same command without the optimizer flags), and prints per paradigm and main task both scores, the method-level
comparison over seeds (flag - default: mean difference x 100, 95% t-interval, paired p over seeds, seeds
improved; testing/method_comparison.py), each seed's three paired tests of its two trained models on the test
sentences and, for weighted runs, the learned weights of the last epoch; where run directories that still hold
their models are given, also the main head's movement from its initial values.

    python testing/compare_optimizers.py results/medium results/medium_zero_grad
    python testing/compare_optimizers.py results/large results/large \
        --default_optimizer torch --flag_optimizer original      # both kinds in one grid

The two roots may be one: --default_optimizer and --flag_optimizer then say which runs are which, by the
optimizer their run_args.json records ('torch', 'original', or the one flag given, e.g. 'zero_grad_in_place').
The same table is written as CSV with --output_csv.
"""

import argparse
import csv
import json
import os
import sys

from tawt.run_arguments import HelpFormatter
from tawt.scripts.experiment_grid import weights_of_last_epoch
from tawt.testing.collect_results import Experiment, format_score
from tawt.testing.method_comparison import compare_over_seeds
from tawt.testing.output_tree import OutputTreeError, find_runs
from tawt.testing.significance_testing import DEFAULT_SAMPLES, DEFAULT_SEED, TESTS, compare_runs

# The method-level comparison of the two optimizers (flag - default, x 100), then each seed's tests of its
# two trained models, one p-value per seed in the order of `seeds`.
COMPARISON_FIELDS = ("mean_difference", "ci_low", "ci_high", "p_value", "seeds_improved", "seeds_for_80_power")
FIELDS = ("paradigm", "main_task", "seeds", "default_optimizer", "flag_optimizer", "default_mean", "default_std",
          "flag_mean", "flag_std", "default_scores", "flag_scores", *COMPARISON_FIELDS,
          *(f"per_seed_{test}_p" for test in TESTS))


def runs_by_key(runs, optimizer=None):
    """{(paradigm, main_task, seed): [runs]} of `runs` (find_runs's) that have test results and were trained
    with `optimizer` (any if None)."""
    by_key = {}
    for run in runs:
        if optimizer is not None and run.optimizer_name != optimizer:
            continue
        if os.path.isfile(os.path.join(run.directory, f"{run.main_task}_test_results.txt")):
            by_key.setdefault((run.paradigm, run.main_task, run.seed), []).append(run)
    return by_key


def the_one(runs, root, key):
    """The only run of `key`; an error naming both directories when there are more."""
    if len(runs) > 1:
        raise OutputTreeError(
            f"{root}: two runs of {key[0]} {key[1]} seed {key[2]} ({runs[0].directory} and {runs[1].directory}); "
            "say which optimizer each side has with --default_optimizer/--flag_optimizer")
    return runs[0]


def final_weights(run):
    """{task: weight} in effect during the run's last epoch."""
    with open(os.path.join(run.directory, "task_weights.json"), encoding="utf-8") as handle:
        recorded = json.load(handle)
    return dict(zip(recorded["tasks"], weights_of_last_epoch(recorded["history"])))


def head_movement(run_dir, main_task, seed):
    """|W_final - W_initial| (Frobenius, weight and bias together) of the main task's head, the initial head
    rebuilt as the run built it (the seed set, then the heads created on the encoder)."""
    import torch

    from tawt.cross_task_training import set_seed
    from modeling_multi_bert import MultiTaskTagger

    with open(os.path.join(run_dir, "run_args.json"), encoding="utf-8") as handle:
        recorded = json.load(handle)
    trained = MultiTaskTagger.from_pretrained(run_dir)
    labels = {task: trained.task_labels[task] for task in recorded["tasks"]}
    set_seed(seed)
    initial = MultiTaskTagger.from_encoder(recorded["model_name_or_path"], labels, recorded["args"].get("dropout"))
    return float(torch.sqrt(sum(torch.sum((a - b) ** 2) for a, b in zip(
        trained.head(main_task).parameters(), initial.head(main_task).parameters()))))


def side(runs):
    """The runs of one side as an Experiment: their test scores, mean and spread as Table 1 computes them."""
    return Experiment(runs, [run.score("test") for run in runs], [None] * len(runs))


def compare(default_root, flag_root, default_optimizer=None, flag_optimizer=None, data_dir=None,
            samples=DEFAULT_SAMPLES, seed=DEFAULT_SEED):
    """One row per (paradigm, main task) that both sides ran, with the seeds both have: its runs paired by
    seed, each side as an Experiment ("default", "flag") and the paired tests' p-values ("<test>_p")."""
    one_root = os.path.realpath(default_root) == os.path.realpath(flag_root)
    if one_root and default_optimizer == flag_optimizer:
        raise OutputTreeError(f"{default_root} is both sides: give --default_optimizer and --flag_optimizer")
    default_runs = find_runs(default_root)
    flag_runs = default_runs if one_root else find_runs(flag_root)
    default = runs_by_key(default_runs, default_optimizer)
    flagged = runs_by_key(flag_runs, flag_optimizer)
    rows = []
    for paradigm, task in sorted({key[:2] for key in flagged}):
        keys = sorted(key for key in flagged if key[:2] == (paradigm, task) and key in default)
        if not keys:
            continue
        pairs = [(the_one(default[key], default_root, key), the_one(flagged[key], flag_root, key)) for key in keys]
        per_seed = [compare_runs([pair], data_dir, tests=TESTS, samples=samples, seed=seed) for pair in pairs]
        default_side, flag_side = side([pair[0] for pair in pairs]), side([pair[1] for pair in pairs])
        comparison = compare_over_seeds(dict(zip(default_side.seeds, default_side.test_scores)),
                                        dict(zip(flag_side.seeds, flag_side.test_scores)))
        rows.append({"paradigm": paradigm, "main_task": task, "seeds": [key[2] for key in keys], "pairs": pairs,
                     "default": default_side, "flag": flag_side,
                     **{name: comparison[name] for name in COMPARISON_FIELDS},
                     **{f"per_seed_{test}_p": [result[f"{test}_p"] for result in per_seed] for test in TESTS}})
    return rows


def optimizer_names(row):
    return row["default"].first.optimizer_name, row["flag"].first.optimizer_name


def report_lines(rows):
    for row in rows:
        default_name, flag_name = optimizer_names(row)
        yield (f"{row['paradigm']} {row['main_task']} seeds {row['seeds']}: {default_name} "
               f"{format_score(row['default'].test_mean, row['default'].test_std)}  {flag_name} "
               f"{format_score(row['flag'].test_mean, row['flag'].test_std)}  per seed "
               f"{[round(100 * s, 2) for s in row['default'].test_scores]} -> "
               f"{[round(100 * s, 2) for s in row['flag'].test_scores]}  "
               f"difference {row['mean_difference']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] "
               f"p={row['p_value']:.3g} over seeds, {row['seeds_improved']} seeds improved")
        yield ("    per seed, the two trained models on the test sentences: "
               + "; ".join(f"seed {seed} " + " ".join(f"{test} p={row[f'per_seed_{test}_p'][index]:.3g}" for test in TESTS)
                           for index, seed in enumerate(row["seeds"])))
        for default_run, flag_run in row["pairs"]:
            if os.path.isfile(os.path.join(flag_run.directory, "task_weights.json")) and flag_run.paradigm.startswith("weighted"):
                yield (f"    seed {default_run.seed} final weights: {default_name} "
                       + ", ".join(f"{t} {w:.3f}" for t, w in final_weights(default_run).items())
                       + f" | {flag_name} "
                       + ", ".join(f"{t} {w:.3f}" for t, w in final_weights(flag_run).items()))


def write_csv(rows, path):
    """The rows with scores x 100, a seed's scores space-separated."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            default_name, flag_name = optimizer_names(row)
            values = {"paradigm": row["paradigm"], "main_task": row["main_task"],
                      "seeds": " ".join(map(str, row["seeds"])), "default_optimizer": default_name,
                      "flag_optimizer": flag_name, **{name: row[name] for name in COMPARISON_FIELDS},
                      **{f"per_seed_{test}_p": " ".join(f"{value:.4g}" for value in row[f"per_seed_{test}_p"])
                         for test in TESTS}}
            for name in ("default", "flag"):
                experiment = row[name]
                values[f"{name}_mean"], values[f"{name}_std"] = 100 * experiment.test_mean, 100 * experiment.test_std
                values[f"{name}_scores"] = " ".join(f"{100 * score:.4f}" for score in experiment.test_scores)
            writer.writerow(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("default_root", help="the runs trained the default way (a grid's output root or an archive)")
    parser.add_argument("flag_root", help="the same runs trained with the optimizer flags (may be default_root)")
    parser.add_argument("--default_optimizer", default=None, help="keep only default_root's runs with this optimizer")
    parser.add_argument("--flag_optimizer", default=None, help="keep only flag_root's runs with this optimizer")
    parser.add_argument("--data_dir", default=None,
                        help="the gold test files (default: DEFAULT_ROOT/data if it exists, else each run's data_dir)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help="samples of the resampling tests (default: %(default)s)")
    parser.add_argument("--output_csv", default=None, help="also write the rows here")
    parser.add_argument("--models_default", default=None, help="run directories of the default side that hold models")
    parser.add_argument("--models_flag", default=None, help="run directories of the flag side that hold models")
    args = parser.parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None and os.path.isdir(os.path.join(args.default_root, "data")):
        data_dir = os.path.join(args.default_root, "data")  # an archive's gold test files
    try:
        rows = compare(args.default_root, args.flag_root, args.default_optimizer, args.flag_optimizer, data_dir,
                       args.samples)
    except OutputTreeError as error:
        parser.exit(2, f"compare_optimizers.py: {error}\n")
    if not rows:
        parser.exit(1, "compare_optimizers.py: no paradigm, main task and seed was run both ways\n")
    for line in report_lines(rows):
        print(line)
    if args.output_csv:
        write_csv(rows, args.output_csv)
    for name, root in (("default", args.models_default), ("flag", args.models_flag)):
        for run in find_runs(root) if root else ():
            if os.path.isfile(os.path.join(run.directory, "task_heads.safetensors")):
                print(f"main head movement ({name}) {run.paradigm} {run.main_task} seed {run.seed}: "
                      f"{head_movement(run.directory, run.main_task, run.seed):.4f}")


if __name__ == "__main__":
    sys.exit(main())
