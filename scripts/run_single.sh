#!/bin/sh
# Single-task learning: fine-tune the encoder and one head on the main task alone.
#
#   sh scripts/run_single.sh [TASK [TRAIN_SENT_NUM]]
#   e.g. sh scripts/run_single.sh ner 500
#
# No arguments: the paper's NER setting (ner, 500 sentences). No TRAIN_SENT_NUM: the whole training file.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_single.sh [TASK [TRAIN_SENT_NUM]]"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

if [ $# -gt 2 ]; then usage_error "give at most TASK and TRAIN_SENT_NUM"; fi
TASK=${1:-$PAPER_MAIN_TASK}
if [ $# -eq 0 ]; then TRAIN_SENT_NUM=$PAPER_MAIN_SIZE; else TRAIN_SENT_NUM=${2:-}; fi
if [ -n "$TRAIN_SENT_NUM" ] && ! is_count "$TRAIN_SENT_NUM"; then
    usage_error "TRAIN_SENT_NUM '$TRAIN_SENT_NUM' is not a number"
fi
check_task_names "$TASK"
echo "Settings: task $TASK, ${TRAIN_SENT_NUM:-all} training sentences"
run_paradigm "single-$TASK${TRAIN_SENT_NUM:+-n$TRAIN_SENT_NUM}" run_single_task.py \
    --task "$TASK" ${TRAIN_SENT_NUM:+--train_sent_num $TRAIN_SENT_NUM}
