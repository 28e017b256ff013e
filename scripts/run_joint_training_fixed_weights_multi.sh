#!/bin/sh
# Joint training with fixed task weights, e.g. the final weights of a weighted run.
#
#   sh scripts/run_joint_training_fixed_weights_multi.sh SOURCE... MAIN_TASK WEIGHT... N_MAIN
#   e.g. sh scripts/run_joint_training_fixed_weights_multi.sh pos chunking predicate ner 0.04 0.04 0.05 0.87 500
#
# One weight per source, in order, then the main task's.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_joint_training_fixed_weights_multi.sh SOURCE... MAIN_TASK WEIGHT... N_MAIN"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

parse_fixed_weights 1 "$@"
echo "Settings: sources $SOURCES, main task $MAIN_TASK, weights $WEIGHTS, $N_MAIN main-task sentences"
# shellcheck disable=SC2086
run_paradigm "joint_training_fixed_weights_multi-$(dashed $SOURCES $MAIN_TASK)-n$N_MAIN-w$(dashed $WEIGHTS)" \
    run_weighted_joint.py --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" \
    --main_task_train_sent_num "$N_MAIN" --weighting fixed --task_weights $WEIGHTS
