"""The multi-task tagger: one pretrained encoder shared by all tasks, dropout, one linear head per task.

Any Hugging Face encoder that `AutoModel` loads works (BERT, RoBERTa, MiniLM, ...). A batch holds the
sentences of one task and goes through that task's head, addressed by the task's name.

A sentence-level task (one label per example, see utils_cross_task) has a head of the same kind on one
state per example: the encoder's first-token state, or the mean of its token states (`sentence_pooling`).

A saved model is a directory with the encoder (`config.json` + weights, as `save_pretrained` writes
them), the tokenizer, `task_heads.safetensors` and `task_heads.json` (task names, label lists, dropout,
the sentence-level tasks and their pooling): `MultiTaskTagger.from_pretrained(directory)` gives it back
exactly.
"""

import contextlib
import json
import logging
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from tawt.run_arguments import FORWARD_PATHS, SENTENCE_POOLINGS  # the flags' choices, kept where --help reads them
from utils_cross_task import IGNORED_LABEL_ID, collate

HEADS_WEIGHTS = "task_heads.safetensors"
HEADS_CONFIG = "task_heads.json"

logger = logging.getLogger(__name__)

# Weights are trained in float32 whatever the checkpoint stores (transformers 5 would otherwise keep a
# float16/bfloat16 checkpoint in that type): mixed precision is autocast's job (--bf16/--fp16).
MASTER_DTYPE = torch.float32

# Bucketed batches are padded to a multiple of this many positions (tensor-core tiles of bf16 are 8 or
# 16 wide) and to the full batch size, so that few distinct shapes occur: at --max_seq_length 128 an
# epoch sees at most 8, which a compiled forward (and a CUDA graph) is made for once each.
BUCKET_POSITIONS = 16


def read_heads_config(directory):
    """The task_heads.json of a model saved by a run: its task names, label lists and dropout."""
    with open(os.path.join(directory, HEADS_CONFIG)) as handle:
        return json.load(handle)


def saved_task_labels(heads_config):
    """{task: its head's labels, in the head's output order} of a saved model's task_heads.json."""
    return {task: heads_config["task_labels"][task] for task in heads_config["task_names"]}


def load_encoder(model_name_or_path):
    """The pretrained encoder, without a pooling layer where the architecture has one.

    Tagging reads per-token states only; a pooler would get no gradient (a DDP error, and dead weight in
    the TAWT cosines), so it is left out when the model class lets us.
    """
    config = AutoConfig.from_pretrained(model_name_or_path)
    try:
        return AutoModel.from_pretrained(model_name_or_path, config=config, add_pooling_layer=False,
                                         dtype=MASTER_DTYPE)
    except TypeError:  # the architecture has no pooler option
        return AutoModel.from_pretrained(model_name_or_path, config=config, dtype=MASTER_DTYPE)


class MultiTaskTagger(nn.Module):
    def __init__(self, encoder, task_labels, dropout=None, unpadded=True, forward_path="unpadded", sentence_tasks=(),
                 sentence_pooling="first"):
        """`task_labels` maps each task name to its label list (the head's output order).

        `forward_path` says how BERT-family encoders run (both use the encoder's own modules and weights
        and give its results at every real token): "unpadded", on the real tokens only (see
        `unpadded_encoder_states`; the fastest on a CPU), or "bucketed", on batches padded to bucketed
        shapes with SDPA attention (see `bucketed_encoder_states`; few, large kernels and few distinct
        shapes: what a GPU and a compiled forward want). Encoders of another shape, and `unpadded=False`,
        use the encoder's own padded forward ("encoder").

        `sentence_tasks` names the tasks whose head reads one pooled state per example (`sentence_pooling`).
        """
        super().__init__()
        if forward_path not in FORWARD_PATHS:
            raise ValueError(f"forward_path {forward_path!r}: use one of {FORWARD_PATHS}")
        if sentence_pooling not in SENTENCE_POOLINGS:
            raise ValueError(f"sentence_pooling {sentence_pooling!r}: use one of {SENTENCE_POOLINGS}")
        unknown = sorted(set(sentence_tasks) - set(task_labels))
        if unknown:
            raise ValueError(f"sentence-level tasks {unknown} have no label list")
        self.encoder = encoder
        own_layers = bool(unpadded) and supports_unpadded_forward(encoder)
        self.forward_path = forward_path if own_layers else "encoder"
        self.compiled_states = None  # set by `compile_encoder`
        if dropout is None:
            dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.dropout_probability = float(dropout)
        self.dropout = nn.Dropout(self.dropout_probability)
        self.task_labels = {task: list(labels) for task, labels in task_labels.items()}
        # ModuleDict keys cannot hold '.', and task names are free strings: heads are keyed by position.
        self.task_names = list(self.task_labels)
        self.sentence_tasks = [task for task in self.task_names if task in set(sentence_tasks)]
        self.sentence_pooling = sentence_pooling
        hidden_size = encoder.config.hidden_size
        self.heads = nn.ModuleList(nn.Linear(hidden_size, len(labels)) for labels in self.task_labels.values())
        for head in self.heads:
            head.weight.data.normal_(mean=0.0, std=getattr(encoder.config, "initializer_range", 0.02))
            head.bias.data.zero_()

    @property
    def unpadded(self):
        """Whether the encoder runs on the real tokens only (the "unpadded" path)."""
        return self.forward_path == "unpadded"

    @unpadded.setter
    def unpadded(self, value):
        self.forward_path = "unpadded" if value else "encoder"

    @classmethod
    def from_encoder(cls, model_name_or_path, task_labels, dropout=None, unpadded=True, forward_path="unpadded",
                     sentence_tasks=(), sentence_pooling="first"):
        return cls(load_encoder(model_name_or_path), task_labels, dropout, unpadded, forward_path, sentence_tasks,
                   sentence_pooling)

    def head(self, task):
        try:
            return self.heads[self.task_names.index(task)]
        except ValueError:
            raise KeyError(f"the model has no head for task {task!r}; it has {self.task_names}") from None

    @contextlib.contextmanager
    def replaced_heads(self, heads):
        """Run a block with some tasks' heads replaced ({task: head}), then put the model's own back.

        Weighted pre-training takes its TAWT gradients through a throw-away copy of the main task's head,
        fitted for the occasion, without touching the head that fine-tuning starts from.
        """
        own = {task: self.head(task) for task in heads}
        for task, head in heads.items():
            self.heads[self.task_names.index(task)] = head
        try:
            yield self
        finally:
            for task, head in own.items():
                self.heads[self.task_names.index(task)] = head

    def encoder_parameters(self):
        """The shared encoder's trainable parameters: what TAWT compares tasks on."""
        return [parameter for parameter in self.encoder.parameters() if parameter.requires_grad]

    def compile_encoder(self, mode=None):
        """Compile the encoder's forward (and its backward) with torch.compile (inductor; `mode` as
        torch.compile takes it: "reduce-overhead" adds CUDA graphs on a GPU). The heads and the loss stay
        eager: they are a few operations, and one graph then serves every task. The length is compiled as a
        dynamic dimension (one graph for every bucket); a batch dimension that changes (the TAWT update's
        batches) becomes dynamic at its first change (torch.compile's automatic dynamic shapes), so a run
        compiles a bounded number of graphs: one for training, one for evaluation, a few for the update.
        """
        self.compiled_states = torch.compile(self._encoder_states, mode=mode)
        return self

    def _encoder_states(self, input_ids, attention_mask, token_index=None, token_type_ids=None):
        if self.forward_path == "unpadded":
            return unpadded_encoder_states(self.encoder, input_ids, attention_mask, token_index, token_type_ids)
        if self.forward_path == "bucketed":
            return bucketed_encoder_states(self.encoder, input_ids, attention_mask, token_type_ids)
        # Passed only when given: some encoders (DistilBERT) take no token types.
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **segments).last_hidden_state

    def encode(self, input_ids, attention_mask, token_index=None, token_type_ids=None):
        """Per-token encoder states, before dropout (zeros at padded positions on the unpadded path).

        `token_index`: the positions of the real tokens in the flattened batch (`collate_batch` gives it;
        computed here when missing, which on a GPU waits for the device). `token_type_ids`: the segment of
        each position (sentence-level pairs); None: the encoder's default (all the first segment)."""
        if self.compiled_states is None:
            return self._encoder_states(input_ids, attention_mask, token_index, token_type_ids)
        # The length varies from batch to batch: one graph for all lengths rather than one per bucket.
        for tensor in (input_ids, attention_mask, token_type_ids):
            if tensor is not None:
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
        return self.compiled_states(input_ids, attention_mask, token_index, token_type_ids)

    def collate_batch(self, features, pad_token_id, rows=None):
        """A batch as this model's forward path wants it, on the host (see `collate`).

        Bucketed: padded to a multiple of BUCKET_POSITIONS positions (at most the encoder's position
        limit) and, with `rows`, to that many rows. Unpadded: padded to the longest feature, with the
        real tokens' positions (`token_index`) found here rather than on the device.
        """
        if self.forward_path == "bucketed":
            limit = getattr(self.encoder.config, "max_position_embeddings", None)
            return collate(features, pad_token_id, pad_to_multiple_of=BUCKET_POSITIONS, max_length=limit, rows=rows)
        batch = collate(features, pad_token_id)
        if self.forward_path == "unpadded":
            batch["token_index"] = batch["attention_mask"].reshape(-1).nonzero().squeeze(1)
        return batch

    def task_states(self, task, hidden_states, attention_mask=None):
        """The states `task`'s head reads: every token's ([batch, length, hidden]), or for a sentence-level
        task one pooled state per example ([batch, 1, hidden]), so its logits line up with its [batch, 1]
        labels and no token's logits are computed."""
        if task not in self.sentence_tasks:
            return hidden_states
        if self.sentence_pooling == "first":
            return hidden_states[:, :1]
        # Padded positions hold zeros on the unpadded path but real values on the others: masked out.
        mask = attention_mask[:, :, None].to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)

    def classify(self, task, hidden_states, labels=None, attention_mask=None):
        """Logits (and the mean loss over labelled tokens, or examples) of `task`'s head on encoder states."""
        logits = self.head(task)(self.dropout(self.task_states(task, hidden_states, attention_mask)))
        if labels is None:
            return None, logits
        return token_classification_loss(logits, labels), logits

    def forward(self, task, input_ids, attention_mask, labels=None, token_index=None, token_type_ids=None):
        hidden_states = self.encode(input_ids, attention_mask, token_index, token_type_ids)
        return self.classify(task, hidden_states, labels, attention_mask)

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
                {"task_names": self.task_names, "task_labels": self.task_labels, "dropout": self.dropout_probability,
                 "sentence_tasks": self.sentence_tasks, "sentence_pooling": self.sentence_pooling},
                handle, indent=2,
            )

    @classmethod
    def from_pretrained(cls, directory, unpadded=True, forward_path="unpadded"):
        heads_config = read_heads_config(directory)
        task_labels = saved_task_labels(heads_config)
        # A model saved before sentence-level tasks existed has none.
        model = cls(AutoModel.from_pretrained(directory, dtype=MASTER_DTYPE), task_labels, heads_config["dropout"],
                    unpadded, forward_path, heads_config.get("sentence_tasks", ()),
                    heads_config.get("sentence_pooling", "first"))
        head_tensors = load_file(os.path.join(directory, HEADS_WEIGHTS))
        with torch.no_grad():
            for index, head in enumerate(model.heads):
                head.weight.copy_(head_tensors[f"{index}.weight"])
                head.bias.copy_(head_tensors[f"{index}.bias"])
        return model


# ---------------------------------------------------------------------------------------------------------
# The unpadded encoder forward
#
# A batch of random Brown sentences padded to its longest member is about half padding, and a padded
# forward spends its matrix products on it. Only self-attention mixes positions; every other part of a
# BERT layer (the projections, the feed-forward, layer norms, dropout) works token by token. So the real
# tokens are gathered into one [tokens, hidden] matrix for those parts, and are laid out padded only for
# the attention itself, the small part of the compute at these lengths. The encoder's own modules and
# weights do all the work: only their order is spelled out here. The result equals the padded forward at
# every real token (checked once per encoder when the model is built); padded positions come out as 0,
# and nothing reads them (their label is IGNORED_LABEL_ID).


def _scatter_rows(rows, index, total_rows):
    """`rows` put at positions `index` of a [total_rows, ...] zero tensor (differentiable)."""
    return rows.new_zeros((total_rows,) + rows.shape[1:]).index_copy(0, index, rows)


def _self_attention(self_attention, padded_heads, attend):
    """SDPA over [batch, heads, length, head size] queries, keys and values from `padded_heads(projection)`."""
    head_size = self_attention.attention_head_size
    return nn.functional.scaled_dot_product_attention(
        padded_heads(self_attention.query), padded_heads(self_attention.key), padded_heads(self_attention.value),
        attn_mask=attend, dropout_p=self_attention.dropout.p if self_attention.training else 0.0,
        scale=getattr(self_attention, "scaling", head_size ** -0.5),
    )


def unpadded_encoder_states(encoder, input_ids, attention_mask, token_index=None, token_type_ids=None):
    """Last hidden states of a BERT-family encoder computed on the real tokens only ([batch, length, hidden]).

    `token_index` (the real tokens' positions in the flattened batch) is computed from the mask when not
    given; on a GPU that makes the host wait for the device (the number of tokens decides a shape).
    """
    batch_size, length = input_ids.shape
    # positions and token types as the encoder does them
    embeddings = encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    hidden_size = embeddings.shape[-1]
    if token_index is None:
        token_index = attention_mask.reshape(-1).nonzero().squeeze(1)
    hidden = embeddings.reshape(-1, hidden_size).index_select(0, token_index)  # [tokens, hidden]
    attend = attention_mask.bool()[:, None, None, :]  # keys that may be attended to
    for layer in encoder.encoder.layer:
        head_size = layer.attention.self.attention_head_size

        def padded_heads(projection):
            rows = _scatter_rows(projection(hidden), token_index, batch_size * length)
            return rows.view(batch_size, length, -1, head_size).transpose(1, 2)

        context = _self_attention(layer.attention.self, padded_heads, attend)
        context = context.transpose(1, 2).reshape(batch_size * length, -1).index_select(0, token_index)
        attention_output = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(attention_output), attention_output)
    return _scatter_rows(hidden, token_index, batch_size * length).view(batch_size, length, hidden_size)


def bucketed_encoder_states(encoder, input_ids, attention_mask, token_type_ids=None):
    """Last hidden states of a BERT-family encoder computed on every position of the padded batch.

    The same modules in the same order as `unpadded_encoder_states`, on [batch, length, hidden] tensors:
    no gathers, and nothing whose size depends on the data, so the host never waits for the device and
    a compiled graph serves every batch of a shape. Padded positions get states that nothing reads.
    """
    batch_size, length = input_ids.shape
    hidden = encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    attend = attention_mask.bool()[:, None, None, :]
    for layer in encoder.encoder.layer:
        head_size = layer.attention.self.attention_head_size

        def padded_heads(projection):
            return projection(hidden).view(batch_size, length, -1, head_size).transpose(1, 2)

        context = _self_attention(layer.attention.self, padded_heads, attend)
        attention_output = layer.attention.output(context.transpose(1, 2).reshape(batch_size, length, -1), hidden)
        hidden = layer.output(layer.intermediate(attention_output), attention_output)
    return hidden


def supports_unpadded_forward(encoder):
    """Whether `unpadded_encoder_states` and `bucketed_encoder_states` reproduce `encoder`'s own forward
    (checked on a small batch).

    The check is numerical rather than structural: an encoder of another shape fails it (a missing
    module raises, a causal mask or relative positions give other states), whatever its class.
    """
    config = encoder.config
    generator = torch.Generator().manual_seed(0)
    device = next(encoder.parameters()).device
    input_ids = torch.randint(0, config.vocab_size, (2, 7), generator=generator).to(device)
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], device=device)
    if getattr(config, "pad_token_id", None) is not None:
        input_ids[1, 4:] = config.pad_token_id
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            expected = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            unpadded = unpadded_encoder_states(encoder, input_ids, attention_mask)
            bucketed = bucketed_encoder_states(encoder, input_ids, attention_mask)
    except Exception as error:  # an encoder whose modules take other arguments: use its own forward
        logger.info("unpadded forward unavailable for %s (%s); using the padded forward",
                    type(encoder).__name__, error)
        return False
    finally:
        encoder.train(was_training)
    real = attention_mask.bool()
    tolerance = 1e-4 if expected.dtype == torch.float32 else 3e-2  # half-precision weights round more
    agrees = all(torch.allclose(actual[real].float(), expected[real].float(), rtol=tolerance, atol=tolerance)
                 for actual in (unpadded, bucketed))
    if not agrees:
        logger.info("unpadded forward differs from %s's own; using the padded forward", type(encoder).__name__)
    return agrees


def token_classification_loss(logits, labels, reduction="mean"):
    """Cross-entropy over the labelled positions (label != IGNORED_LABEL_ID): their mean, or their sum.

    A batch without any labelled position gives a loss of 0 that still depends on the logits (so backward
    works) instead of the NaN that a mean over nothing would be. The mean is the sum over the count of
    labelled positions, at least 1, computed on the device: nothing here waits for it.
    """
    flat_logits = logits.reshape(-1, logits.size(-1)).float()
    flat_labels = labels.reshape(-1)
    summed = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORED_LABEL_ID, reduction="sum")
    if reduction == "sum":
        return summed
    return summed / (flat_labels != IGNORED_LABEL_ID).sum().clamp(min=1)


@contextlib.contextmanager
def dropout_off(model):
    """Run a block in eval mode (no dropout), then put the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
