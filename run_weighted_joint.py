"""Joint training of the sources and the main task, with fixed or TAWT-learned task weights (SPEC §6).

Every batch holds one task's sentences; task t's loss is multiplied by w_t * K (K tasks), so uniform
weights are plain joint training. The two knobs --task_weights and --weighting give every variant:

  joint training                  --weighting fixed                       (uniform weights)
  joint training, fixed weights   --weighting fixed --task_weights 0.2 0.2 0.2 0.4
  weighted joint training (TAWT)  --weighting tawt                        (the default; starts uniform)

Weights are given sources first, in --auxiliary_task_list order, main task last. With --weighting tawt
they are updated once per epoch by the exponentiated-gradient step of SPEC §5; the main task is itself
weighted, and its own cosine is 1.

    python run_weighted_joint.py --auxiliary_task_list pos chunking predicate --main_task ner \
        --main_task_train_sent_num 500 --output_dir out/weighted_joint_ner --do_train --do_eval --do_predict
"""

import argparse

from cross_task_training import (
    TASK_WEIGHTS_FILE, TaskWeightHistory, Trainer, add_common_arguments, add_multi_task_arguments, build_model,
    check_task_lists, check_weighting_arguments, finish_run, initial_task_weights, load_task_data, load_tokenizer,
    parse_task_list, run_main, start_run, training_schedule,
)
from weighted_training_basics import tawt_update


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_multi_task_arguments(parser)
    args = parser.parse_args(argv)
    args.auxiliary_task_list = parse_task_list(args.auxiliary_task_list)
    return args


def joint_paradigm(args):
    if args.weighting == "tawt":
        return "weighted_joint"
    return "joint" if args.task_weights is None else "joint_fixed_weights"


def main(argv=None):
    args = parse_arguments(argv)
    check_task_lists(args.auxiliary_task_list, args.main_task)
    check_weighting_arguments(args)
    tasks = args.auxiliary_task_list + [args.main_task]
    task_weights = initial_task_weights(args.task_weights, tasks)

    run = start_run(args, joint_paradigm(args), args.main_task, tasks)
    tokenizer = load_tokenizer(run)
    train_limits = {task: None for task in args.auxiliary_task_list}
    train_limits[args.main_task] = args.main_task_train_sent_num
    data = load_task_data(run, tokenizer, train_limits if args.do_train else {}, tasks)
    model = build_model(run, data.labels)

    if args.do_train:
        history = TaskWeightHistory(run.path(TASK_WEIGHTS_FILE), tasks, args.weighting)
        history.record("initial", 0, task_weights)
        epochs, total_steps = training_schedule(args, data.train)
        trainer = Trainer(model, run, total_steps, stage="joint")
        for epoch in range(epochs):
            trainer.train_epoch(data.train, dict(zip(tasks, task_weights)), epoch)
            if args.weighting == "tawt":
                task_weights, similarities = tawt_update(
                    model, task_weights, tasks, args.main_task, data.train, args, run.gradient_sampling_generator,
                    run.pad_token_id, run.device, run.autocast,
                )
                history.record("epoch", epoch + 1, task_weights, similarities)

    return finish_run(run, model, tokenizer, data)


if __name__ == "__main__":
    run_main(main)
