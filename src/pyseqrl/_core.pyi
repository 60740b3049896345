# Hand-written stub of the compiled module pyseqrl._core (csrc/bindings). tests/test_core_stub.py checks that
# every name here exists in the module and vice versa.
from typing import Any

import numpy as np

__version__: str
with_cuda: bool

def returns_to_go(
    rewards: np.ndarray, episode_ends: np.ndarray, gamma: float = 1.0, parallel: bool = True
) -> np.ndarray: ...
def dropout_keep_mask(out: np.ndarray, keep_prob: float, seed: int) -> None: ...

class SegmentSampler:
    """Decision-Transformer window sampler. Every method may be called from several threads at once: each
    sample()/sample_into() hands out a distinct batch index, and setting ``position`` is atomic."""

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_ends: np.ndarray,
        state_mean: np.ndarray | None = None,
        state_std: np.ndarray | None = None,
        context_len: int = 20,
        batch_size: int = 64,
        seed: int = 0,
        return_scale: float = 1000.0,
        gamma: float = 1.0,
        max_ep_len: int = 1000,
        sample_by_length: bool = True,
        pad_action: float = -10.0,
        pad_right: bool = False,
        prefetch: int = 2,
        num_threads: int = 1,
    ) -> None: ...
    def sample(self) -> dict[str, np.ndarray]: ...
    def sample_into(self, out: dict[str, np.ndarray]) -> None: ...
    def batch_at(self, index: int) -> dict[str, np.ndarray]: ...
    def draws(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...
    position: int
    @property
    def returns_to_go(self) -> np.ndarray: ...
    @property
    def state_dim(self) -> int: ...
    @property
    def action_dim(self) -> int: ...
    @property
    def num_episodes(self) -> int: ...
    @property
    def context_len(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def prefetch(self) -> int: ...
    @property
    def pad_right(self) -> bool: ...

class ReplayBuffer:
    """Transition ring buffer; every method takes one mutex (safe to share between threads). ``set_state``
    validates contents as ``add`` does and changes nothing when it rejects them."""

    def __init__(
        self,
        capacity: int,
        obs_shape: list[int] | tuple[int, ...],
        action_shape: list[int] | tuple[int, ...],
        seed: int = 0,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
    ) -> None: ...
    def add(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminated: np.ndarray,
    ) -> None: ...
    def sample(self, batch_size: int) -> dict[str, np.ndarray]: ...
    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None: ...
    def __len__(self) -> int: ...
    beta: float
    @property
    def capacity(self) -> int: ...
    @property
    def obs_shape(self) -> tuple[int, ...]: ...
    @property
    def action_shape(self) -> tuple[int, ...]: ...
    @property
    def prioritized(self) -> bool: ...
    @property
    def alpha(self) -> float: ...
    @property
    def eps(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def position(self) -> int: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...

class cuda:
    """Submodule ``pyseqrl._core.cuda`` (present only when ``with_cuda``): raw CUDA entry points.

    Tensors are ``(data_ptr, stride_b, stride_h, stride_l)`` of ``[B, H, L, D]`` (last dim contiguous); pointers,
    the stream (``torch.cuda.current_stream().cuda_stream``) and the device index are plain ints. Use pyseqrl.ops.
    """

    attention_max_len: int
    attention_head_dims: tuple[int, int, int]
    @staticmethod
    def attention_forward(
        q: tuple[int, int, int, int],
        k: tuple[int, int, int, int],
        v: tuple[int, int, int, int],
        out: tuple[int, int, int, int],
        lse: int,
        key_mask: int,
        mask_stride_b: int,
        B: int,
        H: int,
        L: int,
        D: int,
        dtype: int,
        scale: float,
        dropout_p: float,
        philox: int,
        stream: int,
        device: int,
        algo: int = 0,
    ) -> None: ...
    @staticmethod
    def attention_backward(
        q: tuple[int, int, int, int],
        k: tuple[int, int, int, int],
        v: tuple[int, int, int, int],
        out: tuple[int, int, int, int],
        grad_out: tuple[int, int, int, int],
        grad_q: tuple[int, int, int, int],
        grad_k: tuple[int, int, int, int],
        grad_v: tuple[int, int, int, int],
        lse: int,
        delta: int,
        key_mask: int,
        mask_stride_b: int,
        B: int,
        H: int,
        L: int,
        D: int,
        dtype: int,
        scale: float,
        dropout_p: float,
        philox: int,
        stream: int,
        device: int,
        algo: int = 0,
    ) -> None: ...
    @staticmethod
    def attention_dropout_mask(
        B: int, H: int, L: int, dropout_p: float, philox: int, out: int, stream: int, device: int
    ) -> None: ...
    @staticmethod
    def segment_gather(
        observations: int,
        actions: int,
        rewards: int,
        rtg: int,
        episode_ends: int,
        state_mean: int,
        state_inv_std: int,
        N: int,
        S: int,
        A: int,
        E: int,
        batch_size: int,
        context_len: int,
        max_ep_len: int,
        seed: int,
        sample_by_length: bool,
        inv_return_scale: float,
        pad_action: float,
        pad_right: bool,
        batch_index: int,
        out_states: int,
        out_actions: int,
        out_rewards: int,
        out_rtg: int,
        out_timesteps: int,
        out_mask: int,
        stream: int,
        device: int,
    ) -> None: ...
