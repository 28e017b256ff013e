#!/bin/sh
# Single-task learning with a given number of training sentences (the paper's size analysis).
#
#   sh scripts/run_single_analysis.sh TRAIN_SENT_NUM [TASK]
#   e.g. sh scripts/run_single_analysis.sh 2000 ner
#
# TASK defaults to ner, as in the original.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_single_analysis.sh TRAIN_SENT_NUM [TASK]"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage_error "give TRAIN_SENT_NUM and optionally TASK"; fi
is_count "$1" || usage_error "TRAIN_SENT_NUM '$1' is not a number"
TRAIN_SENT_NUM=$1 TASK=${2:-ner}
check_task_names "$TASK"
echo "Settings: task $TASK, $TRAIN_SENT_NUM training sentences"
run_paradigm "single-$TASK-n$TRAIN_SENT_NUM" run_single_task.py --task "$TASK" --train_sent_num "$TRAIN_SENT_NUM"
