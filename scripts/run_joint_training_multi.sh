#!/bin/sh
# Joint training: the sources and the main task trained together, uniform weights.
#
#   sh scripts/run_joint_training_multi.sh [SOURCE... MAIN_TASK [N_MAIN]]
#   e.g. sh scripts/run_joint_training_multi.sh pos chunking predicate ner 500
#
# No arguments: the paper's NER setting. No N_MAIN: the main task's whole training file.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_joint_training_multi.sh [SOURCE... MAIN_TASK [N_MAIN]]"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

parse_tasks_and_size "$@"
echo "Settings: sources $SOURCES, main task $MAIN_TASK, ${N_MAIN:-all} main-task sentences"
# shellcheck disable=SC2086
run_paradigm "joint_training_multi-$(dashed $SOURCES $MAIN_TASK)${N_MAIN:+-n$N_MAIN}" run_weighted_joint.py \
    --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" ${N_MAIN:+--main_task_train_sent_num $N_MAIN} \
    --weighting fixed
