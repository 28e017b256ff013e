"""Normalized joint training: joint training whose weights equalise each task's total contribution.

The starting weights are proportional to 1 / (number of training sentences) of each task, computed from
the sizes actually read (after --main_task_train_sent_num), and printed; --task_weights overrides them
(the paper's grid gives them, e.g. 0.05 0.05 0.05 0.85). Then, as in run_weighted_joint.py:

  normalized joint training            --weighting fixed
  weighted normalized joint training   --weighting tawt   (the default: the TAWT update from the normalized weights)
  GCS, OL-AUX from the normalized weights   --weighting gcs / olaux   (tawt/target_aware_baselines.py)
  ForkMerge, its all branch at the normalized weights   --weighting forkmerge   (tawt/forkmerge.py)

Ratio analysis: --auxiliary_main_ratio r cuts every source to its first r * n_main sentences (n_main =
--main_task_train_sent_num) and starts from the weights [1/r, ..., 1/r, 1] / (S/r + 1), with either
--weighting.

    python run_weighted_normalized_joint.py --auxiliary_task_list pos predicate --main_task ner \\
        --main_task_train_sent_num 500 --auxiliary_main_ratio 8 --output_dir out/ratio8 \\
        --do_train --do_eval --do_predict
"""

import logging

import numpy as np

from tawt.errors import run_main
from tawt.run_arguments import (
    add_common_arguments, add_forkmerge_arguments, add_multi_task_arguments, add_target_aware_baseline_arguments,
    argument_parser, check_forkmerge_arguments, check_multi_task_arguments, check_ratio_arguments,
    initial_task_weights,
)

logger = logging.getLogger("tawt")


def parse_arguments(argv=None):
    parser = argument_parser(__doc__)
    add_common_arguments(parser)
    add_multi_task_arguments(parser, target_aware_baselines=True)
    add_target_aware_baseline_arguments(parser)
    add_forkmerge_arguments(parser)
    parser.add_argument("--auxiliary_main_ratio", type=float, default=None,
                        help="ratio analysis: cut each source to ratio * n_main sentences and start from the "
                             "weights [1/r, ..., 1/r, 1] / (S/r + 1)")
    args = check_multi_task_arguments(parser.parse_args(argv))
    check_forkmerge_arguments(args)
    check_ratio_arguments(args.auxiliary_main_ratio, args.main_task_train_sent_num)
    return args


def normalized_weights(sizes):
    """Weights proportional to 1 / n_t: every task contributes the same total to the loss."""
    inverse = 1.0 / np.asarray(sizes, dtype=np.float64)
    return inverse / inverse.sum()


def ratio_weights(ratio, num_sources):
    """[1/r, ..., 1/r, 1] / (S/r + 1): the normalized weights when every source has r * n_main sentences."""
    return np.array([1.0 / ratio] * num_sources + [1.0]) / (num_sources / ratio + 1.0)


def main(argv=None):
    args = parse_arguments(argv)
    # The training code (torch, transformers) is imported once the arguments are read: --help and a mistyped
    # flag answer at once.
    from tawt import forkmerge, target_aware_baselines
    from tawt.cross_task_training import finish_run, paradigm_name, prepare_run, start_weight_history
    from tawt.training_loop import train_stage
    from weighted_training_basics import tawt_update

    sources, main_task = args.auxiliary_task_list, args.main_task
    tasks = sources + [main_task]
    ratio = args.auxiliary_main_ratio
    source_limit = None if ratio is None else int(round(ratio * args.main_task_train_sent_num))
    train_limits = {task: source_limit for task in sources}
    train_limits[main_task] = args.main_task_train_sent_num
    # Given weights are still normalized joint training (the paper's grid gives them): no _fixed_weights name.
    paradigm = paradigm_name("normalized_joint", args, fixed_weights_variant=False)
    run, tokenizer, data, model = prepare_run(args, paradigm, main_task, tasks, train_limits)

    if args.do_train:
        if args.task_weights is not None:
            task_weights = initial_task_weights(args.task_weights, tasks)
        elif ratio is not None:
            task_weights = ratio_weights(ratio, len(sources))
        else:
            task_weights = normalized_weights([len(data.train[task].sentences) for task in tasks])
        logger.info("normalized weights (sentences %s): %s",
                    {task: len(data.train[task].sentences) for task in tasks}, np.round(task_weights, 4).tolist())
        history = start_weight_history(run, tasks, task_weights)

        def tawt_step(weights, epoch, step):
            return tawt_update(model, run, weights, tasks, main_task, data.train)

        baseline = target_aware_baselines.start_baseline(model, run, tasks, main_task, data.train, task_weights)
        if baseline is not None:  # GCS or OL-AUX
            update_weights, adjust_gradients = baseline.update_weights, baseline.adjust_gradients
        else:
            update_weights, adjust_gradients = (tawt_step if args.weighting == "tawt" else None), None
        if args.weighting == "forkmerge":
            forkmerge.train(model, run, "joint", data.train, task_weights, history, data.dev[main_task])
        else:
            train_stage(model, run, "joint", data.train, task_weights, history, update_weights, adjust_gradients)

    return finish_run(run, model, tokenizer, data)


if __name__ == "__main__":
    run_main(main)
