"""Return-conditioned evaluation of a Decision Transformer in vectorised environments, with a key/value cache.

Each environment keeps its own episode history. The return-to-go starts at ``target_return / return_scale`` and is
decremented by ``reward / return_scale`` after every step, exactly as in the DT evaluation loop; states are
normalised with the training statistics and the context is padded and masked like a training segment: padding
before the real steps (``padding="left"``, the DT layout) or after them (``"right"``: the action is read at each
environment's last real step, and full contexts run attention with no mask tensor). Both layouts give the same
actions, whichever padding the model was trained with.

Incremental decoding. All environments share one token timeline in the backbone's key/value cache. Each :meth:`act`
appends three tokens per environment, ``[a_{t-1}, R_t, s_t]``, and reads the action from the hidden state of
``s_t``: 3 new tokens instead of 3K. An environment that starts a new episode masks its old cache entries out (a
masked key changes nothing, and position ids, when used, count unmasked tokens only).

The sliding window. Once the timeline holds K steps, old steps must leave the context. Cached keys of the remaining
tokens were computed while attending to the leaving ones, so no cache can slide exactly: the window is rebuilt
(one prefill) keeping the last ``K - refresh_every`` steps of each environment, and decoding goes on incrementally.
``refresh_every=1`` is the original DT protocol (the context is always the last K steps; after the first K steps
every act is a full recompute). ``refresh_every=r > 1`` rebuilds once every r acts, so the context holds between
K - r + 1 and K steps and most acts are incremental (``r = K // 2`` makes evaluation several times faster).
``use_cache=False`` applies the same context rule by recomputing every context from scratch; it is the reference
that tests compare the cached path against, action for action.
"""

from __future__ import annotations

import numpy as np
import torch

from pyseqrl.models.decision_transformer import DecisionTransformer
from pyseqrl.policies.base import Policy


class DTPolicy(Policy):
    """Batched, return-conditioned Decision Transformer policy (the :class:`pyseqrl.policies.base.Policy` protocol).

    Args:
        model: a trained :class:`DecisionTransformer` (put in eval mode here).
        target_return: desired episode return R_0 (in environment units, before ``return_scale``).
        return_scale: returns-to-go are divided by this, as in training.
        state_mean: float32 (S,) training state mean (None = 0).
        state_std: float32 (S,) training state std (None = 1).
        context_len: context K in steps (default: the model's).
        refresh_every: steps dropped at once when the window is full (1 = exact sliding window of the DT paper).
        use_cache: decode incrementally with the backbone's key/value cache (False = recompute each context).
        padding: ``"left"`` (padding before the real steps of a context, as DT) or ``"right"`` (after them).
        device: torch device of the model (default: where its parameters are).

    Example:
        >>> policy = DTPolicy(model, target_return=3600.0, return_scale=1000.0, state_mean=mu, state_std=sd)
        >>> policy.reset(np.arange(8)); a = policy.act(obs)           # obs float32 (8, S) -> a float32 (8, A)
        >>> policy.observe(rewards)                                    # rewards float32 (8,)
    """

    def __init__(
        self,
        model: DecisionTransformer,
        target_return: float,
        return_scale: float = 1000.0,
        state_mean: np.ndarray | None = None,
        state_std: np.ndarray | None = None,
        context_len: int | None = None,
        refresh_every: int = 1,
        use_cache: bool = True,
        device: str | torch.device | None = None,
        padding: str = "left",
    ):
        self.model = model.eval()
        self.S, self.A = model.cfg.state_dim, model.cfg.act_dim
        self.K = int(context_len or model.cfg.context_len)
        if not 1 <= self.K <= model.cfg.context_len:
            raise ValueError(f"context_len must be in [1, {model.cfg.context_len}] (the model's), got {self.K}")
        if not 1 <= refresh_every <= self.K:
            raise ValueError(f"refresh_every must be in [1, K={self.K}], got {refresh_every}")
        if padding not in ("left", "right"):
            raise ValueError(f"padding: expected 'left' or 'right', got {padding!r}")
        self.refresh_every = int(refresh_every)
        self.use_cache = use_cache
        self.padding = padding
        self.target_return = float(target_return)
        self.return_scale = float(return_scale)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        mean = np.zeros(self.S, np.float32) if state_mean is None else np.asarray(state_mean, np.float32).reshape(-1)
        std = np.ones(self.S, np.float32) if state_std is None else np.asarray(state_std, np.float32).reshape(-1)
        if mean.shape != (self.S,) or std.shape != (self.S,):
            raise ValueError(f"state_mean/state_std: expected shape ({self.S},), got {mean.shape} / {std.shape}")
        self.state_mean = torch.as_tensor(mean, device=self.device)
        self.state_std = torch.as_tensor(std, device=self.device)
        self.name = f"dt(target={self.target_return:g})"
        self.n = 0

    def with_target(self, target_return: float) -> DTPolicy:
        """A fresh policy sharing the model and settings, conditioned on another target return."""
        return DTPolicy(
            self.model,
            target_return,
            self.return_scale,
            self.state_mean.cpu().numpy(),
            self.state_std.cpu().numpy(),
            self.K,
            self.refresh_every,
            self.use_cache,
            self.device,
            self.padding,
        )

    # ------------------------------------------------------------------ state
    def _init(self, n: int) -> None:
        K, dev = self.K, self.device
        self.n = n
        # rolling history of the last K steps of each env (newest last)
        self.h_states = torch.zeros(n, K, self.S, device=dev)
        self.h_actions = torch.zeros(n, K, self.A, device=dev)
        self.h_rtg = torch.zeros(n, K, 1, device=dev)
        self.h_time = torch.zeros(n, K, dtype=torch.long, device=dev)
        self.ctx_len = torch.zeros(n, dtype=torch.long, device=dev)  # steps of env i in its context
        self.t = torch.zeros(n, dtype=torch.long, device=dev)  # episode timestep
        self.rtg = torch.full((n,), self.target_return / self.return_scale, device=dev)
        self.pending_reset = torch.ones(n, dtype=torch.bool, device=dev)
        self.slots = 0  # steps on the shared timeline
        self.cache = None
        self.key_mask = torch.zeros(n, 0, dtype=torch.bool, device=dev)

    def reset(self, env_ids: np.ndarray) -> None:
        if self.n == 0:
            return  # everything starts fresh at the first act
        ids = torch.as_tensor(np.asarray(env_ids, dtype=np.int64), device=self.device)
        self.pending_reset[ids] = True

    def observe(self, rewards: np.ndarray) -> None:
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float32).reshape(-1), device=self.device)
        if r.shape[0] != self.n:
            raise ValueError(f"observe: expected {self.n} rewards, got {r.shape[0]}")
        self.rtg -= r / self.return_scale
        self.t += 1

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.S:
            raise ValueError(f"act: expected observations of shape (n, {self.S}), got {obs.shape}")
        if obs.shape[0] != self.n:
            self._init(obs.shape[0])
        K, r = self.K, self.refresh_every
        new = self.pending_reset
        if bool(new.any()):  # new episodes: fresh return-to-go, timestep and context
            self.rtg[new] = self.target_return / self.return_scale
            self.t[new] = 0
            self.ctx_len[new] = 0
            self.key_mask[new] = False
        prev_len = self.ctx_len.clone()  # completed steps in each context before this act
        rebuild = self.slots == 0 or self.slots >= K
        if rebuild and self.slots >= K:  # window full: keep the last K - r steps of every env
            self.slots = K - r
            self.ctx_len.clamp_(max=K - r)
        self.slots += 1
        self.ctx_len += 1
        self.pending_reset = torch.zeros_like(self.pending_reset)

        # push the new step into the rolling history (action filled in below)
        s = (torch.as_tensor(obs, device=self.device) - self.state_mean) / self.state_std  # (n, S)
        self.h_states = torch.roll(self.h_states, -1, dims=1)
        self.h_actions = torch.roll(self.h_actions, -1, dims=1)
        self.h_rtg = torch.roll(self.h_rtg, -1, dims=1)
        self.h_time = torch.roll(self.h_time, -1, dims=1)
        self.h_states[:, -1] = s
        self.h_actions[:, -1] = 0.0
        self.h_rtg[:, -1, 0] = self.rtg
        self.h_time[:, -1] = self.t

        if not self.use_cache:
            action = self._recompute()
        elif rebuild:
            action = self._prefill()
        else:
            action = self._decode(prev_len)
        self.h_actions[:, -1] = action
        return action.float().cpu().numpy()

    def _window(self, steps: int) -> tuple[torch.Tensor, ...]:
        """The last ``steps`` steps of the history laid out with this policy's padding.

        Returns states, actions, returns-to-go and timesteps (n, steps, ...), the step mask bool (n, steps) and the
        index of each environment's current (last real) step, int64 (n,).
        """
        idx = torch.arange(steps, device=self.device)[None, :]  # (1, steps)
        c = self.ctx_len[:, None]  # (n, 1) real steps of each context
        shift = steps - c if self.padding == "right" else torch.zeros_like(c)  # (n, 1) real steps move left by this
        pos = idx + shift  # (n, steps) position in the left-padded layout
        mask = (pos >= steps - c) & (pos < steps)  # (n, steps)
        src = (self.K - steps + pos).clamp(max=self.K - 1)  # (n, steps) history index; padding repeats the newest
        rows = torch.arange(self.n, device=self.device)[:, None]  # (n, 1)
        last = (steps - 1 - shift)[:, 0]  # (n,)
        h = (self.h_states, self.h_actions, self.h_rtg, self.h_time)
        return (*(t[rows, src] for t in h), mask, last)

    def _recompute(self) -> torch.Tensor:
        """Reference path: the whole context from scratch, padded to K like a training segment."""
        states, actions, rtg, time, mask, last = self._window(self.K)
        preds = self.model(states, actions, rtg, time, mask.float(), padding=self.padding)  # (n, K, A)
        return preds[torch.arange(self.n, device=self.device), last]

    def _prefill(self) -> torch.Tensor:
        """Rebuild the cache: the context steps as (R, s, a) tokens, the current step's action token masked."""
        m = self.model
        states, actions, rtg, time, mask, last = self._window(self.slots)
        x = m.embed(states, actions, rtg, time)[0]  # (n, 3T, H)
        key_mask = mask.repeat_interleave(3, dim=1)  # (n, 3T)
        h, self.cache = m.run_backbone(x, None if self.padding == "right" else key_mask, cache=None, use_cache=True)
        rows = torch.arange(self.n, device=self.device)
        key_mask[rows, 3 * last + 2] = False  # a_t is unknown yet: _decode appends it; no later token sees this one
        self.key_mask = key_mask
        return m.predict_action(h[rows, 3 * last + 1])  # (n, A) from s_t

    def _decode(self, prev_len: torch.Tensor) -> torch.Tensor:
        """Append [a_{t-1}, R_t, s_t] to the cache and read a_t."""
        m = self.model
        sl = slice(self.K - 2, self.K)  # previous and current step of the history
        x = m.embed(self.h_states[:, sl], self.h_actions[:, sl], self.h_rtg[:, sl], self.h_time[:, sl])[0]
        x = x[:, 2:5]  # (n, 3, H): a_{t-1}, R_t, s_t (of R_{t-1} s_{t-1} a_{t-1} R_t s_t a_t)
        new_mask = torch.ones(self.n, 3, dtype=torch.bool, device=self.device)
        new_mask[:, 0] = prev_len > 0  # no previous action in a fresh episode
        key_mask = torch.cat([self.key_mask, new_mask], dim=1)  # (n, L + 3)
        h, self.cache = m.run_backbone(x, key_mask, cache=self.cache, use_cache=True)
        self.key_mask = key_mask
        return m.predict_action(h[:, -1])
