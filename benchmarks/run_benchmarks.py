"""The performance figures of benchmarks/README.md: this implementation against the original's approach, side by side.

    python benchmarks/run_benchmarks.py            # the full figures (about 6 minutes on 2 CPU cores)
    python benchmarks/run_benchmarks.py --quick    # smaller batches, one repetition (a few minutes)
    python benchmarks/run_benchmarks.py --data_dir DATA --model_name_or_path TOKENIZER_DIR --random_bert_base

By default the figures are measured on the embedded default (its data and the MiniLM encoder);
--data_dir and --model_name_or_path measure on others, and --random_bert_base on a randomly initialised
BERT-base built here on the tokenizer of --model_name_or_path (timing and memory do not depend on the
weights; BERT-base is the paper's encoder size).

Every figure runs both implementations in this one process (memory: in two fresh subprocesses),
interleaved, over several repetitions, and reports medians and their ratio: the machine may be shared
and noisy, and noise that hits both sides cancels in the ratio. The baselines live in
benchmarks/reference_original.py. Results are printed as a table and written to
benchmarks/results-<host>.json (or --output). With a GPU present the figures are measured on it too, in
bf16; benchmarks/gpu_check.py runs them on a bare offline GPU machine.
"""

import argparse
import contextlib
import ctypes
import gc
import io
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would only add noise to the table

import numpy as np
import torch

from tawt.benchmarks import reference_original
from tawt.benchmarks.workloads import (
    MAIN_TASK, TASKS, build_model, collate_padded_to_max_length, load_tokenizer, load_workload, parameter_bytes,
    task_split,
)
from tawt.cross_task_training import AUTO_FORWARD_PATH, Run
from tawt.evaluation import predict
from modeling_multi_bert import FORWARD_PATHS, MultiTaskTagger
from tawt.output_files import write_json_atomic
from tawt.run_arguments import add_common_arguments, add_multi_task_arguments
from tawt.testing import task_affinity
from tawt.training_loop import Trainer
from utils_cross_task import Feature, collate
from weighted_training_basics import (
    cosine_similarity, encoder_gradient, exponentiated_gradient_step, fit_head_on_frozen_encoder,
    gradient_batch_chunks, similarities_to_main_task, weight_gradients,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AUXILIARY_TASKS = [task for task in TASKS if task != MAIN_TASK]
# The paper's sizes for the overhead figure: three sources of ~9,000 sentences and a main task of 500.
PAPER_EPOCH_SENTENCES = 3 * 9_000 + 500
WEIGHT_UPDATE_STEPS = 100  # the overhead figure of updates within an epoch

SIZES = {
    # update_batch: --gradient_sampling_batch_size; train_batch: --per_gpu_train_batch_size;
    # memory_batch: the batch of the memory runs (activations cancel out of that figure, see memory_child)
    "full": dict(encoder="pretrained", memory_encoder="bert-base", update_batch=64, update_repetitions=2,
                 memory_batch=8, train_batch=32, train_batches_per_task=4, train_repetitions=2,
                 head_sentences=300, head_repetitions=2, eval_sentences=128, eval_repetitions=2, probe_batches=4,
                 probe_head_fit_steps=500, loop_batches_per_task=6, loop_repetitions=3),
    "quick": dict(encoder="pretrained", memory_encoder="pretrained", update_batch=16, update_repetitions=1,
                  memory_batch=4, train_batch=16, train_batches_per_task=1, train_repetitions=1,
                  head_sentences=96, head_repetitions=1, eval_sentences=32, eval_repetitions=1, probe_batches=2,
                  probe_head_fit_steps=100, loop_batches_per_task=2, loop_repetitions=1),
    "tiny": dict(encoder="tiny", memory_encoder="tiny", update_batch=4, update_repetitions=1,
                 memory_batch=2, train_batch=4, train_batches_per_task=1, train_repetitions=1,
                 head_sentences=8, head_repetitions=1, eval_sentences=4, eval_repetitions=1, probe_batches=2,
                 probe_head_fit_steps=4, loop_batches_per_task=1, loop_repetitions=1),
}

# The loop-overhead figure's encoder: 4 layers of width 64, where a step's arithmetic is negligible and
# its time is the loop's own work (dispatch, launches, host waits): what makes a GPU launch-bound.
LOOP_ENCODER_SHAPE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)

# Dense bf16 peak (FLOP/s) of the usual training GPUs, for the share of peak the encoder reaches.
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12,
                   "4090": 165e12, "3090": 71e12}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device):
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def interleaved(implementations, repetitions, device):
    """{name: [seconds per repetition]}: the implementations alternate, their order flipping each time."""
    times = {name: [] for name in implementations}
    names = list(implementations)
    for repetition in range(repetitions):
        for name in (names if repetition % 2 == 0 else names[::-1]):
            times[name].append(timed(implementations[name], device)[0])
            gc.collect()
    return times


def median(values):
    return statistics.median(values)


def row(figure, ours, reference, ratio, target, met, unit="", **details):
    return {"figure": figure, "ours": ours, "reference": reference, "ratio": ratio, "target": target,
            "met": met, "unit": unit, **details}


def make_run(device, output_dir, pad_token_id, bf16=False, **overrides):
    """A Run with the paradigm scripts' defaults (the paper's), as the core's Trainer and head fit take it."""
    parser = add_multi_task_arguments(add_common_arguments(argparse.ArgumentParser()))
    args = parser.parse_args(["--output_dir", output_dir, "--auxiliary_task_list", *AUXILIARY_TASKS,
                              "--main_task", MAIN_TASK])
    args.bf16, args.logging_steps = bf16, 0
    for name, value in overrides.items():
        setattr(args, name, value)
    return Run(args=args, paradigm="benchmark", main_task=MAIN_TASK, tasks=list(TASKS), device=device, data_dir=None,
               model_name_or_path=None, gradient_sampling_generator=torch.Generator().manual_seed(1),
               pad_token_id=pad_token_id)


def on_device(batch, device):
    return {name: tensor.to(device) for name, tensor in batch.items()}


@contextlib.contextmanager
def original_padding(model):
    """The core's Trainer with the original's padding: every sentence padded to 128, the encoder's own forward."""
    model.collate_batch = lambda features, pad_token_id, rows=None: collate_padded_to_max_length(features, pad_token_id)
    try:
        with reference_original.padded_forward(model):
            yield
    finally:
        del model.collate_batch  # the class's own again


# ---------------------------------------------------------------------------------------------------------
# The figures


def weight_update_speed(model, run, splits, size):
    """Gradients for 4 tasks, cosines and the step: core's update against the original's flatten-to-list.

    Both run their forward passes in the run's precision (bf16 autocast on a GPU), as training does."""
    device, pad_token_id, batch_size = run.device, run.pad_token_id, size["update_batch"]
    # Ours: the sampled batch as the update runs it (length-sorted chunks, see gradient_batch_chunks).
    batches = {task: gradient_batch_chunks(splits[task].features[:batch_size], pad_token_id, device) for task in TASKS}
    batches_128 = {task: on_device(collate_padded_to_max_length(splits[task].features[:batch_size], pad_token_id),
                                   device) for task in TASKS}
    weights = np.full(len(TASKS), 1.0 / len(TASKS))
    results = {}

    def ours():
        similarities = similarities_to_main_task(model, MAIN_TASK, TASKS, batches, run.autocast)
        results["ours"] = exponentiated_gradient_step(weights, weight_gradients(similarities), 1.0)

    def reference():
        results["reference"], results["reference_outside"] = reference_original.weight_update(
            model, batches_128, AUXILIARY_TASKS, MAIN_TASK, weights, autocast=run.autocast)

    ours()  # warm-up: the allocator, and the kernels of every chunk's shape (on a GPU, picked at first use)
    times = interleaved({"ours": ours, "reference": reference}, size["update_repetitions"], device)
    # The part of our update outside the forward/backward passes: the main gradient's zero check, three
    # cosines and the step, timed on real gradients.
    main_gradient = encoder_gradient(model, MAIN_TASK, batches[MAIN_TASK], run.autocast)
    task_gradient = encoder_gradient(model, AUXILIARY_TASKS[0], batches[AUXILIARY_TASKS[0]], run.autocast)

    def ours_outside():
        sum(torch.sum(g.float() * g.float()) for g in main_gradient).item()
        cosines = [cosine_similarity(main_gradient, task_gradient) for _ in AUXILIARY_TASKS]
        exponentiated_gradient_step(weights, [-c for c in cosines] + [-1.0], 1.0)

    outside = [timed(ours_outside, device)[0] for _ in range(3)]
    ours_time, reference_time = median(times["ours"]), median(times["reference"])
    weight_difference = float(np.max(np.abs(results["ours"] - results["reference"])))
    # No implementation can skip the passes' matrix products: at this machine's own matmul rate they
    # alone bound the ratio any implementation can reach against this reference.
    tokens = sum(len(feature.input_ids) for task in TASKS for feature in splits[task].features[:batch_size])
    matmul_flops = 6 * non_embedding_parameters(model) * tokens  # forward 2, backward 4 per parameter and token
    rate = matmul_rate(device, matmul_dtype(run))
    matmul_seconds = matmul_flops / rate
    return [
        row(f"weight update, 4 tasks x batch {batch_size} (s)", ours_time, reference_time, reference_time / ours_time,
            ">= 20x", reference_time / ours_time >= 20, "s", times=times,
            max_weight_difference=weight_difference),
        row("  of which outside the forward/backward passes (s)", median(outside), results["reference_outside"],
            results["reference_outside"] / median(outside), "(detail)", None, "s"),
        row("  ceiling: the passes' matrix products alone, at peak (s)", matmul_seconds, reference_time,
            reference_time / matmul_seconds, "(the most any code reaches here)", None, "s",
            matmul_gflop=matmul_flops / 1e9, matmul_gflops_per_second=rate / 1e9),
    ]


def non_embedding_parameters(model):
    embedding = sum(p.numel() for name, p in model.encoder.named_parameters() if "embeddings" in name)
    return sum(p.numel() for p in model.encoder_parameters()) - embedding


def matmul_dtype(run):
    return torch.bfloat16 if run.args.bf16 else torch.float16 if run.args.fp16 else torch.float32


_MATMUL_RATES = {}


def matmul_rate(device, dtype=torch.float32):
    """FLOP/s of a large matrix product in `dtype` on `device` (the best of several): the machine's peak."""
    if (device.type, dtype) not in _MATMUL_RATES:
        first = torch.randn(2048, 1024, device=device, dtype=dtype)
        second = torch.randn(1024, 1536, device=device, dtype=dtype)
        first @ second  # warm-up
        seconds = min(timed(lambda: [first @ second for _ in range(10)], device)[0] for _ in range(5)) / 10
        _MATMUL_RATES[device.type, dtype] = 2 * 2048 * 1024 * 1536 / seconds
    return _MATMUL_RATES[device.type, dtype]


def memory_figure(size, tokenizer, labels, splits, workdir, model_name_or_path=None):
    """Peak memory the update adds, each implementation in a fresh subprocess (see memory_child)."""
    batch_size = size["memory_batch"]
    spec = {"kind": size["memory_encoder"], "model_name_or_path": model_name_or_path,
            "vocab_size": len(tokenizer), "labels": labels,
            "pad_token_id": tokenizer.pad_token_id,
            "features": {task: [[f.input_ids, f.label_ids] for f in splits[task].features[:batch_size]] for task in TASKS}}
    spec_path = os.path.join(workdir, "memory_spec.json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    measured = {}
    for implementation in ("ours", "reference"):
        completed = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", spec_path, implementation],
                                   capture_output=True, text=True, cwd=ROOT)
        if completed.returncode != 0:
            raise RuntimeError(f"memory run of {implementation} failed:\n{completed.stderr[-3000:]}")
        measured[implementation] = json.loads(completed.stdout.strip().splitlines()[-1])
    parameter_size = measured["ours"]["parameter_bytes"]
    ours, reference = measured["ours"]["added_bytes"], measured["reference"]["added_bytes"]
    parameters = parameter_size / 4
    return [row(f"weight update peak memory added, {measured['ours']['encoder']} (MB)", ours / 2**20, reference / 2**20,
                reference / max(ours, 1), f"ours <= 2x params = {2 * parameter_size / 2**20:.0f} MB",
                ours <= 2 * parameter_size, "MB",
                bytes_per_parameter={"ours": ours / parameters, "reference": reference / parameters},
                parameter_bytes=parameter_size)]


def _status_bytes(field):
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # reported in kB


def _start_peak_measurement():
    """Free what Python and malloc hold, reset the kernel's peak-RSS mark; returns the RSS now."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        handle.write("5")
    return _status_bytes("VmRSS")


def _peak_since(start):
    return _status_bytes("VmHWM") - start


def memory_child(spec_path, implementation):
    """One implementation's update in a fresh process; prints the memory it adds as a JSON line.

    Both peaks are RSS high-water marks above the RSS just before: first of one plain gradient of the
    same batch (what any gradient needs, a training step too: activations and one gradient), then of the
    whole update. The difference is what the update itself holds beyond that: further gradients, model
    copies, lists.
    """
    with open(spec_path) as handle:
        spec = json.load(handle)
    model, description = build_model(spec["kind"], spec["vocab_size"], spec["labels"],
                                     model_name_or_path=spec["model_name_or_path"])
    if implementation == "reference":
        model.forward_path = "encoder"  # the original's forward, for its plain gradient too
    pad = spec["pad_token_id"]
    features = {task: [Feature(ids, labels, 0, []) for ids, labels in rows] for task, rows in spec["features"].items()}
    collate_function = collate if implementation == "ours" else collate_padded_to_max_length
    batches = {task: collate_function(task_features, pad) for task, task_features in features.items()}
    weights = np.full(len(TASKS), 1.0 / len(TASKS))
    encoder_gradient(model, MAIN_TASK, batches[MAIN_TASK])  # warm-up: allocator and kernel caches
    start = _start_peak_measurement()
    gradient = encoder_gradient(model, MAIN_TASK, batches[MAIN_TASK])
    gradient_peak = _peak_since(start)
    del gradient
    start = _start_peak_measurement()
    if implementation == "ours":
        similarities = similarities_to_main_task(model, MAIN_TASK, TASKS, batches)
        exponentiated_gradient_step(weights, weight_gradients(similarities), 1.0)
    else:
        reference_original.weight_update(model, batches, AUXILIARY_TASKS, MAIN_TASK, weights)
    update_peak = _peak_since(start)
    print(json.dumps({"added_bytes": update_peak - gradient_peak, "gradient_peak_bytes": gradient_peak,
                      "update_peak_bytes": update_peak, "parameter_bytes": parameter_bytes(model),
                      "encoder": description.split(" (")[0]}))


def training_throughput(model, run, splits, size, device):
    """Sentences/s of joint training: the core's Trainer as it runs, against padding to 128 (the original)."""
    batch_size = size["train_batch"]
    count = batch_size * size["train_batches_per_task"]
    train_splits = {task: subset(splits[task], count) for task in TASKS}
    sentences = sum(len(split) for split in train_splits.values())
    trainer = Trainer(model, run, total_steps=10**9, stage="benchmark")
    task_weights = {task: 1.0 / len(TASKS) for task in TASKS}
    warm_up = {MAIN_TASK: subset(splits[MAIN_TASK], 2)}
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.train_epoch(warm_up, {MAIN_TASK: 1.0}, 0)
    epochs = iter(range(1, 10**6))

    def ours():
        with contextlib.redirect_stderr(io.StringIO()):  # the training loop's progress bar
            trainer.train_epoch(train_splits, task_weights, next(epochs))

    def reference():
        with original_padding(model), contextlib.redirect_stderr(io.StringIO()):
            trainer.train_epoch(train_splits, task_weights, next(epochs))

    def ours_padded():  # --padded_forward: per-batch padding, the encoder's own forward
        with reference_original.padded_forward(model):
            ours()

    def ours_grouped():  # --group_by_length: batches of similar lengths
        run.args.group_by_length = True
        try:
            ours()
        finally:
            run.args.group_by_length = False

    times = interleaved({"ours": ours, "reference": reference, "ours_padded": ours_padded,
                         "ours_grouped": ours_grouped}, size["train_repetitions"], device)
    ours_rate, reference_rate = sentences / median(times["ours"]), sentences / median(times["reference"])
    padded_rate = sentences / median(times["ours_padded"])
    grouped_rate = sentences / median(times["ours_grouped"])
    rows = [row(f"training throughput, batch {batch_size} (sentences/s)", ours_rate, reference_rate,
                ours_rate / reference_rate, ">= 2.5x", ours_rate / reference_rate >= 2.5, "sent/s", times=times,
                sentences_per_repetition=sentences),
            row("  with --padded_forward (per-batch padding only)", padded_rate, reference_rate,
                padded_rate / reference_rate, "(detail)", None, "sent/s"),
            row("  with --group_by_length (sentences/s)", grouped_rate, reference_rate, grouped_rate / reference_rate,
                ">= 2.5x", grouped_rate / reference_rate >= 2.5, "sent/s")]
    rows.append(same_loss_check(model, train_splits, run.pad_token_id, device))
    rows.extend(achieved_flops(model, train_splits, {"ours": ours_rate, "reference": reference_rate}, device))
    if device.type == "cuda":
        rows.append(peak_gpu_memory(f"peak GPU memory, joint training batch {batch_size} (MB)",
                                    {"ours": ours, "reference": reference}, device))
    return rows, ours_rate, reference_rate


def dispatched_operators(function):
    """The aten operators `function` dispatches (every thread, nested ones included), by torch.profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        function()
    return sum(1 for event in profile.events() if event.name.startswith("aten::"))


def loop_overhead(run, tokenizer, labels, splits, size, device):
    """The training loop's own cost per step on a tiny encoder (LOOP_ENCODER_SHAPE): ms a step and aten
    operators dispatched a step, ours (each forward path) against the original's loop
    (reference_original.OriginalTrainingLoop, batches padded to 128 and collated before the loop)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), **LOOP_ENCODER_SHAPE), add_pooling_layer=False)
    model = MultiTaskTagger(encoder, labels).to(device)
    count = size["train_batch"] * size["loop_batches_per_task"]
    loop_splits = {task: subset(splits[task], count) for task in TASKS}
    steps = sum(-(-len(split) // size["train_batch"]) for split in loop_splits.values())
    trainer = Trainer(model, run, total_steps=10**9, stage="loop overhead")
    original = reference_original.OriginalTrainingLoop(model, run.args, total_steps=10**9)
    original_batches = reference_original.original_batches(loop_splits, size["train_batch"],
                                                           torch.Generator().manual_seed(5), run.pad_token_id)
    task_weights = {task: 1.0 / len(TASKS) for task in TASKS}
    epochs = iter(range(10**6))
    implementations = {}
    for path in FORWARD_PATHS:
        def ours(path=path):
            model.forward_path = path
            with contextlib.redirect_stderr(io.StringIO()):
                trainer.train_epoch(loop_splits, task_weights, next(epochs))
        implementations[path] = ours
    implementations["original"] = lambda: original.epoch(original_batches, device)
    for implementation in implementations.values():  # warm-up: allocator, kernels, the first bucket shapes
        implementation()
    times = interleaved(implementations, size["loop_repetitions"], device)
    ms = {name: 1000 * median(values) / steps for name, values in times.items()}
    # The operators are counted over one batch per task (the profiler's record of a long run is slow to read).
    loop_splits.update({task: subset(split, size["train_batch"]) for task, split in loop_splits.items()})
    original_batches[:] = [next(batch for batch in original_batches if batch[0] == task) for task in TASKS]
    operators = {name: dispatched_operators(implementation) / len(TASKS)
                 for name, implementation in implementations.items()}
    default = AUTO_FORWARD_PATH.get(device.type, "unpadded")
    other = next(path for path in FORWARD_PATHS if path != default)
    shape = f"{LOOP_ENCODER_SHAPE['num_hidden_layers']} layers x {LOOP_ENCODER_SHAPE['hidden_size']}"
    return [
        row(f"loop overhead: tiny encoder ({shape}), batch {size['train_batch']} (ms a step)", ms[default],
            ms["original"], ms["original"] / ms[default], "ours <= the original's", ms[default] <= ms["original"],
            "ms", forward_path=default, steps=steps, times=times, ms_per_step=ms),
        row(f"  with --forward_path {other} (ms a step)", ms[other], ms["original"], ms["original"] / ms[other],
            "(detail)", None, "ms"),
        row("  aten operators dispatched a step", operators[default], operators["original"],
            operators["original"] / operators[default], "(detail)", None, "ops", operators_per_step=operators),
        row(f"  aten operators a step with --forward_path {other}", operators[other], operators["original"],
            operators["original"] / operators[other], "(detail)", None, "ops"),
    ]


def peak_gpu_memory(figure, implementations, device):
    """The GPU memory each implementation holds at its peak (model, optimizer state and activations)."""
    peaks = {}
    for name, implementation in implementations.items():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        implementation()
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20
    return row(figure, peaks["ours"], peaks["reference"], peaks["reference"] / peaks["ours"], "(detail)", None, "MB")


def same_loss_check(model, train_splits, pad_token_id, device):
    """Padding must not change results: the loss of each batch both ways (ours: unpadded; the original's:
    padded to 128, the encoder's own forward), dropout off."""
    model.eval()
    differences, losses = [], []
    with torch.no_grad():
        for task, split in train_splits.items():
            per_batch = on_device(collate(split.features, pad_token_id), device)
            to_128 = on_device(collate_padded_to_max_length(split.features, pad_token_id), device)
            loss, _ = model(task, per_batch["input_ids"], per_batch["attention_mask"], per_batch["labels"])
            with reference_original.padded_forward(model):
                loss_128, _ = model(task, to_128["input_ids"], to_128["attention_mask"], to_128["labels"])
            losses.append((loss.item(), loss_128.item()))
            differences.append(abs(loss.item() - loss_128.item()) / max(1.0, abs(loss_128.item())))
    model.train()
    worst = max(differences)
    return row("same loss on the same batch (relative difference)", losses[0][0], losses[0][1], worst,
               "<= 1e-5", worst <= 1e-5, "loss", losses=losses)


def training_flops_per_sentence(model, train_splits):
    """The encoder's training FLOPs per sentence of `train_splits`, on real tokens only: 6 x non-embedding
    parameters x tokens, plus attention."""
    config = model.encoder.config
    non_embedding = non_embedding_parameters(model)
    lengths = [len(f.input_ids) for split in train_splits.values() for f in split.features]
    flops = sum(6 * non_embedding * n + 12 * config.num_hidden_layers * config.hidden_size * n * n for n in lengths)
    return flops / len(lengths)


def bf16_peak_flops(device):
    """The dense bf16 peak of `device` where BF16_PEAK_FLOPS knows it, else None."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((flops for key, flops in BF16_PEAK_FLOPS.items() if key in name), None)


def achieved_flops(model, train_splits, sentences_per_second, device):
    """The encoder's training FLOP/s, and its share of the device's bf16 peak where that is known.

    Model FLOPs count the real tokens only (6 x non-embedding parameters x tokens, plus attention), so
    an implementation that computes on padding gets no credit for it.
    """
    per_sentence = training_flops_per_sentence(model, train_splits)
    tflops = {name: per_sentence * rate / 1e12 for name, rate in sentences_per_second.items()}
    rows = [row("encoder achieved TFLOP/s in training (real tokens)", tflops["ours"], tflops["reference"],
                tflops["ours"] / tflops["reference"], "(detail)", None, "TFLOP/s")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = bf16_peak_flops(device)
    if peak is not None:
        rows.append(row(f"  share of the {name} dense bf16 peak (%)", 100 * tflops["ours"] * 1e12 / peak,
                        100 * tflops["reference"] * 1e12 / peak, None, "(detail)", None, "%",
                        bf16_peak_tflops=peak / 1e12))
    return rows


def subset(split, count):
    return type(split)(split.task, split.split, split.path, split.sentences, split.features[:count], split.report)


def head_fit(model, run, splits, size, device):
    """Weighted pre-training's head fit: cached frozen-encoder features against the encoder at every step."""
    split = subset(splits[MAIN_TASK], size["head_sentences"])
    times = interleaved({
        "ours": lambda: fit_head_on_frozen_encoder(model, MAIN_TASK, split, run, torch.Generator().manual_seed(3)),
        "reference": lambda: reference_original.fit_head_rerunning_encoder(
            model, MAIN_TASK, split, run, torch.Generator().manual_seed(3)),
    }, size["head_repetitions"], device)
    ours, reference = median(times["ours"]), median(times["reference"])
    return row(f"head fit on frozen encoder, {len(split)} sentences (s)", ours, reference, reference / ours,
               ">= 5x", reference / ours >= 5, "s", times=times)


def tawt_overhead(update_row, ours_rate, reference_rate, reference_update_time):
    """One weight update as a share of one epoch of joint training at the paper's sizes."""
    ours_epoch, reference_epoch = PAPER_EPOCH_SENTENCES / ours_rate, PAPER_EPOCH_SENTENCES / reference_rate
    ours_share = update_row["ours"] / ours_epoch
    reference_share = reference_update_time / reference_epoch
    return row(f"TAWT overhead: update / epoch of {PAPER_EPOCH_SENTENCES} sentences (%)", 100 * ours_share,
               100 * reference_share, ours_share / reference_share if reference_share else None, "ours <= 5 %",
               ours_share <= 0.05, "%", estimated_epoch_seconds={"ours": ours_epoch, "reference": reference_epoch})


def tawt_overhead_within_epochs(update_row, ours_rate, reference_rate, reference_update_time, train_batch):
    """One weight update as a share of the training between two updates at --weight_update_steps 100."""
    steps = WEIGHT_UPDATE_STEPS
    ours_share = update_row["ours"] / (steps * train_batch / ours_rate)
    reference_share = reference_update_time / (steps * train_batch / reference_rate)
    return row(f"TAWT overhead at --weight_update_steps {steps}: update / {steps} steps (%)", 100 * ours_share,
               100 * reference_share, ours_share / reference_share if reference_share else None, "(detail)", None,
               "%")


def affinity_probe_time(model, run, splits, size):
    """testing/task_affinity.py's work for the main task and three candidates: four head fits and M rounds
    of sampled batches. The original has no such tool: no reference."""
    probe_splits = {task: subset(splits[task], size["head_sentences"]) for task in (MAIN_TASK, *AUXILIARY_TASKS)}
    probe_run = make_run(run.device, run.args.output_dir, run.pad_token_id, bf16=run.args.bf16,
                         learning_rate=1e-2, head_fit_steps=size["probe_head_fit_steps"],
                         gradient_sampling_batch_size=size["update_batch"],
                         gradient_sampling_batches=size["probe_batches"])
    seconds, _ = timed(lambda: task_affinity.affinities(model, probe_run, probe_splits, [MAIN_TASK]), run.device)
    return row(f"task-affinity probe: {len(probe_splits)} heads on {size['head_sentences']} sentences, "
               f"{size['probe_batches']} x {len(probe_splits)} batches of {size['update_batch']} (s)", seconds, None,
               None, "(no reference: the original has none)", None, "s")


def evaluation_scaling(model, run, tokenizer, workload, size):
    """evaluation.predict on N and 4N sentences against the original's np.append loop (in the run's precision)."""
    device, pad_token_id, count = run.device, run.pad_token_id, size["eval_sentences"]
    test = workload.sentences[MAIN_TASK][-4 * count:]
    splits = {scale: task_split(MAIN_TASK, test[: scale * count], tokenizer, workload.labels[MAIN_TASK], "test")
              for scale in (1, 4)}
    batch_size = 64
    implementations = {}

    def reference(split):
        with run.autocast():
            return reference_original.predict_with_np_append(model, MAIN_TASK, split, batch_size, device, pad_token_id)

    for scale, split in splits.items():
        implementations[f"ours_{scale}"] = lambda split=split: predict(
            model, MAIN_TASK, split, batch_size, device, pad_token_id, run.autocast)
        implementations[f"reference_{scale}"] = lambda split=split: reference(split)
    ours_predictions, _ = predict(model, MAIN_TASK, splits[1], batch_size, device, pad_token_id, run.autocast)
    reference_predictions, _ = reference(splits[1])
    times = interleaved(implementations, size["eval_repetitions"], device)
    m = {name: median(values) for name, values in times.items()}
    ours_scaling, reference_scaling = m["ours_4"] / m["ours_1"], m["reference_4"] / m["reference_1"]
    return [
        row(f"evaluation time, {4 * count} / {count} sentences (x)", ours_scaling, reference_scaling, None,
            "ours <= 4.4 (linear)", ours_scaling <= 4.4, "x", seconds=m,
            same_predictions=ours_predictions == reference_predictions),
        row(f"evaluation time on {4 * count} sentences (s)", m["ours_4"], m["reference_4"],
            m["reference_4"] / m["ours_4"], "(detail)", None, "s"),
    ]


# ---------------------------------------------------------------------------------------------------------
# The run


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)}; host {text}"
    return text


def run_suite(device, size, workload, tokenizer, workdir, model_name_or_path=None, report=None, host_memory=True):
    """Every figure on `device`, each printed as soon as it is measured; `report(suite)` (when given) is
    called with the suite so far after each, so an interrupted run still leaves what it measured.
    `host_memory`: measure the memory the update adds on the CPU (two subprocesses)."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    model, description = build_model(size["encoder"], len(tokenizer), workload.labels,
                                     model_name_or_path=model_name_or_path)
    model.to(device)
    splits = {task: task_split(task, sentences, tokenizer, workload.labels[task])
              for task, sentences in workload.sentences.items()}
    pad = tokenizer.pad_token_id
    run = make_run(device, workdir, pad, bf16=bf16, per_gpu_train_batch_size=size["train_batch"])
    print(f"[{device.type}] encoder: {description}; data: {workload.source}; bf16: {bf16}", flush=True)
    suite = {"device": str(device), "machine": machine_description(device), "encoder": description,
             "data": workload.source, "bf16": bf16, "rows": []}
    rates = {}

    def throughput():
        rows, rates["ours"], rates["reference"] = training_throughput(model, run, splits, size, device)
        return rows

    def update_row():
        return next(entry for entry in suite["rows"] if entry["figure"].startswith("weight update"))

    figures = [
        ("weight update", lambda: weight_update_speed(model, run, splits, size)),
        ("memory", lambda: memory_figure(size, tokenizer, workload.labels, splits, workdir, model_name_or_path)
         if device.type == "cpu" and host_memory else []),  # on a GPU: the peak GPU memory rows instead
        ("training throughput", throughput),
        ("loop overhead", lambda: loop_overhead(run, tokenizer, workload.labels, splits, size, device)),
        ("TAWT overhead", lambda: [tawt_overhead(update_row(), rates["ours"], rates["reference"],
                                                 update_row()["reference"]),
                                   tawt_overhead_within_epochs(update_row(), rates["ours"], rates["reference"],
                                                               update_row()["reference"], size["train_batch"])]),
        ("head fit", lambda: [head_fit(model, run, splits, size, device)]),
        ("task-affinity probe", lambda: [affinity_probe_time(model, run, splits, size)]),
        ("evaluation", lambda: evaluation_scaling(model, run, tokenizer, workload, size)),
    ]
    for name, measure in figures:
        print(f"[{device.type}] measuring: {name}", flush=True)
        for entry in measure():
            suite["rows"].append(entry)
            print(f"[{device.type}] {format_row(entry)}", flush=True)
        if report is not None:
            report(suite)
    return suite


def sentences_needed(size):
    """Training sentences per task that the figures of `size` draw on."""
    return max(size["update_batch"], size["memory_batch"], size["train_batch"] * size["train_batches_per_task"],
               size["head_sentences"]) + 4 * size["eval_sentences"]


def write_results(path, payload):
    write_json_atomic(path, json.loads(json.dumps(payload, default=str)))


def format_value(value, unit):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if unit == "loss":
        return f"{value:.6f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def print_table(suite):
    print("\n" + table_text(suite), end="")


def table_text(suite):
    header = f"{'figure':<62} {'ours':>10} {'reference':>10} {'ratio':>9}  {'target':<32} met"
    lines = [f"{suite['device']}: {suite['machine']}", f"encoder: {suite['encoder']}", f"data: {suite['data']}",
             header, "-" * len(header)]
    return "\n".join(lines + [format_row(entry) for entry in suite["rows"]]) + "\n"


def format_row(entry):
    ratio = entry["ratio"]
    ratio_text = "-" if ratio is None else (f"{ratio:.1e}" if entry["unit"] == "loss" else f"{ratio:.1f}x")
    met = {True: "yes", False: "NO", None: ""}[entry["met"]]
    return (f"{entry['figure']:<62} {format_value(entry['ours'], entry['unit']):>10} "
            f"{format_value(entry['reference'], entry['unit']):>10} {ratio_text:>9}  {entry['target']:<32} {met}")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller batches and one repetition")
    parser.add_argument("--tiny", action="store_true", help="a tiny random encoder (the smoke test's size)")
    parser.add_argument("--data_dir", default=None,
                        help="a data directory with train_{pos,chunking,predicate,ner}.txt and their labels files; "
                             "default: the embedded default data")
    parser.add_argument("--model_name_or_path", default=None,
                        help="the encoder and tokenizer to measure (with --random_bert_base, only its tokenizer "
                             "files are needed); default: the MiniLM encoder of the embedded default")
    parser.add_argument("--random_bert_base", action="store_true",
                        help="measure a randomly initialised BERT-base (12 layers, 768 hidden) built here on the "
                             "tokenizer's vocabulary, instead of the encoder's weights")
    parser.add_argument("--output", default=None,
                        help="JSON file for the results; default benchmarks/results-<host>.json")
    parser.add_argument("--no_cuda", action="store_true", help="measure on the CPU only, even with a GPU present")
    parser.add_argument("--memory-child", nargs=2, metavar=("WORKLOAD", "IMPLEMENTATION"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_arguments(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return None
    import transformers

    transformers.logging.set_verbosity_error()
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    size = SIZES[preset]
    if args.random_bert_base:
        size = dict(size, encoder="bert-base", memory_encoder="bert-base")
    started = time.perf_counter()
    workload = load_workload(sentences_needed(size), data_dir=args.data_dir)
    tokenizer = load_tokenizer(workload, args.model_name_or_path)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    suites = []
    with tempfile.TemporaryDirectory(prefix="tawt-benchmarks-") as workdir:
        for device in devices:
            suites.append(run_suite(device, size, workload, tokenizer, workdir, args.model_name_or_path))
    elapsed = time.perf_counter() - started
    for suite in suites:
        print_table(suite)
    command = shlex.join(["python", "benchmarks/run_benchmarks.py", *argv])
    print(f"\n{command}: {elapsed / 60:.1f} minutes")
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         f"results-{socket.gethostname()}.json")
    write_results(output, {"command": command, "preset": preset, "sizes": size, "seconds": elapsed, "suites": suites})
    print(f"results written to {output}")
    return suites


if __name__ == "__main__":
    main()
