"""TAWT in a Hugging Face `Trainer`: a small subclass and its callback; the Trainer's own loop is untouched.

- `MultiTaskDataset` puts several tasks' examples in one data set; each example gets its task's index under
  "task", and `TaskCollator` keeps it in the batch, so the model (`forward(..., task=...)`) picks its head.
- `TAWTTrainer` draws batches of one task each (`OneTaskBatches`, shuffled per epoch from the seed, so a
  resumed run draws what an uninterrupted one does), weights each batch's loss (`compute_loss`), and its
  `TAWTCallback` runs the weight update after every epoch and, with `weight_update_steps` N, every N
  optimizer steps. After each update the weights and cosines go through `Trainer.log` (so `report_to`
  shows them: task_weight/TASK, cosine/TASK) and into task_weights.json in the output directory; the
  weighting's state goes into every checkpoint (tawt_weighting.pt) and is restored by
  `train(resume_from_checkpoint=...)`.

Under torchrun every process trains on its own one-task batches (the Trainer's DistributedDataParallel
averages their gradients), and every process runs the update on its share of the sampled batches.
"""

import bisect
import math
import os

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from tawt.output_files import TASK_WEIGHTS_FILE, write_json_atomic
from utils_cross_task import IGNORED_LABEL_ID, epoch_batches

WEIGHTING_STATE_FILE = "tawt_weighting.pt"
TASK_KEY = "task"


class MultiTaskDataset(torch.utils.data.Dataset):
    """The examples of several tasks ({task: sequence of example dicts}), one after the other.

    Example i is returned with its task's index under "task": its position in `tasks` (default: the
    order of `task_datasets`). Give the training set's `tasks` to a data set of fewer tasks (one task's
    dev set) so that its indices name the same heads.
    """

    def __init__(self, task_datasets, tasks=None):
        self.tasks = list(tasks if tasks is not None else task_datasets)
        unknown = [task for task in task_datasets if task not in self.tasks]
        if unknown:
            raise ValueError(f"task(s) {unknown} are not among the tasks {self.tasks}")
        self.datasets = {task: task_datasets.get(task, []) for task in self.tasks}
        self.offsets = [0]
        for task in self.tasks:
            self.offsets.append(self.offsets[-1] + len(self.datasets[task]))

    def __len__(self):
        return self.offsets[-1]

    def __getitem__(self, index):
        position = bisect.bisect_right(self.offsets, index) - 1
        task = self.tasks[position]
        return {**self.datasets[task][index - self.offsets[position]], TASK_KEY: position}

    def task_view(self, task):
        """`task`'s examples, each with its task index (what the training batches hold)."""
        start = self.offsets[self.tasks.index(task)]
        return _Slice(self, start, len(self.datasets[task]))


class _Slice:
    def __init__(self, dataset, start, length):
        self.dataset, self.start, self.length = dataset, start, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.dataset[self.start + index]


class OneTaskBatches(torch.utils.data.Sampler):
    """An epoch's batches of a MultiTaskDataset, each of one task (epoch_batches of utils_cross_task).

    The order is a function of (seed, epoch) only: the Trainer calls `set_epoch` at each epoch, and a
    resumed run recreates the order of the epoch it resumes in.
    """

    def __init__(self, dataset, batch_size, seed):
        self.dataset, self.batch_size, self.seed, self.epoch = dataset, batch_size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        sizes = {task: len(self.dataset.datasets[task]) for task in self.dataset.tasks}
        for task, indices in epoch_batches(sizes, self.batch_size, generator):
            start = self.dataset.offsets[self.dataset.tasks.index(task)]
            yield [start + index for index in indices]

    def __len__(self):
        return sum(math.ceil(len(examples) / self.batch_size) for examples in self.dataset.datasets.values())


class TaskCollator:
    """Wraps a collator (e.g. DataCollatorForTokenClassification): the batch keeps its task's index."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        tasks = {feature[TASK_KEY] for feature in features}
        if len(tasks) != 1:
            raise ValueError(f"a batch holds examples of tasks {sorted(tasks)}: TAWT needs one task per batch "
                             "(train through TAWTTrainer, whose batches are of one task each)")
        batch = self.collator([{key: value for key, value in feature.items() if key != TASK_KEY}
                               for feature in features])
        batch[TASK_KEY] = torch.full((len(features),), tasks.pop(), dtype=torch.long)
        return batch


def labelled_items(batch):
    """What a token-classification batch's mean loss is a mean over: its labelled tokens."""
    if isinstance(batch, dict) and "labels" in batch:
        return int((batch["labels"] != IGNORED_LABEL_ID).sum())
    return len(batch[TASK_KEY])


class TAWTTrainer(Trainer):
    """A Trainer whose batches are of one task each, with their losses weighted by a `tawt.TAWT`.

    `train_dataset` is a MultiTaskDataset over the weighting's tasks (and the main task, when it is not
    weighted); the model's forward takes the batch's `task` (a tensor of the task's index, repeated) and
    returns its loss like any Hugging Face model. `weight_update_steps` N (0: none) adds an update every
    N optimizer steps to the one after every epoch (`update_after_epoch`).
    """

    def __init__(self, *args, weighting, weight_update_steps=0, update_after_epoch=True, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.train_dataset, MultiTaskDataset):
            raise TypeError("TAWTTrainer trains on a tawt.MultiTaskDataset ({task: examples}); got "
                            f"{type(self.train_dataset).__name__}")
        missing = [task for task in weighting.tasks + [weighting.main_task] if task not in self.train_dataset.tasks]
        if missing:
            raise ValueError(f"the training data set has no examples of task(s) {missing}")
        if weight_update_steps < 0:
            raise ValueError(f"weight_update_steps {weight_update_steps}: give 0 (after each epoch only) or more")
        if not isinstance(self.data_collator, TaskCollator):
            self.data_collator = TaskCollator(self.data_collator)
        self.weighting = weighting
        self.weighting.count_items = labelled_items
        self.weight_update_steps = weight_update_steps
        self.update_after_epoch = update_after_epoch
        self.last_update_step = None
        self.add_callback(TAWTCallback(self))

    def get_train_dataloader(self):
        batches = OneTaskBatches(self.train_dataset, self._train_batch_size, self.args.data_seed or self.args.seed)
        loader = torch.utils.data.DataLoader(
            self.train_dataset, batch_sampler=batches, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)  # under torchrun: every world_size-th batch to each process

    def batch_task(self, inputs):
        return self.train_dataset.tasks[int(inputs[TASK_KEY][0])]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task = self.batch_task(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:  # evaluation reports the plain loss
            loss = self.weighting.weighted_loss(task, loss)
        return (loss, outputs) if return_outputs else loss

    def task_loss(self, task, batch):
        """`task`'s mean loss on a sampled batch, through the model itself (not its DDP wrapper)."""
        inputs = self._prepare_inputs(batch)
        with self.compute_loss_context_manager(), self.accelerator.autocast():
            return Trainer.compute_loss(self, self.model, inputs)

    def update_task_weights(self, stage):
        """One TAWT update on batches sampled from the training data, logged and written out."""
        datasets = {task: self.train_dataset.task_view(task) for task in self.weighting.sampled_tasks()}
        batches = self.weighting.sample_batches(datasets, self.data_collator)
        was_training = self.model.training
        self.model.eval()  # the similarity is about the tasks, not about random dropout masks
        try:
            self.weighting.update(self.task_loss, batches, stage=stage, epoch=self.state.epoch,
                                  step=self.state.global_step)
        finally:
            self.model.train(was_training)
        self.last_update_step = self.state.global_step
        self.log_task_weights()
        self.write_task_weights()

    def log_task_weights(self):
        logs = {f"task_weight/{task}": weight for task, weight in self.weighting.weights.items()}
        logs.update({f"cosine/{task}": cosine for task, cosine in self.weighting.cosines.items() if cosine is not None})
        self.log(logs)

    def write_task_weights(self, output_dir=None):
        if self.args.should_save:
            os.makedirs(output_dir or self.args.output_dir, exist_ok=True)
            write_json_atomic(os.path.join(output_dir or self.args.output_dir, TASK_WEIGHTS_FILE),
                              self.weighting.weights_file())

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint to resume from in {self.args.output_dir}")
        if resume_from_checkpoint:
            path = os.path.join(resume_from_checkpoint, WEIGHTING_STATE_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is missing: {resume_from_checkpoint} was not saved by a TAWTTrainer "
                                        "(or the file was removed); resume from one of its checkpoints")
            self.weighting.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.last_update_step = self.weighting.history[-1]["step"]
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


class TAWTCallback(TrainerCallback):
    """When a TAWTTrainer's weights are updated, and their state saved with each checkpoint."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.trainer.log_task_weights()
            self.trainer.write_task_weights()

    def on_step_end(self, args, state, control, **kwargs):
        steps = self.trainer.weight_update_steps
        if steps and state.global_step % steps == 0:
            self.trainer.update_task_weights("step")

    def on_epoch_end(self, args, state, control, **kwargs):
        # An epoch cut short by max_steps ends the training: an update there would change nothing.
        whole_epoch = abs(state.epoch - round(state.epoch)) < 1e-9
        if self.trainer.update_after_epoch and whole_epoch and self.trainer.last_update_step != state.global_step:
            self.trainer.update_task_weights("epoch")

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            checkpoint = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            torch.save(self.trainer.weighting.state_dict(), os.path.join(checkpoint, WEIGHTING_STATE_FILE))
