#!/bin/sh
# Weighted normalized joint training, TAWT: the TAWT update starting from the normalized weights.
#
#   sh scripts/run_weighted_joint_training_multi_normalized.sh SOURCE... MAIN_TASK [WEIGHT...] N_MAIN
#   e.g. sh scripts/run_weighted_joint_training_multi_normalized.sh pos chunking predicate ner 0.05 0.05 0.05 0.85 500
#
# The starting weights: as in run_joint_training_multi_normalized.sh.
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_weighted_joint_training_multi_normalized.sh SOURCE... MAIN_TASK [WEIGHT...] N_MAIN"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

parse_normalized_arguments "$@"
echo "Settings: sources $SOURCES, main task $MAIN_TASK, weights ${WEIGHTS:-1/size}, $N_MAIN main-task sentences"
# shellcheck disable=SC2086
RUN_NAME="weighted_joint_training_multi_normalized-$(dashed $SOURCES $MAIN_TASK)-n$N_MAIN${WEIGHTS:+-w$(dashed $WEIGHTS)}"
# shellcheck disable=SC2086
run_paradigm "$RUN_NAME" \
    run_weighted_normalized_joint.py --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" \
    --main_task_train_sent_num "$N_MAIN" --weighting tawt --normalized_gradients \
    --gradient_sampling_batch_size "$GRADIENT_SAMPLING_BATCH_SIZE" ${WEIGHTS:+--task_weights $WEIGHTS}
