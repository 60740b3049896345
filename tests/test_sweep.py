"""Sweeps (pyseqrl.sweep): runs to completion, survives killed and failing runs, resumes, reports, aggregates.

The runs here are a toy job (below) that counts steps and checkpoints after each, in real run processes.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyseqrl import sweep as sw

HERE = Path(__file__).resolve().parent
JOB = "test_sweep:toy_job"


def toy_job(run_dir: Path, steps: int, sleep: float = 0.0, fail_at: int = 0, fail_times: int = 0) -> dict:
    """Count to ``steps``, checkpointing each step; raise at step ``fail_at`` in the first ``fail_times`` starts.

    Every start appends "<pid> <step it starts from>" to starts.txt. Checkpoints are plain pickles written
    atomically (what torch.load reads too), so the run processes start without importing torch."""
    from pyseqrl.utils.checkpoint import atomic_write

    ckpt = run_dir / "checkpoint.pt"
    step = pickle.loads(ckpt.read_bytes())["step"] if ckpt.exists() else 0
    starts = run_dir / "starts.txt"
    with open(starts, "a") as f:
        f.write(f"{os.getpid()} {step}\n")
    n_starts = len(starts.read_text().splitlines())
    while step < steps:
        step += 1
        time.sleep(sleep)
        if step == fail_at and n_starts <= fail_times:
            raise RuntimeError(f"injected failure at step {step}")
        atomic_write(ckpt, lambda f, step=step: pickle.dump({"step": step}, f))
    return {"steps": list(range(1, steps + 1)), "scores": [float(s) for s in range(1, steps + 1)]}


def starts(root: Path, name: str) -> list[tuple[int, int]]:
    path = root / name / "starts.txt"
    if not path.exists():
        return []
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def job_importable(monkeypatch):
    """Run processes import this module by name."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def runs(n: int = 3, steps: int = 3, **args) -> list[sw.Run]:
    return [sw.Run(f"env/toy-s{i}", JOB, {"steps": steps, **args}, steps=steps) for i in range(n)]


def test_sweep_runs_to_completion_and_does_not_rerun_finished_runs(tmp_path):
    plan = runs(3)
    states = sw.run_sweep(tmp_path, plan, workers=2)
    assert {s.state for s in states.values()} == {"finished"}
    for r in plan:
        assert starts(tmp_path, r.name)[0][1] == 0
        assert json.loads((tmp_path / r.name / sw.FINISHED).read_text())["result"]["scores"] == [1.0, 2.0, 3.0]
    mtimes = {r.name: (tmp_path / r.name / sw.FINISHED).stat().st_mtime_ns for r in plan}

    more = [*plan, sw.Run("env/toy-s3", JOB, {"steps": 2}, steps=2)]  # a seed added later
    states = sw.run_sweep(tmp_path, more, workers=2)
    assert {s.state for s in states.values()} == {"finished"}
    for r in plan:  # not started again
        assert len(starts(tmp_path, r.name)) == 1
        assert (tmp_path / r.name / sw.FINISHED).stat().st_mtime_ns == mtimes[r.name]
    assert len(starts(tmp_path, "env/toy-s3")) == 1


def test_injected_failure_is_retried_from_the_checkpoint(tmp_path, capsys):
    plan = [*runs(1), sw.Run("env/flaky", JOB, {"steps": 4, "fail_at": 3, "fail_times": 1}, steps=4)]
    states = sw.run_sweep(tmp_path, plan, workers=2)
    assert states["env/flaky"].state == "finished"
    assert [s for _, s in starts(tmp_path, "env/flaky")] == [0, 2]  # the retry resumed at its last checkpoint
    assert not (tmp_path / "env/flaky" / sw.FAILED).exists()
    assert "injected failure at step 3" in capsys.readouterr().out


def test_a_run_that_keeps_failing_is_reported_and_the_sweep_goes_on(tmp_path):
    bad = sw.Run("env/bad", JOB, {"steps": 3, "fail_at": 2, "fail_times": 99}, steps=3)
    after_bad = sw.Run("env/after-bad", JOB, {"steps": 1}, steps=1, after=("env/bad",))
    states = sw.run_sweep(tmp_path, [bad, after_bad, *runs(2)], workers=2, retries=2)
    assert states["env/toy-s0"].state == states["env/toy-s1"].state == "finished"
    assert states["env/bad"].state == "failed" and "injected failure at step 2" in states["env/bad"].error
    # three starts: the first, a resume from step 1, then from scratch (its checkpoint moved aside)
    assert [s for _, s in starts(tmp_path, "env/bad")] == [0, 1, 0]
    assert (tmp_path / "env/bad" / "checkpoint.pt.failed-2").exists()
    assert states["env/after-bad"].state == "failed" and "env/bad" in states["env/after-bad"].error
    assert "injected failure at step 2" in json.loads((tmp_path / "env/bad" / sw.FAILED).read_text())["error"]
    table = sw.status_table(tmp_path, [bad, after_bad])
    assert "env/bad" in table and "failed at step 1 of 3: RuntimeError: injected failure at step 2" in table


def test_a_killed_run_process_is_resumed(tmp_path):
    plan = [sw.Run("env/slow", JOB, {"steps": 40, "sleep": 0.05}, steps=40)]
    ckpt = tmp_path / "env/slow" / "checkpoint.pt"

    def kill_it_midway():
        while not ckpt.exists() or sw.checkpoint_step(ckpt) < 5:
            time.sleep(0.05)
        pid = starts(tmp_path, "env/slow")[0][0]
        os.kill(pid, signal.SIGKILL)

    import threading

    killer = threading.Thread(target=kill_it_midway, daemon=True)
    killer.start()
    states = sw.run_sweep(tmp_path, plan, workers=1, poll=0.05)
    killer.join(5)
    assert states["env/slow"].state == "finished"
    (_, first), (_, second) = starts(tmp_path, "env/slow")
    assert first == 0 and second >= 5


SWEEP_SCRIPT = """
import sys
from pyseqrl import sweep as sw
runs = [sw.Run(f"env/toy-s{i}", "test_sweep:toy_job", {"steps": n, "sleep": 0.05}, steps=n)
        for i, n in enumerate([2, 2, 60, 60])]
if sys.argv[2] == "status":
    print(sw.status_table(sys.argv[1], runs))
else:
    sw.run_sweep(sys.argv[1], runs, workers=2, poll=0.05)
"""


def test_a_stopped_sweep_restarts_where_it_was(tmp_path):
    """Kill the whole sweep mid-way (its run processes die with it), check --status, then run it again."""
    script = tmp_path / "sweep_script.py"
    script.write_text(SWEEP_SCRIPT)
    root = tmp_path / "sweep"
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, str(script), str(root), "run"], env=env)
    ckpts = [root / f"env/toy-s{i}" / "checkpoint.pt" for i in (2, 3)]
    deadline = time.monotonic() + 60
    while not all(p.exists() and sw.checkpoint_step(p) >= 3 for p in ckpts):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    pids = [pid for i in (2, 3) for pid, _ in starts(root, f"env/toy-s{i}")]
    deadline = time.monotonic() + 10  # the run processes get SIGTERM from the kernel when their parent dies
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "run processes outlived their sweep"
        time.sleep(0.05)

    status = subprocess.run(
        [sys.executable, str(script), str(root), "status"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "env/toy-s0  finished" in status and "env/toy-s1  finished" in status
    assert "env/toy-s2  at step" in status and "of 60" in status
    assert "4 runs: 2 finished, 2 partial" in status

    subprocess.run([sys.executable, str(script), str(root), "run"], env=env, check=True)
    for i in (0, 1):
        assert len(starts(root, f"env/toy-s{i}")) == 1  # finished runs were not run again
    for i in (2, 3):
        (_, first), (_, second) = starts(root, f"env/toy-s{i}")
        assert first == 0 and second >= 3  # resumed, not restarted
        assert (root / f"env/toy-s{i}" / sw.FINISHED).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_corrupt_checkpoint_is_reported_and_its_run_restarted(tmp_path, capsys):
    plan = runs(2, steps=3)
    sw.run_sweep(tmp_path, plan[:1], workers=1)
    broken = tmp_path / plan[1].name
    broken.mkdir(parents=True)
    (broken / sw.SPEC).write_text(json.dumps(plan[1].spec()))
    from pyseqrl.utils.checkpoint import save_torch

    save_torch({"step": 2, "weights": list(range(1000))}, broken / "checkpoint.pt")
    good = (broken / "checkpoint.pt").read_bytes()
    (broken / "checkpoint.pt").write_bytes(good[: len(good) // 2])  # a torch checkpoint, truncated

    assert "corrupt checkpoint" in sw.status_table(tmp_path, plan)
    assert "(the run goes on from scratch)" in sw.status_table(tmp_path, plan)
    states = sw.run_sweep(tmp_path, plan, workers=2)
    assert states[plan[1].name].state == "finished"
    assert starts(tmp_path, plan[1].name)[0][1] == 0  # from scratch
    assert (broken / "checkpoint.pt.corrupt").exists()
    out = capsys.readouterr().out
    assert f"{plan[1].name}: checkpoint" in out and "corrupt" in out and "restarting the run from scratch" in out


def test_a_corrupt_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    import pickle

    from pyseqrl.utils.checkpoint import atomic_write, previous_path

    plan = runs(1, steps=4)
    d = tmp_path / plan[0].name
    d.mkdir(parents=True)
    (d / sw.SPEC).write_text(json.dumps(plan[0].spec()))
    atomic_write(previous_path(d / "checkpoint.pt"), lambda f: pickle.dump({"step": 2}, f))  # the one before
    atomic_write(d / "checkpoint.pt", lambda f: pickle.dump({"step": 3}, f))
    (d / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes()[:10])  # damaged after it was written

    assert "(the run goes on from its previous checkpoint, step 2)" in sw.status_table(tmp_path, plan)
    states = sw.run_sweep(tmp_path, plan, workers=1)
    assert states[plan[0].name].state == "finished"
    assert starts(tmp_path, plan[0].name) and starts(tmp_path, plan[0].name)[0][1] == 2  # not from scratch
    assert (d / "checkpoint.pt.corrupt").exists()
    assert "going on from the one before (step 2)" in capsys.readouterr().out


def test_status_of_every_state(tmp_path):
    plan = runs(4, steps=5)
    sw.run_sweep(tmp_path, plan[:1], workers=1)
    (tmp_path / plan[1].name).mkdir(parents=True)
    from pyseqrl.utils.checkpoint import save_torch

    save_torch({"step": 2}, tmp_path / plan[1].name / "checkpoint.pt")
    (tmp_path / plan[2].name).mkdir(parents=True)
    (tmp_path / plan[2].name / sw.FAILED).write_text(json.dumps({"error": "ValueError: bad dataset"}))
    lines = sw.status_table(tmp_path, plan).splitlines()
    assert lines[0] == "env/toy-s0  finished"
    assert lines[1] == "env/toy-s1  at step 2 of 5"
    assert lines[2] == "env/toy-s2  failed: ValueError: bad dataset"
    assert lines[3] == "env/toy-s3  not started"
    assert lines[4] == "4 runs: 1 failed, 1 finished, 1 not started, 1 partial"


def test_a_run_directory_of_another_configuration_is_not_reused(tmp_path):
    sw.run_sweep(tmp_path, runs(1, steps=2), workers=1)
    states = sw.run_sweep(tmp_path, runs(1, steps=3), workers=1)
    st = states["env/toy-s0"]
    assert st.state == "failed" and "another configuration" in st.error and "steps" in st.error


def test_clear_stale_starts_only_the_changed_runs_over(tmp_path):
    states = sw.run_sweep(tmp_path, runs(2, steps=2), workers=1)
    assert states["env/toy-s0"].seconds is not None and states["env/toy-s0"].seconds >= 0
    changed = [runs(2, steps=3)[0], runs(2, steps=2)[1]]  # s0's options changed, s1's did not
    assert sw.clear_stale(tmp_path, changed) == ["env/toy-s0"]
    assert not (tmp_path / "env/toy-s0").exists() and (tmp_path / "env/toy-s1" / sw.FINISHED).exists()
    states = sw.run_sweep(tmp_path, changed, workers=1)
    assert {s.state for s in states.values()} == {"finished"}
    assert states["env/toy-s0"].result["scores"] == [1.0, 2.0, 3.0] and len(starts(tmp_path, "env/toy-s1")) == 1
    assert sw.clear_stale(tmp_path, changed) == []


def test_adopt_copies_identical_finished_runs_from_other_sweeps(tmp_path):
    other, mine = tmp_path / "other", tmp_path / "mine"
    sw.run_sweep(other, [*runs(2, steps=2), sw.Run("half", JOB, {"steps": 3}, steps=3)], workers=1)
    (other / "half" / sw.FINISHED).unlink()  # not finished there: never copied
    plan = [sw.Run("x/same-as-s0", JOB, {"steps": 2}, steps=2), *runs(2, steps=3)]
    plan.append(sw.Run("h", JOB, {"steps": 3}, steps=3))
    copied = sw.adopt(mine, plan, [other, tmp_path / "missing", mine])
    assert copied == [("x/same-as-s0", other / "env/toy-s0")]  # the one run of the same job, arguments and steps
    assert sw.inspect(mine, plan[0]).state == "finished" and not list(mine.rglob("*.adopting"))
    assert sw.adopt(mine, plan, [other]) == []  # already there
    states = sw.run_sweep(mine, plan, workers=1)
    assert {st.state for st in states.values()} == {"finished"}
    assert starts(mine, "x/same-as-s0") == starts(other, "env/toy-s0")  # run once, in the other sweep


def test_keep_records_finished_runs_and_restores_them_on_a_fresh_machine(tmp_path):
    first, keep = tmp_path / "machine1", tmp_path / "record"
    plan = [sw.Run(f"env/toy-s{i}", JOB, {"steps": 2 + i}, steps=2 + i) for i in range(2)]
    sw.run_sweep(first, plan[:1], workers=1, keep=keep)  # s1 never ran here
    kept = sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*") if p.is_file())
    assert kept == ["env/toy-s0/finished.json", "env/toy-s0/run.json"]  # no checkpoint, no log
    assert json.loads((keep / "env/toy-s0" / sw.FINISHED).read_text()) == json.loads(
        (first / "env/toy-s0" / sw.FINISHED).read_text()
    )
    assert not sw.keep_record(first, plan[1], keep)  # not finished: nothing recorded
    fresh = tmp_path / "machine2"  # its run directories are gone; the record is all that is left
    assert sw.adopt(fresh, plan, [keep]) == [("env/toy-s0", keep / "env/toy-s0")]
    states = sw.run_sweep(fresh, plan, workers=1, keep=keep)
    assert {st.state for st in states.values()} == {"finished"}
    assert not (fresh / "env/toy-s0" / "checkpoint.pt").exists()  # restored, not rerun
    assert (keep / "env/toy-s1" / sw.FINISHED).exists()  # recorded as it finished


def test_a_recorded_run_that_others_start_from_is_rerun_until_they_are_finished(tmp_path):
    first, keep = tmp_path / "machine1", tmp_path / "record"
    base = sw.Run("env/pretrain-s0", JOB, {"steps": 2}, steps=2)
    plan = [
        base,
        *(sw.Run(f"env/online{i}-s0", JOB, {"steps": 3 + i}, steps=3 + i, after=(base.name,)) for i in (0, 1)),
    ]
    sw.run_sweep(first, plan[:2], workers=1, keep=keep)  # online1 never ran
    fresh = tmp_path / "machine2"
    # online1 needs pretrain's checkpoint, which the record does not hold: pretrain runs again
    assert sw.adopt(fresh, plan, [keep]) == [("env/online0-s0", keep / "env/online0-s0")]
    sw.run_sweep(fresh, plan, workers=1, keep=keep)
    assert len(starts(fresh, "env/pretrain-s0")) == 1 and not starts(fresh, "env/online0-s0")
    third = tmp_path / "machine3"  # every run that waits for pretrain is in the record now: nothing reruns
    assert len(sw.adopt(third, plan, [keep])) == 3


def test_find_finished_sees_a_recorded_run_that_adopt_keeps_back(tmp_path):
    first, keep, fresh = tmp_path / "machine1", tmp_path / "record", tmp_path / "machine2"
    base = sw.Run("env/pretrain-s0", JOB, {"steps": 2}, steps=2)
    plan = [base, sw.Run("env/online-s0", JOB, {"steps": 3}, steps=3, after=(base.name,))]
    sw.run_sweep(first, plan[:1], workers=1, keep=keep)
    assert sw.adopt(fresh, plan, [keep]) == []  # online-s0 would start from pretrain's checkpoint
    found = sw.find_finished(fresh, plan, [keep])
    assert found == {"env/pretrain-s0": keep / "env/pretrain-s0"}  # finished, though not copied
    st = sw.inspect_dir(found["env/pretrain-s0"], base)
    assert st.state == "finished" and st.result == sw.inspect(first, base).result
    assert sw.inspect(fresh, base).state == "not started"


def test_run_names_must_be_unique_and_dependencies_known(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        sw.run_sweep(tmp_path, runs(1) + runs(1))
    with pytest.raises(ValueError, match="unknown run"):
        sw.run_sweep(tmp_path, [sw.Run("a", JOB, {"steps": 1}, after=("b",))])


# ------------------------------------------------------------------------------------------------ aggregation
def test_summarize_mean_and_population_std_over_the_seeds_that_have_a_value():
    s = sw.summarize([10.0, 20.0, None, 30.0, math.nan])
    assert (s.mean, s.n) == (20.0, 3)
    assert s.std == pytest.approx(math.sqrt(200 / 3))  # ((-10)^2 + 0 + 10^2) / 3
    assert str(s) == "20.0 ± 8.2"
    assert str(sw.summarize([4.25])) == "4.2"
    assert str(sw.summarize([None])) == "n/a" and sw.summarize([]).n == 0
    assert f"{sw.summarize([6000.0, 5000.0, 7000.0]):.0f}" == "6000 ± 816" and f"{sw.summarize([]):.0f}" == "n/a"


def test_first_step_at_threshold():
    steps, values = [100, 200, 300, 400], [5.0, 12.0, 9.0, 15.0]
    assert sw.first_step_at(steps, values, 10.0) == 200
    assert sw.first_step_at(steps, values, 12.0) == 200  # reaching means >=
    assert sw.first_step_at(steps, values, 15.5) != sw.first_step_at(steps, values, 15.5)  # NaN: never reached
    assert math.isnan(sw.first_step_at([], [], 0.0))


def test_curve_summary_final_best_and_steps_to_threshold():
    curves = [
        ([100, 200, 300], [10.0, 30.0, 20.0]),  # final 20, best 30, reaches 25 at 200
        ([100, 200, 300], [5.0, 15.0, 40.0]),  # final 40, best 40, reaches 25 at 300
        ([100, 200, 300], [1.0, 2.0, 3.0]),  # final 3, best 3, never reaches 25
        None,  # an unfinished seed: counted in "seeds", not in the numbers
    ]
    s = sw.curve_summary(curves, threshold=25.0)
    assert (s["final"].mean, s["final"].n) == (pytest.approx(21.0), 3)
    assert s["final"].std == pytest.approx(math.sqrt(((20 - 21) ** 2 + (40 - 21) ** 2 + (3 - 21) ** 2) / 3))
    assert (s["best"].mean, s["best"].n) == (pytest.approx(73 / 3), 3)
    assert s["last"].mean == pytest.approx((60 / 3 + 60 / 3 + 6 / 3) / 3)  # each seed's mean of its last 3
    assert sw.curve_summary(curves, None, last=2)["last"].mean == pytest.approx((25 + 27.5 + 2.5) / 3)
    assert (s["to_threshold"].mean, s["to_threshold"].std, s["to_threshold"].n) == (250.0, 50.0, 2)
    assert (s["reached"], s["seeds"]) == (2, 4)
    assert sw.as_json(s)["final"]["n"] == 3


def _finished_by_hand(root: Path, run: sw.Run, result: dict, seconds: float = 1.0) -> Path:
    """A finished run directory as a run process leaves it (spec and result, no checkpoint)."""
    d = root / run.name
    d.mkdir(parents=True)
    (d / sw.SPEC).write_text(json.dumps(run.spec()))
    (d / sw.FINISHED).write_text(json.dumps({"result": result, "seconds": seconds}))
    return d


def test_a_record_is_never_overwritten_by_another_result(tmp_path):
    run, keep = sw.Run("env/pretrain-s0", JOB, {"steps": 2}, steps=2), tmp_path / "record"
    _finished_by_hand(tmp_path / "m1", run, {"dataset_sha256": "aaa", "score": 1.0})
    assert sw.keep_record(tmp_path / "m1", run, keep)
    recorded = (keep / run.name / sw.FINISHED).read_bytes()
    # finished again with the same result (only the time differs): the record stays as it was
    _finished_by_hand(tmp_path / "m2", run, {"dataset_sha256": "aaa", "score": 1.0}, seconds=9.0)
    assert sw.keep_record(tmp_path / "m2", run, keep)
    assert (keep / run.name / sw.FINISHED).read_bytes() == recorded
    assert sw.finished_results(keep, run) == [keep / run.name]  # nothing kept beside it
    # finished again with another result (another sample of its dataset): kept beside the record
    _finished_by_hand(tmp_path / "m3", run, {"dataset_sha256": "bbb", "score": 2.0})
    for _ in range(2):  # recording it twice keeps it once
        assert sw.keep_record(tmp_path / "m3", run, keep)
    assert (keep / run.name / sw.FINISHED).read_bytes() == recorded
    record, variant = sw.finished_results(keep, run)
    assert record == keep / run.name
    assert variant.name.startswith("pretrain-s0@") and sw.inspect_dir(variant, run).result["score"] == 2.0
    # a fresh machine restores the first record, not the one kept beside it
    assert sw.find_finished(tmp_path / "fresh", [run], [keep]) == {run.name: keep / run.name}
    other = sw.Run("env/pretrain-s0", JOB, {"steps": 3}, steps=3)  # another spec: neither the record nor variant
    assert sw.finished_results(keep, other) == [] and sw.finished_results(tmp_path / "none", run) == []
