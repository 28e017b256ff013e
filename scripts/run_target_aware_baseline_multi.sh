#!/bin/sh
# A target-aware baseline beside TAWT, in joint training from uniform weights: GCS (Du et al. 2018), weighted
# GCS, or OL-AUX (Lin et al. 2019), see tawt/target_aware_baselines.py; or ForkMerge (Jiang et al. 2023), see
# tawt/forkmerge.py (its default branches, target and all, merged once per epoch).
#
#   sh scripts/run_target_aware_baseline_multi.sh METHOD [SOURCE... MAIN_TASK [N_MAIN]]
#   METHOD: gcs, gcs_weighted, olaux or forkmerge
#   e.g. sh scripts/run_target_aware_baseline_multi.sh gcs pos chunking predicate ner 500
#
# No tasks: the paper's NER setting. The target gradient is the main task's encoder gradient on
# GRADIENT_SAMPLING_BATCH_SIZE sampled sentences, refreshed every TARGET_GRADIENT_STEPS steps (default 1:
# at every source step); OL-AUX's horizon is OLAUX_HORIZON steps (default 5).
# Settings (WORKING_DIR, BERT_MODEL, MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, SEED, OUTPUT_DIR, EXTRA_ARGS)
# come from the environment: see scripts/common.sh.
set -e
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
USAGE="usage: sh scripts/run_target_aware_baseline_multi.sh METHOD [SOURCE... MAIN_TASK [N_MAIN]] (METHOD: gcs, gcs_weighted, olaux, forkmerge)"
. "$SCRIPT_DIR/common.sh"
handle_help "$@"

[ $# -ge 1 ] || usage_error "give METHOD first: gcs, gcs_weighted, olaux or forkmerge"
METHOD=$1
shift
TARGET_GRADIENT_STEPS=${TARGET_GRADIENT_STEPS:-1}
OLAUX_HORIZON=${OLAUX_HORIZON:-5}
case $METHOD in
    gcs) METHOD_FLAGS="--weighting gcs --gcs_mode unweighted" ;;
    gcs_weighted) METHOD_FLAGS="--weighting gcs --gcs_mode weighted" ;;
    olaux) METHOD_FLAGS="--weighting olaux --weight_update_steps $OLAUX_HORIZON" ;;
    forkmerge) METHOD_FLAGS="--weighting forkmerge" ;;
    *) usage_error "METHOD '$METHOD' is not gcs, gcs_weighted, olaux or forkmerge" ;;
esac
parse_tasks_and_size "$@"
echo "Settings: $METHOD, sources $SOURCES, main task $MAIN_TASK, ${N_MAIN:-all} main-task sentences"
# shellcheck disable=SC2086
run_paradigm "${METHOD}_joint_training_multi-$(dashed $SOURCES $MAIN_TASK)${N_MAIN:+-n$N_MAIN}" run_weighted_joint.py \
    --auxiliary_task_list $SOURCES --main_task "$MAIN_TASK" ${N_MAIN:+--main_task_train_sent_num $N_MAIN} \
    $METHOD_FLAGS --gradient_sampling_batch_size "$GRADIENT_SAMPLING_BATCH_SIZE" \
    --target_gradient_steps "$TARGET_GRADIENT_STEPS"
