"""Target-Aware Weighted Training (TAWT) as a component: `from tawt import TAWT`.

`TAWT` weights the tasks of any PyTorch model whose tasks share parameters (tawt/weighting.py);
`TAWTTrainer`, `MultiTaskDataset` and `TaskCollator` run it in a Hugging Face Trainer (tawt/hf_trainer.py:
the Trainer needs `pip install -e ".[hf]"` for accelerate). Both are imported on first use, so that importing
`tawt.run_arguments` to print a script's --help loads neither torch nor transformers.

The paradigm scripts' own modules live here too (tawt.cross_task_training, tawt.training_loop, ...), and the
checkout's folders data/, testing/, scripts/ and benchmarks/ are importable as tawt.data, tawt.testing,
tawt.scripts and tawt.benchmarks: installing the project adds `tawt` and the design's modules
(utils_cross_task, modeling_multi_bert, weighted_training_basics, run_*) to an environment, and no generic name
such as `errors` or `data` that a user's own code may also have.
"""

import os

# The folders stay at the checkout's top level, where the README and the shell scripts name them; the package's
# search path reaches them there (an editable install and a checkout on PYTHONPATH alike).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__path__.append(_CHECKOUT)  # noqa: F821 (a package's __path__)

_API = {
    "TAWT": "tawt.weighting", "encoder_parameters": "tawt.weighting", "shared_gradient": "tawt.weighting",
    "MultiTaskDataset": "tawt.hf_trainer", "OneTaskBatches": "tawt.hf_trainer", "TAWTCallback": "tawt.hf_trainer",
    "TAWTTrainer": "tawt.hf_trainer", "TaskCollator": "tawt.hf_trainer",
}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tawt' has no attribute {name!r}")
