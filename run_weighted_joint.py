"""Joint training of the sources and the main task, with fixed or TAWT-learned task weights.

Every batch holds one task's sentences; task t's loss is multiplied by w_t * K (K tasks), so uniform
weights are plain joint training. The two knobs --task_weights and --weighting give every variant:

  joint training                  --weighting fixed                       (uniform weights)
  joint training, fixed weights   --weighting fixed --task_weights 0.2 0.2 0.2 0.4
  weighted joint training (TAWT)  --weighting tawt                        (the default; starts uniform)
  GCS (Du et al. 2018)            --weighting gcs [--gcs_mode weighted]   (fixed weights, gated source gradients)
  OL-AUX (Lin et al. 2019)        --weighting olaux --weight_update_steps 5
  ForkMerge (Jiang et al. 2023)   --weighting forkmerge [--forkmerge_branches target,all]

Weights are given sources first, in --auxiliary_task_list order, main task last. With --weighting tawt
they are updated after each epoch (and every --weight_update_steps steps) by the exponentiated-gradient
step (weighted_training_basics.py); the main task is itself weighted, and its own cosine is 1. GCS and
OL-AUX, the target-aware baselines, are described in tawt/target_aware_baselines.py, ForkMerge in tawt/forkmerge.py.

    python run_weighted_joint.py --auxiliary_task_list pos chunking predicate --main_task ner \\
        --main_task_train_sent_num 500 --output_dir out/weighted_joint_ner --do_train --do_eval --do_predict
"""

from tawt.errors import run_main
from tawt.run_arguments import (
    add_common_arguments, add_forkmerge_arguments, add_multi_task_arguments, add_target_aware_baseline_arguments,
    argument_parser, check_forkmerge_arguments, check_multi_task_arguments, initial_task_weights,
)


def parse_arguments(argv=None):
    parser = argument_parser(__doc__)
    add_common_arguments(parser)
    add_multi_task_arguments(parser, target_aware_baselines=True)
    add_target_aware_baseline_arguments(parser)
    add_forkmerge_arguments(parser)
    args = check_multi_task_arguments(parser.parse_args(argv))
    check_forkmerge_arguments(args)
    return args


def main(argv=None):
    args = parse_arguments(argv)
    # The training code (torch, transformers) is imported once the arguments are read: --help and a mistyped
    # flag answer at once.
    from tawt import forkmerge, target_aware_baselines
    from tawt.cross_task_training import finish_run, paradigm_name, prepare_run, start_weight_history
    from tawt.training_loop import train_stage
    from weighted_training_basics import tawt_update

    tasks = args.auxiliary_task_list + [args.main_task]
    task_weights = initial_task_weights(args.task_weights, tasks)
    train_limits = {task: None for task in args.auxiliary_task_list}
    train_limits[args.main_task] = args.main_task_train_sent_num
    run, tokenizer, data, model = prepare_run(args, paradigm_name("joint", args), args.main_task, tasks,
                                                train_limits)

    if args.do_train:
        history = start_weight_history(run, tasks, task_weights)

        def tawt_step(weights, epoch, step):
            return tawt_update(model, run, weights, tasks, args.main_task, data.train)

        baseline = target_aware_baselines.start_baseline(model, run, tasks, args.main_task, data.train, task_weights)
        if baseline is not None:  # GCS or OL-AUX
            update_weights, adjust_gradients = baseline.update_weights, baseline.adjust_gradients
        else:
            update_weights, adjust_gradients = (tawt_step if args.weighting == "tawt" else None), None
        if args.weighting == "forkmerge":
            forkmerge.train(model, run, "joint", data.train, task_weights, history, data.dev[args.main_task])
        else:
            train_stage(model, run, "joint", data.train, task_weights, history, update_weights, adjust_gradients)

    return finish_run(run, model, tokenizer, data)


if __name__ == "__main__":
    run_main(main)
