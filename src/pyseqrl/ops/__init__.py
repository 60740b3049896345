"""Native training operations: masked causal attention, GPU-resident DT batching, graphed training steps, and
dropout whose CPU masks come from the native core (:mod:`pyseqrl.ops.dropout`).

Every GPU operation has a pure-torch path that runs anywhere (CPU included); the CUDA kernels from
``pyseqrl._core.cuda`` are used when the package was built with nvcc and the inputs live on a GPU.
Importing :mod:`pyseqrl.ops.attention` registers the ``"pyseqrl"`` attention implementation with transformers.
"""

from __future__ import annotations

from pyseqrl.ops._cuda import cuda_kernels_available

__all__ = ["cuda_kernels_available"]
