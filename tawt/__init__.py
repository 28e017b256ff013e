"""Target-Aware Weighted Training (TAWT) as a component: `from tawt import TAWT`.

`TAWT` weights the tasks of any PyTorch model whose tasks share parameters (tawt/weighting.py);
`TAWTTrainer`, `MultiTaskDataset` and `TaskCollator` run it in a Hugging Face Trainer (tawt/hf_trainer.py,
imported on first use: the Trainer needs `pip install -e ".[hf]"` for accelerate).
"""

from tawt.weighting import TAWT, encoder_parameters, shared_gradient

_HF_NAMES = ("MultiTaskDataset", "OneTaskBatches", "TAWTCallback", "TAWTTrainer", "TaskCollator")

__all__ = ["TAWT", "encoder_parameters", "shared_gradient", *_HF_NAMES]


def __getattr__(name):
    if name in _HF_NAMES:
        from tawt import hf_trainer

        return getattr(hf_trainer, name)
    raise AttributeError(f"module 'tawt' has no attribute {name!r}")
