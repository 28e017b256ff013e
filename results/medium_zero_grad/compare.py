"""What --zero_grad_in_place (the original's gradient zeroing) changes on the medium grid's joint rows.

Pairs each run of this archive with the run of results/medium that has the same paradigm, main task and seed
(the same command without the flag), pools the seeds' test sentences, and prints the scores, the paired tests,
the learned weights and, where both runs' models are given, the main head's movement from its initial values.

    python results/medium_zero_grad/compare.py results/medium results/medium_zero_grad \
        [--models_default DIR --models_flag DIR]   # run directories that still hold their models
"""

import argparse
import json
import os

import numpy as np

from scripts.experiment_grid import weights_of_last_epoch
from testing.output_tree import find_runs
from testing.significance_testing import compare_runs


def runs_by_key(root):
    return {(run.paradigm, run.main_task, run.seed): run for run in find_runs(root)
            if os.path.isfile(os.path.join(run.directory, f"{run.main_task}_test_results.txt"))}


def final_weights(run):
    path = os.path.join(run.directory, "task_weights.json")
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle)
    return dict(zip(recorded["tasks"], weights_of_last_epoch(recorded["history"])))


def head_movement(run_dir, main_task, seed):
    """|W_final - W_initial| (Frobenius, weight and bias together) of the main task's head, the initial head
    rebuilt as the run built it (the seed set, then the heads created on the encoder)."""
    import torch

    from cross_task_training import set_seed
    from modeling_multi_bert import MultiTaskTagger

    with open(os.path.join(run_dir, "run_args.json"), encoding="utf-8") as handle:
        recorded = json.load(handle)
    trained = MultiTaskTagger.from_pretrained(run_dir)
    labels = {task: trained.task_labels[task] for task in recorded["tasks"]}
    set_seed(seed)
    initial = MultiTaskTagger.from_encoder(recorded["model_name_or_path"], labels, recorded["args"].get("dropout"))
    return float(torch.sqrt(sum(torch.sum((a - b) ** 2) for a, b in zip(
        trained.head(main_task).parameters(), initial.head(main_task).parameters()))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("default_root")
    parser.add_argument("flag_root")
    parser.add_argument("--models_default", default=None)
    parser.add_argument("--models_flag", default=None)
    args = parser.parse_args()
    default, flagged = runs_by_key(args.default_root), runs_by_key(args.flag_root)
    data_dir = os.path.join(args.default_root, "data")  # an archive's gold test files; else each run's data
    data_dir = data_dir if os.path.isdir(data_dir) else None
    for paradigm in ("joint", "weighted_joint"):
        for task in ("ner", "brown_pos"):
            keys = sorted(key for key in flagged if key[:2] == (paradigm, task) and key in default)
            if not keys:
                continue
            pairs = [(default[key], flagged[key]) for key in keys]
            result = compare_runs(pairs, data_dir, tests=("ttest", "bootstrap", "randomization"),
                                  samples=10000, seed=1)
            scores = {name: [100 * run.score("test") for run in runs]
                      for name, runs in (("default", [p[0] for p in pairs]), ("flag", [p[1] for p in pairs]))}
            print(f"{paradigm} {task} seeds {[key[2] for key in keys]}: default "
                  f"{np.mean(scores['default']):.2f} ± {np.std(scores['default'], ddof=1):.2f}  flag "
                  f"{np.mean(scores['flag']):.2f} ± {np.std(scores['flag'], ddof=1):.2f}  per seed "
                  f"{[round(s, 2) for s in scores['default']]} -> {[round(s, 2) for s in scores['flag']]}  "
                  f"t-test p={result['ttest_p']:.3g} bootstrap p={result['bootstrap_p']:.3g} "
                  f"randomization p={result['randomization_p']:.3g}")
            if paradigm == "weighted_joint":
                for (default_run, flag_run) in pairs:
                    print(f"    seed {default_run.seed} final weights: default "
                          + ", ".join(f"{t} {w:.3f}" for t, w in final_weights(default_run).items())
                          + " | flag " + ", ".join(f"{t} {w:.3f}" for t, w in final_weights(flag_run).items()))
    for name, root in (("default", args.models_default), ("flag", args.models_flag)):
        if root is None:
            continue
        for run in find_runs(root):
            if os.path.isfile(os.path.join(run.directory, "task_heads.safetensors")):
                print(f"main head movement ({name}) {run.paradigm} {run.main_task} seed {run.seed}: "
                      f"{head_movement(run.directory, run.main_task, run.seed):.4f}")


if __name__ == "__main__":
    main()
