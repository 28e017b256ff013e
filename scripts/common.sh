# What every paradigm script in scripts/ shares; sourced, not run. POSIX sh (dash works).
#
# The settings the original scripts hard-coded are read from the environment instead, with the paper's
# values as defaults:
#
#   WORKING_DIR   unset: the embedded default data and encoder (MiniLM; data built on first use).
#                 Set: the data is $WORKING_DIR/data and the encoder bert-base-cased, as in the paper.
#   DATA_DIR      the data directory itself (default: $WORKING_DIR/data, or the embedded default)
#   BERT_MODEL    encoder name or directory (default: bert-base-cased with WORKING_DIR, else the embedded one)
#   MAX_LENGTH 128, BATCH_SIZE 32 (training and evaluation), NUM_EPOCHS 4, SEED 1
#   GRADIENT_SAMPLING_BATCH_SIZE 64: sentences per task in the TAWT weight update (weighted scripts only)
#   OUTPUT_ROOT   where a run's directory goes (default: $WORKING_DIR/outputs, else ./outputs)
#   OUTPUT_DIR    the run's directory itself (default: OUTPUT_ROOT/<script>-<its arguments>-seed<SEED>)
#   EXTRA_ARGS    further flags for the Python script, e.g. "--fp16 --learning_rate 3e-5" (they come last,
#                 so a flag the script gives too takes this value; run_args.json records both)
#   PYTHON        the interpreter (default: python, else python3)
#
# A paradigm script sets USAGE, parses its positional arguments with the helpers below, then calls
# run_paradigm with the Python script and its paradigm flags.

REPO_DIR=$(CDPATH= cd -- "$SCRIPT_DIR/.." && pwd)

if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
if [ -n "${WORKING_DIR:-}" ]; then
    DATA_DIR=${DATA_DIR:-$WORKING_DIR/data}
    BERT_MODEL=${BERT_MODEL:-bert-base-cased}
    OUTPUT_ROOT=${OUTPUT_ROOT:-$WORKING_DIR/outputs}
else
    DATA_DIR=${DATA_DIR:-}      # empty: the scripts build and use the embedded default data
    BERT_MODEL=${BERT_MODEL:-}  # empty: the embedded default encoder
    OUTPUT_ROOT=${OUTPUT_ROOT:-outputs}
fi
MAX_LENGTH=${MAX_LENGTH:-128}
BATCH_SIZE=${BATCH_SIZE:-32}
NUM_EPOCHS=${NUM_EPOCHS:-4}
SEED=${SEED:-1}
GRADIENT_SAMPLING_BATCH_SIZE=${GRADIENT_SAMPLING_BATCH_SIZE:-64}
EXTRA_ARGS=${EXTRA_ARGS:-}

# The paper's default setting, used by the scripts whose original took no task arguments.
PAPER_SOURCES="pos chunking predicate"
PAPER_MAIN_TASK=ner
PAPER_MAIN_SIZE=500

usage_error() {
    echo "$(basename "$0"): $1" >&2
    printf '%s\n' "$USAGE" >&2
    exit 2
}

is_number() {
    case $1 in
        *[0-9]*) ;;
        *) return 1 ;;
    esac
    case $1 in
        *[!0-9.eE+-]* | *[eE]*[eE]*) return 1 ;;
        *) return 0 ;;
    esac
}

is_count() {
    case $1 in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

# parse_tasks_and_size SOURCE... MAIN [N_MAIN]
#   sets SOURCES, MAIN_TASK, N_MAIN (empty: the whole training file); no arguments: the paper's NER setting.
parse_tasks_and_size() {
    if [ $# -eq 0 ]; then
        SOURCES=$PAPER_SOURCES MAIN_TASK=$PAPER_MAIN_TASK N_MAIN=$PAPER_MAIN_SIZE
        return
    fi
    N_MAIN=
    eval "last=\${$#}"
    if is_count "$last"; then
        N_MAIN=$last
        take=$(($# - 1))
    else
        take=$#
    fi
    [ "$take" -ge 2 ] || usage_error "give at least one source task and the main task"
    SOURCES= MAIN_TASK= index=0
    for argument in "$@"; do
        index=$((index + 1))
        if [ "$index" -lt "$take" ]; then
            SOURCES="$SOURCES${SOURCES:+ }$argument"
        elif [ "$index" -eq "$take" ]; then
            MAIN_TASK=$argument
        fi
    done
    check_task_names $SOURCES "$MAIN_TASK"
}

# parse_fixed_weights EXTRA_WEIGHTS SOURCE... MAIN WEIGHT... N_MAIN
#   the original fixed-weight layout: S sources, the main task, S + EXTRA_WEIGHTS weights (1 when the main
#   task is weighted too, 0 for pre-training) and the main task's size. Sets SOURCES, MAIN_TASK, WEIGHTS, N_MAIN.
parse_fixed_weights() {
    extra=$1
    shift
    sources_count=$((($# - 2 - extra) / 2))
    if [ "$sources_count" -lt 1 ] || [ $((2 * sources_count + 2 + extra)) -ne $# ]; then
        weights="one weight per source"
        if [ "$extra" -eq 1 ]; then weights="$weights and one for the main task"; fi
        usage_error "expected SOURCE... MAIN_TASK, $weights, then N_MAIN; got $# arguments"
    fi
    SOURCES= MAIN_TASK= WEIGHTS= N_MAIN= index=0
    for argument in "$@"; do
        index=$((index + 1))
        if [ "$index" -le "$sources_count" ]; then
            SOURCES="$SOURCES${SOURCES:+ }$argument"
        elif [ "$index" -eq $((sources_count + 1)) ]; then
            MAIN_TASK=$argument
        elif [ "$index" -lt $# ]; then
            is_number "$argument" || usage_error "weight '$argument' is not a number"
            WEIGHTS="$WEIGHTS${WEIGHTS:+ }$argument"
        else
            N_MAIN=$argument
        fi
    done
    is_count "$N_MAIN" || usage_error "N_MAIN '$N_MAIN' is not a number of sentences"
    check_task_names $SOURCES "$MAIN_TASK"
}

# parse_normalized_arguments SOURCE... MAIN [WEIGHT...] N_MAIN
#   with weights (one per source, then the main task's): the original layout; without: computed from sizes.
parse_normalized_arguments() {
    eval "last=\${$#}"
    is_count "$last" || usage_error "the last argument must be N_MAIN, the main task's number of sentences"
    sources_count=$((($# - 3) / 2))
    if [ $(($# % 2)) -eq 1 ] && [ "$sources_count" -ge 1 ] && weights_follow_main_task "$sources_count" "$@"; then
        parse_fixed_weights 1 "$@"
    else
        parse_tasks_and_size "$@"
        WEIGHTS=
    fi
}

# weights_follow_main_task S ARG...: true when ARG S+1 is a task name and ARGs S+2 .. the one before last are numbers.
weights_follow_main_task() {
    sources_count=$1
    shift
    index=0
    for argument in "$@"; do
        index=$((index + 1))
        if [ "$index" -eq $((sources_count + 1)) ] && is_number "$argument"; then return 1; fi
        if [ "$index" -gt $((sources_count + 1)) ] && [ "$index" -lt $# ] && ! is_number "$argument"; then return 1; fi
    done
    return 0
}

# parse_analysis_arguments N_MAIN RATIO [SOURCE... MAIN]: sets N_MAIN, RATIO, SOURCES, MAIN_TASK.
#   No tasks: the paper's analysis setting, sources pos predicate and main task ner.
parse_analysis_arguments() {
    [ $# -ge 2 ] || usage_error "give N_MAIN and RATIO"
    is_count "$1" || usage_error "N_MAIN '$1' is not a number of sentences"
    is_number "$2" || usage_error "RATIO '$2' is not a number"
    N_MAIN=$1 RATIO=$2
    shift 2
    if [ $# -eq 0 ]; then
        SOURCES="pos predicate" MAIN_TASK=ner
    else
        [ $# -ge 2 ] || usage_error "give at least one source task and the main task after N_MAIN and RATIO"
        n_main=$N_MAIN
        parse_tasks_and_size "$@"
        [ -z "$N_MAIN" ] || usage_error "give N_MAIN first, not after the tasks"
        N_MAIN=$n_main
    fi
}

handle_help() {
    case ${1:-} in
        -h | --help)
            printf '%s\n' "$USAGE"
            exit 0
            ;;
    esac
}

check_task_names() {
    for task in "$@"; do
        if is_number "$task"; then
            usage_error "'$task' is in the place of a task name; check the order of the arguments"
        fi
    done
}

# An interpreter of another environment (a venv not activated: python from PATH has no torch) would fail
# only once the run had started; say which one was tried, and how to choose another.
check_python() {
    if ! "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' \
        >/dev/null 2>&1; then
        echo "$(basename "$0"): PYTHON=$PYTHON ($(command -v "$PYTHON" || echo 'no such command')) cannot import torch;" \
            "give the interpreter of the environment the requirements are installed in, e.g." \
            "PYTHON=venv/bin/python sh $0 ..., or activate that environment" >&2
        exit 2
    fi
}

# run_paradigm RUN_NAME PYTHON_SCRIPT FLAG...
#   runs the Python script with FLAG... and the shared flags, in OUTPUT_DIR (default OUTPUT_ROOT/RUN_NAME).
run_paradigm() {
    run_name=$1 script=$2
    shift 2
    OUTPUT_DIR=${OUTPUT_DIR:-$OUTPUT_ROOT/$run_name-seed$SEED}
    if [ -n "$DATA_DIR" ]; then set -- --data_dir "$DATA_DIR" "$@"; fi
    if [ -n "$BERT_MODEL" ]; then set -- --model_name_or_path "$BERT_MODEL" "$@"; fi
    set -- "$@" --output_dir "$OUTPUT_DIR" --max_seq_length "$MAX_LENGTH" --num_train_epochs "$NUM_EPOCHS" \
        --per_gpu_train_batch_size "$BATCH_SIZE" --per_gpu_eval_batch_size "$BATCH_SIZE" --seed "$SEED" \
        --do_train --do_eval --do_predict
    check_python
    # EXTRA_ARGS is split into words on purpose: it holds several flags.
    # shellcheck disable=SC2086
    echo "+ $PYTHON $script $* $EXTRA_ARGS"
    # shellcheck disable=SC2086
    exec "$PYTHON" "$REPO_DIR/$script" "$@" $EXTRA_ARGS
}

# "pos chunking" -> "pos-chunking", for run names.
dashed() {
    echo "$*" | tr ' ' '-'
}
