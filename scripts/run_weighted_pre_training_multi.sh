#!/bin/sh
# Weighted pre-training, TAWT: pre-training whose source weights follow the TAWT update.
#
#   sh scripts/run_weighted_pre_training_multi.sh INV_CONSTANT [SOURCE... MAIN_TASK [N_MAIN]]
#   e.g. sh scripts/run_weighted_pre_training_multi.sh 10 pos chunking predicate ner 500
#
# INV_CONSTANT scales the weight gradient (paper: 1, 10, 30, 100). No tasks: the paper's NER setting.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_weighted_pre_training_multi.sh INV_CONSTANT [SOURCE... MAIN_TASK [N_MAIN]]"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

[ $# -ge 1 ] || usage_error "give INV_CONSTANT (paper: 1, 10, 30 or 100)"
is_number "$1" || usage_error "INV_CONSTANT '$1' is not a number"
INV_CONSTANT=$1
shift
parse_tasks_and_size "$@"
echo "Settings: inv_constant $INV_CONSTANT, sources $SOURCES, main task $MAIN_TASK, ${N_MAIN:-all} main-task sentences"
# shellcheck disable=SC2086
run_paradigm "weighted_pre_training_multi-$(dashed $SOURCES $MAIN_TASK)${N_MAIN:+-n$N_MAIN}-ic$INV_CONSTANT" \
    run_weighted_pretraining.py --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" \
    ${N_MAIN:+--main_task_train_sent_num $N_MAIN} --weighting tawt --inv_constant "$INV_CONSTANT" \
    --gradient_sampling_batch_size "$GRADIENT_SAMPLING_BATCH_SIZE"
