"""pyseqrl.policies: simple policies and wrappers, the spec registry, SB3 zoo agents and CS285 experts."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pyseqrl.policies import (
    EpsilonRandom,
    GaussianNoise,
    Policy,
    RandomPolicy,
    load_policy,
    register_policy_loader,
    registered_schemes,
)
from pyseqrl.policies._pickle import SafeUnpickler

warnings.filterwarnings("ignore", message=".*out of date.*")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POLICIES = SHARED / "data" / "policies"
needs_shared = pytest.mark.skipif(not POLICIES.exists(), reason="../shared/data/policies not available")


class _Env:
    """Just what loaders need from a VectorEnv."""

    def __init__(self, s: int, a: int, env_id: str = "Fake-v0", high: float = 1.0) -> None:
        self.env_id, self.observation_dim, self.action_dim = env_id, s, a
        self.action_low = np.full(a, -high, np.float32)
        self.action_high = np.full(a, high, np.float32)
        self.max_episode_steps = 1000


class _Constant(Policy):
    name = "const"

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.full((len(observations), 2), 0.9, np.float32)


def test_random_policy_bounds_and_seed() -> None:
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32)
    a = RandomPolicy(low, high, seed=3).act(np.zeros((1000, 4), np.float32))
    assert a.shape == (1000, 2) and a.dtype == np.float32
    assert (a >= low).all() and (a <= high).all() and a[:, 1].mean() == pytest.approx(2.5, abs=0.2)
    assert np.array_equal(a, RandomPolicy(low, high, seed=3).act(np.zeros((1000, 4))))
    with pytest.raises(ValueError, match="low <= high"):
        RandomPolicy(high, low)


def test_gaussian_noise_is_relative_and_clipped() -> None:
    policy = GaussianNoise(_Constant(), std=0.1, action_low=-np.ones(2), action_high=np.ones(2), seed=0)
    a = policy.act(np.zeros((20000, 3), np.float32))
    assert a.max() <= 1.0 and policy.name == "const+gauss(0.1)"
    inside = a[a < 1.0]  # mean 0.9, std 0.1: about 16% clipped at 1
    assert 0.80 < inside.mean() < 0.9 and (a == 1.0).mean() == pytest.approx(0.16, abs=0.02)
    with pytest.raises(ValueError, match="std must be >= 0"):
        GaussianNoise(_Constant(), std=-1)


def test_epsilon_random() -> None:
    obs = np.zeros((5000, 3), np.float32)
    low, high = -np.ones(2), np.ones(2)
    assert np.all(EpsilonRandom(_Constant(), 0.0, low, high).act(obs) == 0.9)
    a = EpsilonRandom(_Constant(), 0.3, low, high, seed=1).act(obs)
    assert (a[:, 0] != 0.9).mean() == pytest.approx(0.3, abs=0.03) and np.abs(a).max() <= 1.0
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\]"):
        EpsilonRandom(_Constant(), 1.5, low, high)


def test_wrappers_forward_state_calls_and_with_target() -> None:
    calls: list = []

    class Conditioned(_Constant):
        def __init__(self, target: float | None = None) -> None:
            self.target = target

        def reset(self, env_ids: np.ndarray) -> None:
            calls.append(("reset", env_ids.tolist()))

        def observe(self, rewards: np.ndarray) -> None:
            calls.append(("observe", rewards.tolist()))

        def with_target(self, target: float) -> Conditioned:
            return Conditioned(target)

    wrapped = GaussianNoise(Conditioned(), std=0.0)
    wrapped.reset(np.array([1]))
    wrapped.observe(np.array([2.0]))
    assert calls == [("reset", [1]), ("observe", [2.0])]
    conditioned = wrapped.with_target(3600.0)
    assert isinstance(conditioned, GaussianNoise) and conditioned.policy.target == 3600.0
    assert wrapped.policy.target is None


def test_registry_specs_and_extension(tmp_path: Path) -> None:
    env = _Env(4, 2)
    policy = load_policy("random", env, seed=5)
    assert isinstance(policy, RandomPolicy)
    assert np.array_equal(policy.act(np.zeros((3, 4))), load_policy("random:5", env).act(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="unknown policy spec 'nope:x'.*'random'"):
        load_policy("nope:x", env)
    with pytest.raises(ValueError, match="needs env="):
        load_policy("random")

    register_policy_loader("testconst", lambda arg, env, **kw: _Constant(), overwrite=True)
    assert "testconst" in registered_schemes()
    assert load_policy("testconst:whatever", env).act(np.zeros((1, 4)))[0, 0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loader("testconst", lambda arg, env, **kw: _Constant())

    # lazy "module:function" loaders, and pyseqrl checkpoints dispatched on checkpoint["algo"]
    register_policy_loader("testlazy", "pyseqrl.policies.simple:RandomPolicy", overwrite=True)
    register_policy_loader("testbroken", "pyseqrl.no_such_module:load", overwrite=True)
    with pytest.raises(ValueError, match="cannot import its loader"):
        load_policy("testbroken:x", env)
    from pyseqrl.utils.checkpoint import save_torch

    save_torch({"algo": "testconst", "weights": {}}, tmp_path / "ckpt.pt")
    assert isinstance(load_policy(f"pyseqrl:{tmp_path / 'ckpt.pt'}", env), _Constant)
    save_torch({"weights": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"checkpoint\['algo'\]"):
        load_policy(f"pyseqrl:{tmp_path / 'bad.pt'}", env)


def test_safe_unpickler_refuses_code() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import io

    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        SafeUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    arrays = {"a": np.arange(3.0), "b": [np.float32(1.0)]}
    back = SafeUnpickler(io.BytesIO(pickle.dumps(arrays))).load()
    assert np.array_equal(back["a"], arrays["a"])


# -- real agents from ../shared ------------------------------------------------------------------------------
SB3_AGENTS = [
    "sac_Hopper",
    "tqc_Walker2d",
    "ppo_Walker2d",
    "ppo_HalfCheetah",
    "a2c_Hopper",
    "trpo_Hopper",
    "ars_Walker2d",
]


def _sb3_reference(name: str):
    """SB3 itself: model.predict(deterministic=True) behind VecNormalize (and TimeFeatureWrapper for ppo_Walker2d)."""
    import gymnasium as gym
    import yaml  # noqa: F401
    from stable_baselines3.common.vec_env import DummyVecEnv

    algo, env_name = name.split("_")
    stem = POLICIES / f"{algo}_{env_name}-v3"
    if algo in ("sac", "ppo", "a2c"):
        import stable_baselines3 as sb3

        cls = {"sac": sb3.SAC, "ppo": sb3.PPO, "a2c": sb3.A2C}[algo]
    else:
        import sb3_contrib

        cls = {"tqc": sb3_contrib.TQC, "trpo": sb3_contrib.TRPO, "ars": sb3_contrib.ARS}[algo]
    time_feature = "TimeFeatureWrapper" in (Path(f"{stem}_config.yml").read_text())

    def make_env():
        env = gym.make(f"{env_name}-v4")
        if time_feature:
            from sb3_contrib.common.wrappers import TimeFeatureWrapper

            env = TimeFeatureWrapper(env)
        return env

    probe = make_env()
    custom = {
        "observation_space": probe.observation_space,
        "action_space": probe.action_space,
        "lr_schedule": lambda _: 0.0,
        "learning_rate": 0.0,
        "clip_range": lambda _: 0.0,
    }
    model = cls.load(f"{stem}.zip", device="cpu", custom_objects=custom)
    vecnorm = None
    if Path(f"{stem}_vecnormalize.pkl").exists():  # SB3's own VecNormalize object, gym classes remapped

        class LegacyUnpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if module == "gym" or module.startswith("gym."):
                    module = "gymnasium" + module[3:]
                if module.startswith("numpy.core"):
                    module = "numpy._core" + module[len("numpy.core") :]
                return super().find_class(module, name)

        with open(f"{stem}_vecnormalize.pkl", "rb") as f:
            vecnorm = LegacyUnpickler(f).load()
        vecnorm.observation_space = probe.observation_space
        vecnorm.set_venv(DummyVecEnv([make_env]))
        vecnorm.training, vecnorm.norm_reward = False, False

    def act(obs: np.ndarray) -> np.ndarray:
        if vecnorm is not None:
            obs = vecnorm.normalize_obs(obs)
        return model.predict(obs, deterministic=True)[0]

    return act, probe, time_feature


@needs_shared
@pytest.mark.parametrize("name", SB3_AGENTS)
def test_sb3_agents_act_like_sb3(name: str) -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("sb3_contrib")
    import torch

    torch.set_num_threads(1)
    act_ref, ref_env, time_feature = _sb3_reference(name)
    algo, env_name = name.split("_")
    env = _Env(11 if env_name == "Hopper" else 17, 3 if env_name == "Hopper" else 6, f"{env_name}-v4")
    policy = load_policy(f"sb3:{POLICIES / f'{algo}_{env_name}-v3.zip'}", env)
    policy.reset(np.array([0]))
    obs, _ = ref_env.reset(seed=7)
    for _ in range(25):  # follow SB3's own trajectory; the time feature counts steps since reset
        a_ref = act_ref(obs[None])
        a = policy.act((obs[:-1] if time_feature else obs)[None].astype(np.float32))
        np.testing.assert_allclose(a, a_ref, atol=1e-5)
        obs, *_ = ref_env.step(a_ref[0])


@needs_shared
def test_sb3_loader_works_without_stable_baselines3(tmp_path) -> None:
    code = (
        "import sys; sys.modules['stable_baselines3'] = None; sys.modules['sb3_contrib'] = None\n"
        "import numpy as np\n"
        "from pyseqrl.policies.sb3 import load_sb3\n"
        f"p = load_sb3(r'{POLICIES / 'ppo_Walker2d-v3.zip'}')\n"
        "assert p.time_feature_max_steps == 1000 and p.obs_std is not None\n"
        "print(p.act(np.zeros((2, 17), np.float32)).shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )  # not the source tree: `-c` puts the cwd first on sys.path
    assert out.returncode == 0, out.stderr
    assert "(2, 6)" in out.stdout


@needs_shared
def test_sb3_loader_checks_sizes() -> None:
    with pytest.raises(ValueError, match="expects 11 inputs but the environment gives 17"):
        load_policy(f"sb3:{POLICIES / 'sac_Hopper-v3.zip'}", _Env(17, 3))
    with pytest.raises(ValueError, match="outputs 3 actions but the environment has 6"):
        load_policy(f"sb3:{POLICIES / 'sac_Hopper-v3.zip'}", _Env(11, 6))
    with pytest.raises(FileNotFoundError):
        load_policy("sb3:/nonexistent/agent.zip", _Env(11, 3))


@needs_shared
@pytest.mark.parametrize("env_name", ["Hopper", "Walker2d", "HalfCheetah"])
def test_cs285_expert_reproduces_its_recorded_actions(env_name: str) -> None:
    from pyseqrl.policies._pickle import safe_load

    data = safe_load(POLICIES / "cs285" / f"expert_data_{env_name}-v4.pkl")
    s, a = data[0]["observation"].shape[1], data[0]["action"].shape[1]
    unclipped = load_policy(f"cs285:{POLICIES / 'cs285' / f'policy_{env_name}.pkl'}", _Env(s, a), clip=False)
    np.testing.assert_allclose(unclipped.act(data[0]["observation"]), data[0]["action"], atol=1e-4)
    clipped = load_policy(str(POLICIES / "cs285" / f"policy_{env_name}.pkl"), _Env(s, a))  # bare .pkl -> cs285
    assert np.abs(clipped.act(data[0]["observation"])).max() <= 1.0


@needs_shared
def test_cs285_checks_sizes() -> None:
    with pytest.raises(ValueError, match=r"policy_Ant.pkl: the policy takes 111 observations and gives 8 actions"):
        load_policy(f"cs285:{POLICIES / 'cs285' / 'policy_Ant.pkl'}", _Env(27, 8, "Ant-v4"))


@pytest.mark.parametrize("algo", ["SAC", "TD3", "PPO", "A2C"])
def test_fresh_sb3_agents_on_bounded_actions(algo: str, tmp_path: Path) -> None:
    """SB3's current save format, and action bounds other than [-1, 1] (Pendulum: [-2, 2])."""
    sb3 = pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    import torch

    torch.set_num_threads(1)
    kwargs = {"policy_kwargs": {"net_arch": [32, 32]}}
    if algo in ("PPO", "A2C"):
        kwargs["policy_kwargs"]["activation_fn"] = torch.nn.ReLU  # read back from the zip's data
    model = getattr(sb3, algo)("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", **kwargs)
    with torch.no_grad():  # make the deterministic actions reach the bounds
        for p in model.policy.parameters():
            p.mul_(8.0)
    model.save(tmp_path / "agent.zip")
    policy = load_policy(f"sb3:{tmp_path / 'agent.zip'}", _Env(3, 1, "Pendulum-v1", high=2.0))
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(policy.act(obs), expected, atol=1e-5)
    without_env = load_policy(f"sb3:{tmp_path / 'agent.zip'}")  # bounds read from the zip's action space
    np.testing.assert_allclose(without_env.act(obs), expected, atol=1e-5)
