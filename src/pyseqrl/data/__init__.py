"""Offline datasets and the native data core.

- :class:`EpisodeDataset`: flat transition arrays plus episode boundaries; statistics, subsets, save.
- :func:`load`: D4RL HDF5, Minari directories, Decision-Transformer pickles and pyseqrl's own files.
- :class:`SegmentSampler`, :class:`ReplayBuffer`, :func:`returns_to_go`: the native core.
- :func:`torch_batches`: SegmentSampler batches as torch tensors (CPU zero-copy, pinned, or on a device).
"""

from pyseqrl.data.dataset import EpisodeDataset
from pyseqrl.data.loaders import load
from pyseqrl.data.native import ReplayBuffer, SegmentSampler, returns_to_go
from pyseqrl.data.torch_batches import torch_batches

__all__ = ["EpisodeDataset", "ReplayBuffer", "SegmentSampler", "load", "returns_to_go", "torch_batches"]
