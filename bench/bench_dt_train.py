"""DT training throughput: pyseqrl vs transformers' DecisionTransformerModel vs d3rlpy, side by side.

Same model size (128 hidden x 3 layers x 1 head, K = 20), batch 64, AdamW (lr 1e-4, wd 1e-4), grad clip 0.25,
action MSE on real steps, on one synthetic Hopper-shaped dataset (S = 11, A = 3, 100 episodes x 1000 steps).

* pyseqrl: SegmentSampler (native, prefetching) + torch_batches + DecisionTransformer (GPT2Model, SDPA), at its
  default precision (``auto``: bf16 autocast where the CPU has AVX512-BF16 or AMX, else fp32) and in fp32.
* HF: DecisionTransformerModel fed by a numpy batcher written like the DT repo's gym/experiment.py get_batch, at
  its default (fp32) and under the same bf16 autocast as pyseqrl (equal precision).
* d3rlpy: DecisionTransformer.fit (its own sampler and GPT) at its default (fp32); skipped when d3rlpy is missing.

"At defaults" compares each library as a user runs it; "equal precision" compares the implementations.

    python bench/bench_dt_train.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

S, A, K, B, H, EP, NEP = 11, 3, 20, 64, 128, 1000, 100


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = EP * NEP
    term = np.zeros(n, bool)
    term[EP - 1 :: EP] = True
    return {
        "observations": rng.normal(size=(n, S)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, A)).astype(np.float32),
        "rewards": rng.uniform(0, 3, size=n).astype(np.float32),
        "terminals": term,
    }


def timed(step: Callable[[], None]) -> Callable[[int], float]:
    """Warm ``step`` up and return a function timing ``n`` steps (seconds)."""
    for _ in range(5):
        step()

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return time.perf_counter() - t0

    return run


def bench_pyseqrl(data: dict[str, np.ndarray], bf16: bool) -> Callable[[int], float]:
    import pyseqrl
    from pyseqrl.algos.dt import DTObjective, param_groups
    from pyseqrl.data import EpisodeDataset, torch_batches
    from pyseqrl.models import DecisionTransformer, DTConfig

    ds = EpisodeDataset.from_arrays(data["observations"], data["actions"], data["rewards"], data["terminals"])
    mean, std = ds.state_stats()
    sampler = pyseqrl.SegmentSampler(ds, context_len=K, batch_size=B, seed=0, state_mean=mean, state_std=std)
    batches = torch_batches(sampler)
    torch.manual_seed(0)
    model = DecisionTransformer(DTConfig(state_dim=S, act_dim=A, context_len=K)).train()
    objective = DTObjective(model, None, 0.0)
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 1e-4, 1e-4), foreach=True)  # as the trainer

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = objective(next(batches), 0.0, None)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return timed(step)


def bench_hf(data: dict[str, np.ndarray], bf16: bool) -> Callable[[int], float]:
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    ends = np.flatnonzero(data["terminals"]) + 1
    starts = np.concatenate([[0], ends[:-1]])
    trajs = [{k: data[k][s:e] for k in ("observations", "actions", "rewards")} for s, e in zip(starts, ends)]
    mean, std = data["observations"].mean(0), data["observations"].std(0) + 1e-6
    lens = np.array([len(t["rewards"]) for t in trajs])
    p = lens / lens.sum()
    rng = np.random.default_rng(0)

    def discount_cumsum(x: np.ndarray) -> np.ndarray:
        return np.cumsum(x[::-1])[::-1].copy()

    def get_batch() -> tuple[torch.Tensor, ...]:  # as in the DT repo's gym/experiment.py
        idx = rng.choice(len(trajs), size=B, replace=True, p=p)
        s, a, r, rtg, ts, mask = [], [], [], [], [], []
        for i in idx:
            tr = trajs[i]
            si = rng.integers(0, len(tr["rewards"]) - 1)
            s.append(tr["observations"][si : si + K].reshape(1, -1, S))
            a.append(tr["actions"][si : si + K].reshape(1, -1, A))
            r.append(tr["rewards"][si : si + K].reshape(1, -1, 1))
            ts.append(np.arange(si, si + s[-1].shape[1]).reshape(1, -1))
            ts[-1][ts[-1] >= EP] = EP - 1
            rtg.append(discount_cumsum(tr["rewards"][si:])[: s[-1].shape[1]].reshape(1, -1, 1))
            tlen = s[-1].shape[1]
            s[-1] = np.concatenate([np.zeros((1, K - tlen, S)), s[-1]], axis=1)
            s[-1] = (s[-1] - mean) / std
            a[-1] = np.concatenate([np.ones((1, K - tlen, A)) * -10.0, a[-1]], axis=1)
            r[-1] = np.concatenate([np.zeros((1, K - tlen, 1)), r[-1]], axis=1)
            rtg[-1] = np.concatenate([np.zeros((1, K - tlen, 1)), rtg[-1]], axis=1) / 1000.0
            ts[-1] = np.concatenate([np.zeros((1, K - tlen)), ts[-1]], axis=1)
            mask.append(np.concatenate([np.zeros((1, K - tlen)), np.ones((1, tlen))], axis=1))

        def f(x):
            return torch.from_numpy(np.concatenate(x, axis=0)).float()

        return f(s), f(a), f(r), f(rtg), torch.from_numpy(np.concatenate(ts, 0)).long(), f(mask)

    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(
        state_dim=S,
        act_dim=A,
        hidden_size=H,
        n_layer=3,
        n_head=1,
        n_inner=4 * H,
        activation_function="relu",
        max_ep_len=EP,
        n_positions=1024,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        action_tanh=True,
    )
    model = DecisionTransformerModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)

    def step() -> None:
        s, a, r, rtg, ts, mask = get_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(states=s, actions=a, rewards=r, returns_to_go=rtg, timesteps=ts, attention_mask=mask)
        pred = out.action_preds.float().reshape(-1, A)[mask.reshape(-1) > 0]
        loss = ((pred - a.reshape(-1, A)[mask.reshape(-1) > 0]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return timed(step)


def bench_d3rlpy(data: dict[str, np.ndarray]) -> Callable[[int], float] | None:
    try:
        import d3rlpy
    except ImportError:
        return None
    from d3rlpy.logging import NoopAdapterFactory
    from d3rlpy.models.encoders import VectorEncoderFactory

    ds = d3rlpy.dataset.MDPDataset(data["observations"], data["actions"], data["rewards"], data["terminals"])
    dt = d3rlpy.algos.DecisionTransformerConfig(
        batch_size=B,
        context_size=K,
        max_timestep=EP,
        learning_rate=1e-4,
        num_heads=1,
        num_layers=3,
        encoder_factory=VectorEncoderFactory(hidden_units=[H]),
        activation_type="relu",
    ).create(device="cpu:0")
    kw = {"show_progress": False, "logger_adapter": NoopAdapterFactory(), "save_interval": 10**9}
    dt.fit(ds, n_steps=5, n_steps_per_epoch=5, **kw)  # build + warm-up

    def run(n: int) -> float:
        t0 = time.perf_counter()
        dt.fit(ds, n_steps=n, n_steps_per_epoch=n, **kw)  # one epoch of n updates
        return time.perf_counter() - t0

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pyseqrl.algos.dt import TrainConfig
    from pyseqrl.utils.precision import autocast_bf16

    default_bf16 = autocast_bf16(TrainConfig().precision, torch.device("cpu"))
    data = make_data()
    ours = f"pyseqrl, default precision ({'bf16 autocast' if default_bf16 else 'fp32'})"
    runners = {
        ours: bench_pyseqrl(data, default_bf16),
        "pyseqrl, fp32": bench_pyseqrl(data, False),
        "HF DecisionTransformerModel + numpy batcher, default (fp32)": bench_hf(data, False),
        "HF DecisionTransformerModel + numpy batcher, bf16 autocast": bench_hf(data, True) if default_bf16 else None,
        "d3rlpy DecisionTransformer, default (fp32)": bench_d3rlpy(data),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):  # round robin, so a change of machine load hits every implementation alike
        for name, run in runners.items():
            if run is not None:
                times[name].append(run(args.steps))
    rows = {k: (args.steps / statistics.median(v) if v else None) for k, v in times.items()}
    import transformers

    print(
        f"# DT training, {platform.processor() or platform.machine()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, threads {torch.get_num_threads()}; 128x3x1, B={B}, K={K}, {args.steps} steps "
        f"x {args.repeats} repeats, round robin (median)"
    )
    # each baseline against pyseqrl at its default and at the baseline's own precision
    same = {name: ours if "bf16" in name else "pyseqrl, fp32" for name in rows}
    print("| implementation | steps/s | pyseqrl (default) speedup | pyseqrl (equal precision) speedup |")
    print("|---|---|---|---|")
    for name, rate in rows.items():
        if rate is None:
            print(f"| {name} | (not run) | | |")
        elif name.startswith("pyseqrl"):
            print(f"| {name} | {rate:.1f} | | |")
        else:
            print(f"| {name} | {rate:.1f} | {rows[ours] / rate:.2f}x | {rows[same[name]] / rate:.2f}x |")


if __name__ == "__main__":
    main()
