"""Single-task learning: fine-tune the encoder and one head on the main task alone.

The original's run_single.py, and run_single_analysis.py with --train_sent_num:

    python run_single_task.py --task ner --train_sent_num 500 --output_dir out/single_ner \
        --do_train --do_eval --do_predict
"""

import numpy as np

from tawt.errors import run_main
from tawt.run_arguments import add_common_arguments, argument_parser, check_positive, check_task_name


def parse_arguments(argv=None):
    parser = argument_parser(__doc__)
    add_common_arguments(parser)
    task = parser.add_argument_group("task")
    task.add_argument("--task", required=True, help="the task to learn, e.g. ner")
    task.add_argument("--train_sent_num", type=int, default=None,
                      help="use the first N sentences of train_{task}.txt; default: all")
    args = parser.parse_args(argv)
    check_task_name(args.task, "--task")
    check_positive(args.train_sent_num, "--train_sent_num", "sentences; leave it out to use all")
    return args


def main(argv=None):
    args = parse_arguments(argv)
    # The training code (torch, transformers) is imported once the arguments are read: --help and a mistyped
    # flag answer at once.
    from tawt.cross_task_training import finish_run, prepare_run
    from tawt.training_loop import train_stage

    run, tokenizer, data, model = prepare_run(args, "single_task", args.task, [args.task],
                                              {args.task: args.train_sent_num})

    if args.do_train:
        train_stage(model, run, "train", data.train, np.ones(1))

    return finish_run(run, model, tokenizer, data)


if __name__ == "__main__":
    run_main(main)
