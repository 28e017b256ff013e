"""The multi-task tagger: one pretrained encoder shared by all tasks, dropout, one linear head per task.

Any Hugging Face encoder that `AutoModel` loads works (BERT, RoBERTa, MiniLM, ...). A batch holds the
sentences of one task and goes through that task's head, addressed by the task's name.

A saved model is a directory with the encoder (`config.json` + weights, as `save_pretrained` writes
them), the tokenizer, `task_heads.safetensors` and `task_heads.json` (task names, label lists, dropout):
`MultiTaskTagger.from_pretrained(directory)` gives it back exactly.
"""

import contextlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from utils_cross_task import IGNORED_LABEL_ID

HEADS_WEIGHTS = "task_heads.safetensors"
HEADS_CONFIG = "task_heads.json"


def load_encoder(model_name_or_path):
    """The pretrained encoder, without a pooling layer where the architecture has one.

    Tagging reads per-token states only; a pooler would get no gradient (a DDP error, and dead weight in
    the TAWT cosines), so it is left out when the model class lets us.
    """
    config = AutoConfig.from_pretrained(model_name_or_path)
    try:
        return AutoModel.from_pretrained(model_name_or_path, config=config, add_pooling_layer=False)
    except TypeError:  # the architecture has no pooler option
        return AutoModel.from_pretrained(model_name_or_path, config=config)


class MultiTaskTagger(nn.Module):
    def __init__(self, encoder, task_labels, dropout=None):
        """`task_labels` maps each task name to its label list (the head's output order)."""
        super().__init__()
        self.encoder = encoder
        if dropout is None:
            dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.dropout_probability = float(dropout)
        self.dropout = nn.Dropout(self.dropout_probability)
        self.task_labels = {task: list(labels) for task, labels in task_labels.items()}
        # ModuleDict keys cannot hold '.', and task names are free strings: heads are keyed by position.
        self.task_names = list(self.task_labels)
        hidden_size = encoder.config.hidden_size
        self.heads = nn.ModuleList(nn.Linear(hidden_size, len(labels)) for labels in self.task_labels.values())
        for head in self.heads:
            head.weight.data.normal_(mean=0.0, std=getattr(encoder.config, "initializer_range", 0.02))
            head.bias.data.zero_()

    @classmethod
    def from_encoder(cls, model_name_or_path, task_labels, dropout=None):
        return cls(load_encoder(model_name_or_path), task_labels, dropout)

    def head(self, task):
        try:
            return self.heads[self.task_names.index(task)]
        except ValueError:
            raise KeyError(f"the model has no head for task {task!r}; it has {self.task_names}") from None

    def encoder_parameters(self):
        """The shared encoder's trainable parameters: what TAWT compares tasks on."""
        return [parameter for parameter in self.encoder.parameters() if parameter.requires_grad]

    def encode(self, input_ids, attention_mask):
        """Per-token encoder states, before dropout."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def classify(self, task, hidden_states, labels=None):
        """Logits (and the mean loss over labelled tokens) of `task`'s head on encoder states."""
        logits = self.head(task)(self.dropout(hidden_states))
        if labels is None:
            return None, logits
        return token_classification_loss(logits, labels), logits

    def forward(self, task, input_ids, attention_mask, labels=None):
        return self.classify(task, self.encode(input_ids, attention_mask), labels)

    def save_pretrained(self, directory, tokenizer=None):
        os.makedirs(directory, exist_ok=True)
        self.encoder.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        head_tensors = {}
        for index, head in enumerate(self.heads):
            head_tensors[f"{index}.weight"] = head.weight.detach().cpu().contiguous()
            head_tensors[f"{index}.bias"] = head.bias.detach().cpu().contiguous()
        save_file(head_tensors, os.path.join(directory, HEADS_WEIGHTS))
        with open(os.path.join(directory, HEADS_CONFIG), "w") as handle:
            json.dump(
                {"task_names": self.task_names, "task_labels": self.task_labels, "dropout": self.dropout_probability},
                handle, indent=2,
            )

    @classmethod
    def from_pretrained(cls, directory):
        with open(os.path.join(directory, HEADS_CONFIG)) as handle:
            heads_config = json.load(handle)
        task_labels = {task: heads_config["task_labels"][task] for task in heads_config["task_names"]}
        model = cls(AutoModel.from_pretrained(directory), task_labels, heads_config["dropout"])
        head_tensors = load_file(os.path.join(directory, HEADS_WEIGHTS))
        with torch.no_grad():
            for index, head in enumerate(model.heads):
                head.weight.copy_(head_tensors[f"{index}.weight"])
                head.bias.copy_(head_tensors[f"{index}.bias"])
        return model


def token_classification_loss(logits, labels, reduction="mean"):
    """Cross-entropy over the labelled positions (label != IGNORED_LABEL_ID): their mean, or their sum.

    A batch without any labelled position gives a loss of 0 that still depends on the logits (so backward
    works) instead of the NaN that a mean over nothing would be.
    """
    flat_logits = logits.reshape(-1, logits.size(-1)).float()
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORED_LABEL_ID).any()):
        return flat_logits.sum() * 0.0
    return nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORED_LABEL_ID, reduction=reduction)


@contextlib.contextmanager
def dropout_off(model):
    """Run a block in eval mode (no dropout), then put the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
