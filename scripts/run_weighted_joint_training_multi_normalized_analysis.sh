#!/bin/sh
# Ratio analysis, weighted normalized joint training: the ratio analysis with the TAWT update.
#
#   sh scripts/run_weighted_joint_training_multi_normalized_analysis.sh N_MAIN RATIO [SOURCE... MAIN_TASK]
#   e.g. sh scripts/run_weighted_joint_training_multi_normalized_analysis.sh 500 8 pos predicate ner
#
# Tasks default to the paper's: sources pos predicate, main ner.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_weighted_joint_training_multi_normalized_analysis.sh N_MAIN RATIO [SOURCE... MAIN_TASK]"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

parse_analysis_arguments "$@"
echo "Settings: $N_MAIN main-task sentences, ratio $RATIO, sources $SOURCES, main task $MAIN_TASK"
# shellcheck disable=SC2086
run_paradigm "weighted_joint_training_multi_normalized_analysis-$(dashed $SOURCES $MAIN_TASK)-n$N_MAIN-r$RATIO" \
    run_weighted_normalized_joint.py --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" \
    --main_task_train_sent_num "$N_MAIN" --auxiliary_main_ratio "$RATIO" --weighting tawt \
    --normalized_gradients --gradient_sampling_batch_size "$GRADIENT_SAMPLING_BATCH_SIZE"
