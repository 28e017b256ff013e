"""Train a multi-task token-classification model with TAWT in a standard Hugging Face Trainer.

    python examples/hf_trainer_tawt.py --model_name_or_path bert-base-cased --data_dir data/ontonotes \
        --main_task ner --auxiliary_task_list pos chunking predicate --output_dir runs/hf_ner --max_steps 2000

The data directory is in this project's format ({train,dev}_{task}.txt, {task}_labels.txt). The model is
a plain nn.Module (an encoder and one linear head per task, defined below): any model whose forward takes
the batch's `task` and returns its loss works the same way. Every TrainingArguments flag applies
(--bf16, --report_to tensorboard, --save_steps, --resume_from_checkpoint, ...); under
`torchrun --nproc_per_node N` the Trainer runs DistributedDataParallel itself. The output directory gets
the model, task_labels.json, task_weights.json (the weights at the start and after every update) and
eval_results.json (each task's dev metrics).
"""

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from torch import nn
from transformers import AutoModel, AutoTokenizer, DataCollatorForTokenClassification, HfArgumentParser, set_seed
from transformers import TrainingArguments

from tawt.errors import TaskDataError
from tawt.sequence_metrics import compute_metrics
from tawt import TAWT, MultiTaskDataset, TAWTTrainer
from utils_cross_task import IGNORED_LABEL_ID, load_task_split, read_labels


@dataclass
class TAWTArguments:
    model_name_or_path: str = field(metadata={"help": "the pretrained encoder (a hub name or a local directory)"})
    data_dir: str = field(metadata={"help": "{train,dev}_{task}.txt and {task}_labels.txt of every task"})
    main_task: str = field(metadata={"help": "the target task"})
    auxiliary_task_list: list[str] = field(metadata={"help": "the source tasks"})
    main_task_train_sent_num: int = field(default=100, metadata={"help": "the main task's first N training sentences"})
    max_seq_length: int = field(default=128, metadata={"help": "sub-tokens per training sentence (longer are cut)"})
    weight_lr: float = field(default=1.0, metadata={"help": "the weight update's step size"})
    inv_constant: float = field(default=None, metadata={
        "help": "scale the step by this instead of using normalised gradients (the paper's weighted pre-training)"})
    weight_update_steps: int = field(default=0, metadata={
        "help": "also update the weights every N optimizer steps (0: after each epoch only)"})
    gradient_sampling_batch_size: int = field(default=64, metadata={"help": "sentences per sampled batch"})
    gradient_sampling_batches: int = field(default=1, metadata={"help": "sampled batches per task and update"})


class MultiTaskTokenClassifier(nn.Module):
    """A shared encoder, dropout, and one linear head per task (heads in the order of `task_labels`)."""

    def __init__(self, model_name_or_path, task_labels):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(model_name_or_path, add_pooling_layer=False)
        self.dropout = nn.Dropout(self.encoder.config.hidden_dropout_prob)
        self.heads = nn.ModuleList(nn.Linear(self.encoder.config.hidden_size, len(labels))
                                   for labels in task_labels.values())

    def forward(self, input_ids, attention_mask=None, labels=None, task=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.heads[int(task[0])](self.dropout(hidden))
        outputs = {"logits": logits}
        if labels is not None:
            outputs["loss"] = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                          ignore_index=IGNORED_LABEL_ID)
        return outputs


def as_examples(split):
    return [{"input_ids": feature.input_ids, "labels": feature.label_ids} for feature in split.features]


def labelled_sequences(label_ids, label_rows, labels):
    """The labels at the labelled positions of each row (-100 elsewhere), as label names."""
    return [[labels[label] for label, gold in zip(row, gold_row) if gold != IGNORED_LABEL_ID]
            for row, gold_row in zip(label_ids, label_rows)]


def main():
    parser = HfArgumentParser((TAWTArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    tasks = list(dict.fromkeys(args.auxiliary_task_list + [args.main_task]))  # the main task last, as in the paper
    set_seed(training_args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    try:
        task_labels = {task: read_labels(args.data_dir, task) for task in tasks}
        train = {task: load_task_split(args.data_dir, task, "train", tokenizer, task_labels[task], args.max_seq_length,
                                       args.main_task_train_sent_num if task == args.main_task else None)
                 for task in tasks}
        dev = {task: load_task_split(args.data_dir, task, "dev", tokenizer, task_labels[task], args.max_seq_length)
               for task in tasks}
    except TaskDataError as error:
        sys.exit(f"error: {error}")

    model = MultiTaskTokenClassifier(args.model_name_or_path, task_labels)
    weighting = TAWT(tasks, args.main_task, model.encoder.parameters(), weight_lr=args.weight_lr,
                     inv_constant=args.inv_constant, gradient_sampling_batch_size=args.gradient_sampling_batch_size,
                     gradient_sampling_batches=args.gradient_sampling_batches, seed=training_args.seed)
    trainer = TAWTTrainer(
        model=model, args=training_args, processing_class=tokenizer,
        train_dataset=MultiTaskDataset({task: as_examples(train[task]) for task in tasks}),
        data_collator=DataCollatorForTokenClassification(tokenizer), weighting=weighting,
        weight_update_steps=args.weight_update_steps,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()

    metrics = {}
    for task in tasks:
        prediction = trainer.predict(MultiTaskDataset({task: as_examples(dev[task])}, tasks),
                                     metric_key_prefix=f"dev_{task}")
        gold_ids = prediction.label_ids
        predicted_ids = np.argmax(prediction.predictions, axis=-1)
        gold = labelled_sequences(gold_ids, gold_ids, task_labels[task])
        predicted = labelled_sequences(predicted_ids, gold_ids, task_labels[task])
        metrics.update({f"dev_{task}_{name}": value for name, value in
                        compute_metrics(task, task_labels[task], gold, predicted).items()})
    trainer.save_metrics("eval", metrics, combined=False)
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "task_labels.json"), "w") as handle:
            json.dump(task_labels, handle, indent=2)
        print(json.dumps({"task_weights": weighting.weights, **metrics}, indent=2))


if __name__ == "__main__":
    main()
