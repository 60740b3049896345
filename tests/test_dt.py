"""``pyseqrl train dt|wiki|lamo``: recipes end to end, optimizer groups, exact resume, presets, DDP on gloo."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pyseqrl.algos.dt import TrainConfig, param_groups, parse_args, resolve
from pyseqrl.cli import main

REPO = Path(__file__).resolve().parents[1]
S, A = 4, 2


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    """A toy dataset file, a text file and a tiny pretrained GPT-2 with a matching BPE tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pyseqrl.data import EpisodeDataset
    from pyseqrl.lm import read_texts, save_tokenizer, train_bpe

    root = tmp_path_factory.mktemp("dt_assets")
    rng = np.random.default_rng(0)
    N = 240
    obs = rng.normal(size=(N, S)).astype(np.float32)
    act = np.tanh(obs[:, :A] + 0.1 * rng.normal(size=(N, A))).astype(np.float32)
    rew = (obs[:, 0] + 1).astype(np.float32)
    term = np.zeros(N, bool)
    term[[59, 119, 179, 239]] = True
    EpisodeDataset.from_arrays(obs, act, rew, term, metadata={"env_id": "Toy-v0"}).save(root / "toy.h5")
    words = ["alpha", "beta", "gamma", "delta", "robot", "hopper", "walker", "cheetah", "the", "a"]
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(words, size=10)) for _ in range(300)))
    tok = train_bpe(read_texts([str(root / "text.txt")]), vocab_size=120, min_frequency=1)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=16, n_layer=2, n_head=2, n_positions=64))
    lm.save_pretrained(root / "lm")
    save_tokenizer(tok, root / "lm")
    return {"dataset": str(root / "toy.h5"), "text": str(root / "text.txt"), "lm": str(root / "lm")}


def tiny_args(assets: dict[str, str], run_dir: Path, recipe: str, steps: int = 4) -> list[str]:
    args = [
        "--dataset",
        assets["dataset"],
        "--run-dir",
        str(run_dir),
        "--steps",
        str(steps),
        "--batch-size",
        "4",
        "--context-len",
        "4",
        "--hidden-size",
        "16",
        "--n-layer",
        "1",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--warmup-steps",
        "2",
        "--max-ep-len",
        "64",
    ]
    if recipe != "dt":
        args += [
            "--backbone",
            assets["lm"],
            "--lm-text",
            assets["text"],
            "--lm-seq-len",
            "12",
            "--lm-batch-size",
            "2",
            "--kmeans-clusters",
            "8",
            "--align-anneal-steps",
            "3",
        ]
    return args


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("recipe", ["dt", "wiki", "lamo"])
def test_recipe_cli_end_to_end(assets, tmp_path, recipe):
    run = tmp_path / recipe
    assert main(["train", recipe, *tiny_args(assets, run, recipe)]) == 0
    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["train/loss"])) for r in rows)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["recipe"] == recipe
    if recipe == "wiki":  # official main runs: alignment, no co-training, tied action head, time after the LN
        assert cfg["lm_weight"] == 0.0 and cfg["align_weight"] == 0.1 and "train/align_loss" in rows[0]
        assert cfg["action_head"] == "tied" and cfg["time_embedding"] == "after_ln" and cfg["dropout"] == 0.2
        assert float(rows[-1]["train/align_weight"]) < 0.1 * 0.01  # sigmoid-annealed past align_anneal_steps
    if recipe == "lamo":
        assert cfg["lora"] and cfg["embedding"] == "mlp" and cfg["action_head"] == "mlp" and "train/lm_loss" in rows[0]
        assert "lr/lm_decay" not in rows[0]  # backbone frozen: only LoRA (+ Q/K/V bias), embeddings and heads train
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 4 and {"model", "optimizer", "ranks"} <= set(ck)
    from pyseqrl.models import load_dt, load_dt_policy

    model, meta = load_dt(run / "export")
    assert not any("lora_" in k for k in model.state_dict()) and meta["recipe"] == recipe
    policy = load_dt_policy(run / "export")
    assert policy.act(np.zeros((2, S), np.float32)).shape == (2, A)
    from pyseqrl.policies import load_policy

    obs = np.random.default_rng(0).normal(size=(2, S)).astype(np.float32)
    by_spec = load_policy(f"dt:{run}", None)  # a run directory resolves to its export
    np.testing.assert_allclose(by_spec.act(obs), load_dt_policy(run / "export").act(obs), atol=1e-6)


def test_resume_gives_the_same_losses(assets, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    cotrain = ["--lm-weight", "1.0", "--align-anneal", "linear"]  # Wiki-RL's lm_cotraining variant
    base = tiny_args(assets, full, "wiki", steps=6) + cotrain
    assert main(["train", "wiki", *base]) == 0
    args = tiny_args(assets, part, "wiki", steps=4) + cotrain
    assert main(["train", "wiki", *args]) == 0  # "interrupted" after the checkpoint at step 4
    assert main(["train", "wiki", *tiny_args(assets, part, "wiki", steps=6), *cotrain]) == 0  # resumed
    a, b = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in b] == [str(i) for i in range(1, 7)]
    assert a[0]["train/align_loss"] and not a[-1]["train/align_loss"]  # alignment active, then annealed away
    for key in ("train/loss", "train/action_loss", "train/lm_loss", "train/align_loss"):
        assert [r[key] == "" for r in b] == [r[key] == "" for r in a]
        got = [float(r[key]) for r in b if r[key]]
        np.testing.assert_allclose(got, [float(r[key]) for r in a if r[key]], rtol=1e-6, err_msg=key)


def test_param_groups_apply_the_lm_learning_rate(assets):
    from pyseqrl.models import DecisionTransformer, DTConfig

    torch.manual_seed(0)
    m = DecisionTransformer(DTConfig(state_dim=S, act_dim=A, backbone=assets["lm"], context_len=4, max_ep_len=64))
    groups = param_groups(m, lr=1e-2, lm_lr=1e-4, weight_decay=0.0)
    names = {g["name"]: g for g in groups}
    assert set(names) == {"lm_decay", "lm_no_decay", "rl_decay", "rl_no_decay"}
    assert all(
        p.dim() >= 2 for g in groups if g["name"].endswith("_decay") and "no_" not in g["name"] for p in g["params"]
    )
    assert all(p.dim() < 2 for g in groups if "no_decay" in g["name"] for p in g["params"])
    with_decay = param_groups(m, 1e-2, 1e-4, weight_decay=0.5)
    assert {g["name"]: g["weight_decay"] for g in with_decay} == {
        "lm_decay": 0.5,
        "lm_no_decay": 0.0,
        "rl_decay": 0.5,
        "rl_no_decay": 0.0,
    }
    opt = torch.optim.AdamW(groups)
    before = {id(p): p.detach().clone() for g in groups for p in g["params"]}
    x = [torch.randn(2, 4, S), torch.randn(2, 4, A), torch.randn(2, 4, 1), torch.zeros(2, 4, dtype=torch.long)]
    (m(*x).sum() + m.lm_loss(torch.randint(0, 100, (2, 6)))).backward()
    opt.step()
    # Adam's first step moves each parameter by about lr: the LM lr really reaches the backbone weights
    for g in groups:
        step = max(float((p.detach() - before[id(p)]).abs().max()) for p in g["params"])
        assert g["lr"] * 0.5 < step < g["lr"] * 1.5, (g["name"], step)


def test_recipe_defaults_yaml_and_errors(assets, tmp_path, capsys):
    cfg = parse_args(["--recipe", "lamo", "--dataset", "x.h5"])
    assert cfg.lora and cfg.embedding == "mlp" and cfg.lm_weight == 0.1 and cfg.backbone == "gpt2"
    assert cfg.lm_lr is None and cfg.grad_clip == 0.25 and cfg.weight_decay == 1e-5 and cfg.warmup_steps == 2500
    assert cfg.lm_batch_size == 2 and cfg.lm_seq_len == 1024 and cfg.tanh_action is False
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 7\nlm_weight: 0.3\nlm_lr: 1.0e-5\n")
    cfg = parse_args(["--recipe", "wiki", "--dataset", "x.h5", "--config", str(preset), "--lm-weight", "0.5"])
    assert cfg.steps == 7 and cfg.lm_weight == 0.5 and cfg.lm_lr == 1e-5  # flags > YAML > recipe
    assert resolve(cfg) == cfg  # idempotent: train() resolves again without changing anything
    preset.write_text("stepz: 7\n")
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['stepz'\]"):
        parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(preset)])
    preset.write_text("lr: 1e-4\nsteps: 5.0\n")  # YAML reads 1e-4 as a string and 5.0 as a float
    cfg = parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(preset)])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float) and cfg.steps == 5 and isinstance(cfg.steps, int)
    for bad, match in [
        ("steps: many", "steps: expected int"),
        ("steps: 2.5", "steps: expected int"),
        ("lora: 3", "lora: expected"),
        ("target_returns: 3600", "target_returns: expected"),
    ]:
        preset.write_text(bad + "\n")
        with pytest.raises(ValueError, match=match):
            parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(preset)])
    preset.write_text("recipe: lamo\n")  # a lamo run's config.yaml given to `train wiki`
    with pytest.raises(ValueError, match="preset is for `pyseqrl train lamo`"):
        parse_args(["--recipe", "wiki", "--dataset", "x.h5", "--config", str(preset)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="needs a pretrained --backbone"):
        resolve(TrainConfig(recipe="dt", dataset="x.h5", lm_weight=0.1))
    with pytest.raises(ValueError, match="--dataset is required"):
        resolve(TrainConfig(recipe="dt"))
    with pytest.raises(ValueError, match="recipe must be one of"):
        resolve(TrainConfig(recipe="bc", dataset="x.h5"))
    # the CLI turns these into one-line errors with exit code 1
    assert (
        main(["train", "dt", *tiny_args({**assets, "dataset": str(tmp_path / "none.h5")}, tmp_path / "r", "dt")]) == 1
    )
    assert "none.h5" in capsys.readouterr().err
    assert main(["train", "lamo", *tiny_args({**assets, "lm": str(tmp_path / "nolm")}, tmp_path / "r2", "lamo")]) == 1
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="data_ratio"):
        resolve(TrainConfig(recipe="lamo", dataset="x.h5", data_ratio=0.0))
    with pytest.raises(ValueError, match="backbone_weights must be 'pretrained' or 'untrained', got 'random'"):
        resolve(TrainConfig(recipe="wiki", dataset="x.h5", backbone_weights="random"))  # type: ignore[arg-type]


def test_train_without_resolve_and_resume_refuses_another_dataset(assets, tmp_path):
    from pyseqrl.algos.dt import train
    from pyseqrl.data import load

    run = tmp_path / "run"
    cfg = TrainConfig(
        dataset=assets["dataset"],
        run_dir=str(run),
        steps=2,
        batch_size=4,
        context_len=4,
        hidden_size=16,
        n_layer=1,
        eval_every=0,
        progress=False,
        tensorboard=False,
        max_ep_len=64,
        checkpoint_every=1,
    )
    train(cfg)  # no resolve() needed
    assert torch.load(run / "checkpoint.pt.prev", weights_only=False)["step"] == 1  # the checkpoint before the last
    other = tmp_path / "other.h5"
    load(assets["dataset"]).subset_episodes(0.5, seed=0).save(other)
    with pytest.raises(ValueError, match="cannot resume.*dataset"):
        train(TrainConfig(**{**cfg.__dict__, "dataset": str(other), "steps": 3}))
    with pytest.raises(ValueError, match="cannot resume.*hidden_size"):
        train(TrainConfig(**{**cfg.__dict__, "hidden_size": 32, "steps": 3}))
    # a refused resume changes nothing: config.yaml still describes the checkpoint's run, and is a valid preset
    saved = parse_args(["--recipe", "dt", "--config", str(run / "config.yaml")])
    assert saved == resolve(cfg)
    # a run directory is never started over silently
    with pytest.raises(ValueError, match="already holds a run.*--overwrite"):
        train(TrainConfig(**{**cfg.__dict__, "resume": False}))
    train(TrainConfig(**{**cfg.__dict__, "resume": False, "overwrite": True, "steps": 1}))
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 1
    assert not (run / "checkpoint.pt.prev").exists()  # the old run's checkpoint is no fallback of the new one


def test_unknown_evaluation_env_from_the_dataset_is_refused_before_training(assets, tmp_path):
    pytest.importorskip("gymnasium")
    from pyseqrl.algos.dt import train

    cfg = TrainConfig(
        dataset=assets["dataset"], run_dir=str(tmp_path / "run"), steps=2, batch_size=4, context_len=4,
        hidden_size=16, n_layer=1, eval_every=1, progress=False, tensorboard=False, max_ep_len=64,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"toy.h5: its metadata names the evaluation environment 'Toy-v0'.*--env-id"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    train(TrainConfig(**{**cfg.__dict__, "eval_every": 0}))  # without evaluation the name does not matter


def test_lamo_data_ratio_counts_trajectories(assets, tmp_path):
    run = tmp_path / "ratio"
    assert main(["train", "lamo", *tiny_args(assets, run, "lamo", steps=1), "--data-ratio", "0.5"]) == 0
    from pyseqrl.data import load

    full = load(assets["dataset"])
    assert full.subset_episodes(0.5, seed=0).num_episodes == full.num_episodes // 2


def test_presets_parse():
    for path in sorted((REPO / "configs" / "dt").glob("*.yaml")):
        recipe = path.stem.split("_")[0]
        cfg = parse_args(["--recipe", recipe, "--config", str(path), "--dataset", "x.h5"])
        assert cfg.recipe == recipe


@pytest.mark.slow  # ~16 s idle; two fresh interpreters importing torch can take much longer on a loaded machine
def test_ddp_two_processes_gloo(assets, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "pyseqrl.cli",
        "train",
        "dt",
        *tiny_args(assets, run, "dt", steps=3),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert len(ck["ranks"]) == 2 and ck["step"] == 3
    s0, s1 = (r["sampler"] for r in ck["ranks"])
    assert repr(s0) != repr(s1)  # each rank samples with its own seed


def test_precision_option(assets, tmp_path, monkeypatch):
    from pyseqrl.utils import precision

    if precision.bf16_supported(torch.device("cpu")):
        run = tmp_path / "bf16"
        assert main(["train", "lamo", *tiny_args(assets, run, "lamo", steps=2), "--precision", "bf16"]) == 0
        ck = torch.load(run / "checkpoint.pt", weights_only=False)
        assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # fp32 master
        assert all(np.isfinite(float(r["train/loss"])) for r in read_metrics(run))
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(ValueError, match="precision 'bf16' needs bf16 support"):
        precision.autocast_bf16("bf16", torch.device("cpu"))
    assert precision.autocast_bf16("auto", torch.device("cpu")) is False  # auto falls back silently
    with pytest.raises(ValueError, match="precision must be"):
        resolve(TrainConfig(dataset="x.h5", precision="fp16"))


def test_cli_recipe_is_the_subcommand_and_yaml_numbers_are_coerced(tmp_path, capsys):
    assert main(["train", "dt", "--recipe", "lamo", "--dataset", "x.h5"]) == 1
    assert "--recipe is chosen by the command" in capsys.readouterr().err
    preset = tmp_path / "p.yaml"
    preset.write_text("lr: 1e-4\nsteps: '7'\nlm_weight: 0.5\n")  # YAML reads 1e-4 and '7' as strings
    cfg = parse_args(["--recipe", "wiki", "--dataset", "x.h5", "--config", str(preset)])
    assert cfg.lr == 1e-4 and cfg.steps == 7 and cfg.recipe == "wiki"
    preset.write_text("lr: fast\n")
    with pytest.raises(ValueError, match="lr: expected float, found 'fast'"):
        parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(preset)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse_args(["--recipe", "dt", "--dataset", "x.h5", "--config", str(tmp_path / "none.yaml")])


def test_kmeans_centroids_are_cached_per_table(assets, tmp_path, monkeypatch):
    import pyseqrl.algos.dt as dt_mod
    from pyseqrl.models import DecisionTransformer, DTConfig

    monkeypatch.setenv("PYSEQRL_CACHE", str(tmp_path / "cache"))
    m = DecisionTransformer(DTConfig(state_dim=S, act_dim=A, backbone=assets["lm"], context_len=4, max_ep_len=64))
    first = dt_mod.lm_centroids(m, 8, "cosine", 0)
    files = list((tmp_path / "cache" / "kmeans").glob("*.pt"))
    assert len(files) == 1 and first.shape == (8, 16)
    calls = []
    monkeypatch.setattr(dt_mod, "kmeans", lambda *a, **k: calls.append(1) or first)
    torch.testing.assert_close(dt_mod.lm_centroids(m, 8, "cosine", 0), first)  # from the cache
    assert not calls
    with torch.no_grad():
        m.lm.get_input_embeddings().weight.add_(1.0)  # another table: recomputed, never reused
    dt_mod.lm_centroids(m, 8, "cosine", 0)
    assert calls == [1]


def test_gpu_options_are_checked(assets, tmp_path):
    from pyseqrl.algos.dt import train

    with pytest.raises(ValueError, match="cuda_graph needs --sampler gpu"):
        resolve(TrainConfig(dataset="x.h5", cuda_graph=True))
    with pytest.raises(ValueError, match="cuda_graph trains the action loss only.*lm_weight=0.1"):
        resolve(TrainConfig(recipe="lamo", dataset="x.h5", sampler="gpu", cuda_graph=True))
    if torch.cuda.is_available():
        return
    base = dict(dataset=assets["dataset"], run_dir=str(tmp_path / "r"), steps=2, batch_size=4, context_len=4)
    for extra in ({"sampler": "gpu"}, {"sampler": "gpu", "cuda_graph": True}):
        with pytest.raises(ValueError, match="need a CUDA device; training runs on the CPU here"):
            train(TrainConfig(**base, **extra))
    with pytest.raises(SystemExit):  # an enumerated option takes only its choices
        parse_args(["--recipe", "dt", "--dataset", "x.h5", "--sampler", "tpu"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_trains_like_the_default_path(assets, tmp_path):
    """GPU sampler + fused attention + CUDA graph: the same batches and updates as the default path."""
    from pyseqrl.algos.dt import train
    from pyseqrl.ops import _cuda

    if not _cuda.compiled_with_cuda():
        pytest.skip("pyseqrl built without CUDA kernels")
    args = dict(
        dataset=assets["dataset"], steps=12, batch_size=4, context_len=4, hidden_size=16, n_layer=1, dropout=0.0,
        eval_every=0, log_every=1, checkpoint_every=6, progress=False, tensorboard=False, warmup_steps=4,
        device="cuda", max_ep_len=64,
    )  # fmt: skip
    train(TrainConfig(**args, run_dir=str(tmp_path / "plain")))
    train(
        TrainConfig(
            **args, run_dir=str(tmp_path / "gpu"), sampler="gpu", cuda_graph=True, attn_implementation="pyseqrl"
        )
    )

    def losses(run: str) -> list[float]:
        with open(tmp_path / run / "metrics.csv") as f:
            return [float(r["train/action_loss"]) for r in csv.DictReader(f) if r.get("train/action_loss")]

    plain, gpu = losses("plain"), losses("gpu")
    assert len(plain) == len(gpu) == 12
    np.testing.assert_allclose(gpu, plain, rtol=2e-3, atol=1e-5)  # same batches; kernels differ in rounding


def test_right_padding_trains_like_left_padding(assets, tmp_path):
    """--padding right lays segments out with the real steps first; the losses are those of left padding."""
    from pyseqrl.algos.dt import train

    args = dict(
        dataset=assets["dataset"], steps=5, batch_size=8, context_len=6, hidden_size=16, n_layer=2, dropout=0.0,
        eval_every=0, log_every=1, progress=False, tensorboard=False, warmup_steps=2, max_ep_len=64, export=False,
    )  # fmt: skip
    train(TrainConfig(**args, run_dir=str(tmp_path / "left")))
    train(TrainConfig(**args, run_dir=str(tmp_path / "right"), padding="right"))
    left, right = (read_metrics(tmp_path / run) for run in ("left", "right"))
    np.testing.assert_allclose(
        [float(r["train/action_loss"]) for r in right], [float(r["train/action_loss"]) for r in left], rtol=1e-4
    )
