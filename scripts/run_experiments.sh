#!/bin/sh
# An experiment grid through a job queue, then the Table-1 summary and the weight plots.
#
#   sh scripts/run_experiments.sh [SECTION...] [--list] [--no_summary] [--no_submit]
#   GRID_FILE=my_grid.toml sh scripts/run_experiments.sh      (a grid of your own tasks)
#
# A grid is a TOML file naming its main tasks, each with its sources and size, its sections, seeds, training
# settings and summary options (docs/grid_files.md). The presets are scripts/grids/<name>.toml; copy one to
# start your own.
#
# SECTION: main, normalized, baselines, analysis, ablation, gcs_du, more_seeds, noise_source, forkmerge,
# final_weights (default: the grid's sections; final_weights runs last, as it re-runs the weighted runs with
# their learned weights fixed). --list prints the jobs and runs nothing. BACKEND=slurm submits the runs as a
# Slurm job array instead of running them here (--no_submit writes the array's scripts without submitting them).
#
# Without GRID or GRID_FILE: with WORKING_DIR, the paper's grid on $WORKING_DIR/data ({train,dev,test}_{task}.txt,
# {task}_labels.txt) with bert-base-cased, 4 epochs, length 128, batch 32; without, the reduced grid on a slice
# of the embedded default data and the default MiniLM encoder (about 5 minutes on a 2-core CPU; its scores show
# the pipeline works, they are not the paper's).
#
# Settings from the environment:
#   GRID          a preset of scripts/grids/: paper (default with WORKING_DIR), reduced (default without),
#                 medium, large or genre
#   GRID_FILE     your own grid file instead of a preset
#   WORKING_DIR   see above              DATA_DIR     the data directory (default: the grid file's data_dir,
#                 else $WORKING_DIR/data, else the embedded default data)
#   OUTPUT_ROOT   the output tree (default: $WORKING_DIR/outputs, else ./outputs)
#   SEEDS         seeds of every run, e.g. SEEDS="1 2 3" (default: the grid's seeds)
#   MAIN_TASKS    main tasks to run, e.g. MAIN_TASKS="ner pos" (default: the grid's)
#   INV_CONSTANTS weighted pre-training's, e.g. INV_CONSTANTS="1 10" (default: the grid's inv_constants)
#   BERT_MODEL MAX_LENGTH BATCH_SIZE NUM_EPOCHS GRADIENT_SAMPLING_BATCH_SIZE EXTRA_ARGS: as in scripts/common.sh;
#                 each replaces the grid's value, except EXTRA_ARGS, which adds to the grid's flags
#   CUDA_VISIBLE_DEVICES  the GPUs the queue deals jobs to, one job per GPU at a time (default: all;
#                 none: one job at a time on the CPU)
#   JOBS_PER_GPU  jobs sharing a GPU (default 1)     SLOTS   jobs at once, overriding both
#   BACKEND       local (default: the queue above) or slurm
#   SBATCH_ARGS   with BACKEND=slurm: sbatch options of every job, e.g. "--partition gpu --gres gpu:1"
#   SBATCH_SUMMARY_ARGS  sbatch options of the summary and follow-up jobs (default: SBATCH_ARGS)
#   MAX_RUNNING   with BACKEND=slurm: at most this many runs of a job array at once (default: as Slurm places them)
#
# Each run has its directory OUTPUT_ROOT/<section>/<paradigm>/<main task>/seed_<seed> and its log
# OUTPUT_ROOT/logs/<section>/<paradigm>/<main task>/seed_<seed>.log; a run whose all_results.json (its last
# file) exists is skipped, so the same command resumes an interrupted grid. The summary (table1.md, table1.csv,
# significance.csv, task_weights/*.png) goes to OUTPUT_ROOT/summary. Details: scripts/experiment_grid.py.
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
exec "$PYTHON" "$SCRIPT_DIR/experiment_grid.py" "$@"
