"""Every bad input to the ``pyseqrl`` command line ends in one line ``pyseqrl <command>: error: ...`` that names
the offending option or file and exit code 1 (usage errors: 2), never a traceback; Ctrl-C exits with 130 and says
how to resume; PYSEQRL_DEBUG=1 shows the traceback. Each case runs the real entry point, checked before any work."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyseqrl._core")
pytest.importorskip("torch")
from conftest import random_dataset
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyseqrl.cli import main
from pyseqrl.utils import checks


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A tiny dataset, files of the wrong kind, a directory and a run directory holding a SAC checkpoint."""
    from pyseqrl.utils.checkpoint import save_torch

    root = tmp_path_factory.mktemp("bad_inputs")
    random_dataset([12, 12], obs_dim=3, act_dim=1, next_obs=True, metadata={"env_id": "Pendulum-v1"}).save(
        root / "data.h5"
    )
    (root / "text.txt").write_text("hello, not a checkpoint\n")
    (root / "notzip.zip").write_text("hello, not a zip\n")
    (root / "adir").mkdir()
    agent = {"hidden_dims": (8, 8), "num_critics": 2, "critic_layer_norm": True, "actor_layer_norm": True}
    config = {"env_id": "Pendulum-v1", "buffer_size": 1_000_000, "agent": agent}
    save_torch({"method": "sac", "algo": "sac", "config": config, "step": 1}, root / "sacrun" / "checkpoint.pt")
    (root / "lr.yaml").write_text("lr: fast\n")
    names = {"data": "data.h5", "text": "text.txt", "notzip": "notzip.zip", "adir": "adir", "sacrun": "sacrun"}
    return {key: str(root / name) for key, name in {**names, "lryaml": "lr.yaml"}.items()} | {"root": str(root)}


CALQL = ["train", "calql", "--dataset", "{data}", "--agent.hidden-dims", "8", "8", "--agent.num-critics", "2"]
CALQL += ["--batch-size", "4", "--eval-every", "0", "--no-progress", "--no-tensorboard", "--steps", "2"]
SAC = ["train", "sac", "--env-id", "Pendulum-v1", "--total-steps", "4", "--learning-starts", "2", "--batch-size", "2"]
SAC += ["--agent.hidden-dims", "8", "8", "--agent.num-critics", "2", "--eval-every", "0", "--no-progress"]
WSRL = ["train", "wsrl", "--env-id", "Pendulum-v1", "--total-steps", "4", "--no-progress", "--eval-every", "0"]
DT = ["train", "dt", "--dataset", "{data}", "--steps", "1", "--no-progress", "--eval-every", "0"]
EVAL = ["evaluate", "--env-id", "Pendulum-v1", "--episodes", "1", "--no-progress"]
COLLECT = ["collect", "--env-id", "Pendulum-v1", "--policy", "random", "--steps", "5", "--no-progress"]

# (command line, exit code, what the error line must contain); "{name}" is a file of the fixture, "{run}" a fresh
# run directory
CASES: list[tuple[list[str], int, str]] = [
    # ---- usage errors
    (["train"], 2, "usage: pyseqrl train"),
    (["train", "nope"], 2, "unknown trainer 'nope'"),
    (["nope"], 2, "unknown command 'nope'"),
    (["evaluate", "--env-id", "Pendulum-v1"], 2, "--policy"),
    ([*SAC, "--agent.gamma", "high", "--run-dir", "{run}"], 2, "--agent.gamma"),
    # ---- policies and their files
    ([*EVAL, "--policy", "builtin:Hopper-v4"], 1, "sac_Hopper-v4.pt: the policy takes 11 observations"),
    ([*EVAL, "--policy", "sb3:{notzip}"], 1, "notzip.zip is not a readable stable-baselines3 save"),
    ([*EVAL, "--policy", "sb3:{adir}"], 1, "adir is a directory"),
    ([*EVAL, "--policy", "sac:{text}"], 1, "text.txt"),
    ([*EVAL, "--policy", "sac:{data}"], 1, "data.h5"),
    ([*EVAL, "--policy", "dt:{text}"], 1, "text.txt"),
    ([*EVAL, "--policy", "nope:x"], 1, "unknown policy spec 'nope:x'"),
    # ---- evaluate and collect options
    ([*EVAL, "--policy", "random", "--ref-min", "1", "--ref-max", "1"], 1, "ref_max must be greater than ref_min"),
    ([*EVAL, "--policy", "random", "--max-episode-steps", "0"], 1, "max_episode_steps must be an integer >= 1"),
    (["evaluate", "--policy", "random", "--env-id", "Pendulum-v1", "--episodes", "0"], 1, "episodes must be"),
    (["evaluate", "--policy", "random", "--env-id", "Nope-v9"], 1, "unknown environment id 'Nope-v9'"),
    ([*EVAL, "--policy", "random", "--num-envs", "0"], 1, "num_envs must be an integer >= 1"),
    ([*COLLECT, "--out", "{adir}"], 1, "--out '{adir}' is a directory"),
    ([*COLLECT, "--out", "{text}/x.h5"], 1, "is a file, not a directory"),
    (["collect", "--env-id", "Pendulum-v1", "--out", "{root}/x.h5"], 1, "--recipe custom needs --policy"),
    # ---- data
    (["data", "info", "{text}"], 1, "text.txt': unknown dataset format"),
    (["data", "info", "{adir}"], 1, "adir' is a directory but not a Minari dataset"),
    (["data", "info", "{root}/missing.h5"], 1, "missing.h5' does not exist"),
    (["data", "convert", "{data}", "{adir}"], 1, "dst '{adir}' is a directory"),
    (["data", "subset", "{data}", "{root}/s.h5", "--fraction", "0"], 1, "fraction"),
    # ---- Cal-QL: ranges, environment, resume of another trainer's run
    (
        [*CALQL, "--agent.gamma", "1.5", "--run-dir", "{run}"],
        1,
        "agent.gamma must be a finite number in (0, 1], got 1.5",
    ),
    ([*CALQL, "--agent.tau", "2", "--run-dir", "{run}"], 1, "agent.tau must be a finite number in (0, 1], got 2.0"),
    ([*CALQL, "--agent.actor-lr", "nan", "--run-dir", "{run}"], 1, "agent.actor_lr must be a finite number > 0"),
    ([*CALQL, "--agent.critic-lr", "-1", "--run-dir", "{run}"], 1, "agent.critic_lr must be a finite number > 0"),
    ([*CALQL, "--batch-size", "0", "--run-dir", "{run}"], 1, "batch_size must be an integer >= 1, got 0"),
    ([*CALQL, "--steps", "-3", "--run-dir", "{run}"], 1, "steps must be an integer >= 1, got -3"),
    ([*CALQL, "--steps", "0", "--run-dir", "{run}"], 1, "steps must be an integer >= 1, got 0"),
    ([*CALQL, "--cql.temperature", "0", "--run-dir", "{run}"], 1, "cql.temperature must be a finite number > 0"),
    ([*CALQL, "--env-id", "Nope-v9", "--run-dir", "{run}"], 1, "unknown environment id 'Nope-v9'"),
    ([*CALQL, "--run-dir", "{sacrun}"], 1, "was not written by `pyseqrl train calql` (its method is 'sac')"),
    ([*CALQL, "--dataset", "{root}/missing.h5", "--run-dir", "{run}"], 1, "missing.h5' does not exist"),
    ([*CALQL, "--log-every", "0", "--run-dir", "{run}"], 1, "log_every must be an integer >= 1"),
    ([*CALQL, "--run-dir", "{text}"], 1, "is a file, expected a directory"),
    # ---- SAC
    ([*SAC, "--utd", "0", "--run-dir", "{run}"], 1, "utd must be an integer >= 1, got 0"),
    ([*SAC, "--agent.num-critics", "1", "--run-dir", "{run}"], 1, "agent.critic_subsample must be an integer in [1"),
    ([*SAC, "--env-id", "Nope-v9", "--run-dir", "{run}"], 1, "unknown environment id 'Nope-v9'"),
    ([*SAC, "--total-steps", "0", "--run-dir", "{run}"], 1, "total_steps must be an integer >= 1, got 0"),
    ([*SAC, "--agent.hidden-dims", "0", "--run-dir", "{run}"], 1, "agent.hidden_dims must be an integer >= 1"),
    (
        [*SAC, "--run-dir", "{sacrun}", "--agent.num-critics", "3"],
        1,
        "cannot resume {sacrun}/checkpoint.pt with other options: agent.num_critics 2 -> 3;",
    ),
    ([*SAC, "--save-replay", "{adir}", "--run-dir", "{run}"], 1, "save_replay '{adir}' is a directory"),
    # ---- WSRL
    ([*WSRL, "--checkpoint", "{root}/missing.pt", "--run-dir", "{run}"], 1, "missing.pt' does not exist"),
    ([*WSRL, "--checkpoint", "{text}", "--run-dir", "{run}"], 1, "text.txt' is corrupt or not a torch checkpoint"),
    ([*WSRL, "--checkpoint", "{sacrun}/checkpoint.pt", "--utd", "0", "--run-dir", "{run}"], 1, "utd must be"),
    ([*WSRL, "--mode", "scratch", "--warmup-steps", "-1", "--run-dir", "{run}"], 1, "warmup_steps must be"),
    # ---- Decision Transformer
    ([*DT, "--n-head", "0", "--run-dir", "{run}"], 1, "n_head must be an integer >= 1, got 0"),
    ([*DT, "--n-head", "3", "--run-dir", "{run}"], 1, "hidden_size must be divisible by n_head=3, got 128"),
    ([*DT, "--lr", "-1", "--run-dir", "{run}"], 1, "lr must be a finite number > 0, got -1.0"),
    ([*DT, "--dropout", "1.5", "--run-dir", "{run}"], 1, "dropout must be a finite number in [0, 1)"),
    ([*DT, "--context-len", "0", "--run-dir", "{run}"], 1, "context_len must be an integer >= 1, got 0"),
    ([*DT, "--grad-clip", "inf", "--run-dir", "{run}"], 1, "grad_clip must be a finite number > 0"),
    ([*DT, "--env-id", "Nope-v9", "--run-dir", "{run}"], 1, "unknown environment id 'Nope-v9'"),
    ([*DT, "--config", "{lryaml}", "--run-dir", "{run}"], 1, "lr: expected float, found 'fast'"),
]


def _fill(text: str, files: dict[str, str], run: str) -> str:
    return text.format(run=run, **files)


@pytest.mark.parametrize(
    ("argv", "code", "message"), CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in enumerate(CASES)]
)
def test_bad_input_is_one_line(argv, code, message, files, tmp_path, capfd) -> None:
    run = str(tmp_path / "run")
    argv, message = [_fill(a, files, run) for a in argv], _fill(message, files, run)
    try:
        rc = main(argv)
    except SystemExit as e:  # the option parser's usage errors
        rc = e.code
    err = capfd.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    assert message in err, err
    if code == 1:
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and lines[0] == err.rstrip("\n").splitlines()[-1], err
        assert lines[0].startswith(f"pyseqrl {argv[0] if argv[0] != 'train' else 'train ' + argv[1]}: error: ")
        assert not os.path.exists(Path(run) / "checkpoint.pt")  # refused before any work


def _cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pyseqrl.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        **kwargs,
    )


def test_real_process_prints_one_line_and_debug_shows_the_traceback(files) -> None:
    args = ["evaluate", "--policy", f"sb3:{files['notzip']}", "--env-id", "Pendulum-v1", "--episodes", "1"]
    out, err = _cli(*args).communicate(timeout=120)
    lines = err.strip().splitlines()  # (gymnasium may warn about Pendulum's bounds first)
    assert lines[-1] == (
        f"pyseqrl evaluate: error: {files['notzip']} is not a readable stable-baselines3 save (a zip file): "
        "File is not a zip file"
    )
    assert "Traceback" not in err and sum("error" in line for line in lines) == 1
    proc = _cli(*args, env={"PYSEQRL_DEBUG": "1"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" in err and "BadZipFile" in err
    proc = _cli("train")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == "" and err.startswith("usage: pyseqrl train")


def test_ctrl_c_exits_130_and_says_how_to_resume(files, tmp_path) -> None:
    run = tmp_path / "run"
    args = [_fill(a, files, "") for a in CALQL[:-1]]
    # a process started in the background inherits an ignored SIGINT: give it the default back, as a terminal does
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = _cli(*args, "1000000", "--checkpoint-every", "2", "--run-dir", str(run), preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "pyseqrl train calql: interrupted (run the same command again to resume)"
    assert "Traceback" not in err


def test_missing_optional_dependency_names_the_extra(capfd, monkeypatch) -> None:
    import pyseqrl.evaluation

    def missing(argv):
        raise ModuleNotFoundError("No module named 'stable_baselines3'", name="stable_baselines3")

    monkeypatch.setattr(pyseqrl.evaluation, "main", missing)
    assert main(["evaluate", "--policy", "sb3:x.zip"]) == 1
    assert capfd.readouterr().err == (
        "pyseqrl evaluate: error: this command needs the optional package 'stable_baselines3': "
        "pip install 'pyseqrl[sb3]'\n"
    )


# ---- fuzz: the range rules and the YAML presets ----------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.booleans(), st.text(max_size=3), st.none()))
def test_fraction_accepts_exactly_finite_numbers_in_0_1(value) -> None:
    ok = not isinstance(value, (bool, str, type(None))) and math.isfinite(value) and 0 < value <= 1
    if ok:
        checks.fraction("gamma", value)
    else:
        with pytest.raises(ValueError, match=r"^gamma must be a finite number in \(0, 1\], got "):
            checks.fraction("gamma", value)


YAML_VALUES = st.one_of(
    st.floats(allow_nan=True),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.sampled_from(["gamma", "num_critics", "hidden_dims", "nope"]), st.integers(-2, 5), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["utd", "batch_size", "agent", "env_id", "stop_return", "log_every", "x"]),
        YAML_VALUES,
        max_size=3,
    )
)
def test_sac_presets_are_accepted_or_refused_with_a_value_error(tmp_path_factory, values) -> None:
    """A YAML preset either gives a config that passes the range checks or raises ValueError before any work."""
    import yaml

    from pyseqrl.algos.sac import SACConfig, check_config
    from pyseqrl.utils.runs import parse_config

    preset = tmp_path_factory.mktemp("preset") / "p.yaml"
    preset.write_text(yaml.safe_dump(values))
    try:
        cfg = parse_config(SACConfig, ["--config", str(preset)], "")
        check_config(cfg)
    except ValueError:
        return
    assert cfg.utd >= 1 and cfg.batch_size >= 1 and 0 < cfg.agent.gamma <= 1
    assert all(isinstance(w, int) and w >= 1 for w in cfg.agent.hidden_dims)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([".h5", ".hdf5", ".pkl", ".bin"]))
@example(b"M\x00\x00\x82\x01", ".pkl")  # unpickling raised "unregistered extension code 1" without the file name
def test_loading_random_bytes_is_a_value_error_naming_the_file(tmp_path_factory, data, suffix) -> None:
    from pyseqrl.data import load

    path = tmp_path_factory.mktemp("bytes") / f"f{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=str(path.name)):
        load(path)


def test_output_file_rule() -> None:
    with pytest.raises(ValueError, match="must be a file path, got an empty string"):
        checks.output_file("--out", "")
    checks.output_file("--out", "/nonexistent-dir-for-sure/x.h5")  # created when written


def test_a_closed_stdout_stops_quietly() -> None:
    """``pyseqrl ... | head``: when the reader goes away, the command stops without an error message."""
    code = (
        "import sys, pyseqrl.reproduce as r\n"
        "def spam(argv):\n"
        "    for _ in range(200_000):\n"
        "        print('x' * 60)\n"
        "r.main = spam\n"
        "from pyseqrl.cli import main\n"
        "sys.exit(main(['reproduce']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.read(100)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b""
