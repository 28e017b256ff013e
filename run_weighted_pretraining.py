"""Pre-training on the sources with fixed or TAWT-learned source weights, then fine-tuning.

Stage 1 trains on all sources pooled, task t's loss multiplied by w_t * S (S sources); stage 2
fine-tunes the whole model on the main task for the full number of epochs, with a fresh optimizer and
schedule. The weights are over the sources only (the main task is not trained in stage 1):

  pre-training                  --weighting fixed                       (uniform source weights)
  pre-training, fixed weights   --weighting fixed --task_weights 0.5 0.3 0.2
  weighted pre-training (TAWT)  --weighting tawt                        (the default; starts uniform)

Weighted pre-training, after each pre-training epoch (and every --weight_update_steps steps within one):
fit a throw-away copy of the main task's head on the frozen encoder for one epoch, take the TAWT weight
step with that copy (paper: --inv_constant 1, 10, 30, 100), and drop it; fine-tuning starts from the main
head as it was before pre-training. --reseed_each_update draws the same head-fit order and gradient-sampling
batches at every update, as the original did. --pre_train_only stops after stage 1. --eval_strategy scores
the main task on dev in stage 2 only: stage 1 does not train its head.

    python run_weighted_pretraining.py --auxiliary_task_list pos chunking predicate --main_task ner \\
        --main_task_train_sent_num 500 --inv_constant 10 --output_dir out/weighted_pretraining_ner \\
        --do_train --do_eval --do_predict
"""

import numpy as np

from tawt.errors import UsageError, run_main
from tawt.run_arguments import (
    add_common_arguments, add_multi_task_arguments, argument_parser, check_multi_task_arguments,
    initial_task_weights,
)


def parse_arguments(argv=None):
    parser = argument_parser(__doc__)
    add_common_arguments(parser)
    add_multi_task_arguments(parser, main_task_weighted=False)
    parser.add_argument("--pre_train_only", action="store_true",
                        help="stop after pre-training on the sources (no fine-tuning on the main task)")
    parser.add_argument("--reseed_each_update", action="store_true",
                        help="as the original (which re-seeded its generators at the start of every head fit): "
                             "every weight update draws the same gradient-sampling batches, and every head fit "
                             "the same batches in the same order. By default each update draws fresh ones")
    args = check_multi_task_arguments(parser.parse_args(argv))
    if args.pre_train_only and args.eval_strategy != "no":
        raise UsageError(f"--eval_strategy {args.eval_strategy} scores the main task during fine-tuning, which "
                         "--pre_train_only leaves out; drop one of the two")
    return args


def main(argv=None):
    args = parse_arguments(argv)
    # The training code (torch, transformers) is imported once the arguments are read: --help and a mistyped
    # flag answer at once.
    from tawt.cross_task_training import finish_run, paradigm_name, prepare_run, start_weight_history
    from tawt.training_loop import train_stage
    from weighted_training_basics import fit_head_on_frozen_encoder, tawt_update

    sources, main_task = args.auxiliary_task_list, args.main_task
    source_weights = initial_task_weights(args.task_weights, sources)
    train_limits = {task: None for task in sources}
    train_limits[main_task] = args.main_task_train_sent_num
    run, tokenizer, data, model = prepare_run(args, paradigm_name("pretraining", args), main_task,
                                              sources + [main_task], train_limits)

    if args.do_train:
        history = start_weight_history(run, sources, source_weights)

        def fit_main_head_then_tawt_step(weights, epoch, step):
            # The gradients are taken through a fitted copy of the main head, then the copy is dropped:
            # the model's own main head stays as it was for fine-tuning. An update within the epoch
            # (--weight_update_steps) orders its fit's batches by its own step.
            sampler = None
            if args.reseed_each_update:  # the same draws at every update, from generators made afresh
                fit_order = run.data_order_generator("head-fit", 0)
                sampler = run.new_gradient_sampling_generator()
            else:
                fit_order = run.data_order_generator("head-fit" if step is None else f"head-fit step {step}", epoch)
            main_head, fit_loss = fit_head_on_frozen_encoder(model, main_task, data.train[main_task], run, fit_order)
            history.add_to_next_entry(head_fit_loss=fit_loss)
            with model.replaced_heads({main_task: main_head}):
                return tawt_update(model, run, weights, sources, main_task, data.train, sampler)

        source_splits = {task: data.train[task] for task in sources}
        train_stage(model, run, "pre-train", source_splits, source_weights, history,
                    fit_main_head_then_tawt_step if args.weighting == "tawt" else None)
        if not args.pre_train_only:
            # Fine-tune the whole model on the main task alone, with a fresh optimizer and schedule.
            train_stage(model, run, "fine-tune", {main_task: data.train[main_task]}, np.ones(1))

    return finish_run(run, model, tokenizer, data)


if __name__ == "__main__":
    run_main(main)
