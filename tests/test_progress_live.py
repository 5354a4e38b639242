"""The progress display as a person and a log see it: a real `qgen-sweep launch` under a
pseudo-terminal (live region: ticking clock, table of running trials read from their epoch rows)
and through a pipe (heartbeat lines naming what the running trials are at, failures at once);
`status --watch` beside a running launch; post-hoc job progress with an ETA (the
measure command's lines: tests/test_cli_measure.py)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sweep_helpers import write_faults
from terminal_helpers import ANSI, run_in_pty, screen_lines

from qgen_sweep.backends import task_of
from qgen_sweep.backends.progress import Display, JobProgress, Progress
from qgen_sweep.backends.running import RunningTrials
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec
from qgen_sweep.store import ResultsStore, SweepLock

EXE = str(Path(sys.executable).with_name("qgen-sweep"))
# One Int4 SGD trial of 4 epochs on digits: a few seconds, long enough to be seen running.
ONE = ["--set", "grid.bits=[4]", "--set", 'grid.optimizer=["sgd"]', "--set", "grid.width=[4]",
       "--set", "train.epochs=4"]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return os.environ | {"QGEN_SWEEP_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _epochs_shown(lines: list[str]) -> set[int]:
    """Epochs k of 'Int4  sgd  0.05  k/4  <loss>  <acc>%' rows of the running-trials table."""
    found = set()
    for line in lines:
        match = re.search(r"Int4\s+sgd\s+0\.05\s+(\d)/4\s+(\d+\.\d{3})\s+(\d+\.\d)%", line)
        if match:
            found.add(int(match.group(1)))
    return found


def test_launch_on_a_terminal_redraws_a_ticking_clock_and_the_running_trials(tmp_path, env):
    results = tmp_path / "one"
    (trial,) = plan(load_spec("smoke", [ONE[i + 1] for i in range(0, len(ONE), 2)]))
    # a pause after epoch 2, so the live table shows a trial mid-way however fast the machine
    faults = write_faults(tmp_path / "faults.json", [
        {"trial_id": trial.trial_id, "epoch": 2, "times": 1, "action": "pause", "seconds": 2}])
    code, text = run_in_pty([EXE, "launch", "smoke", "--results-dir", str(results),
                             "--backend", "local", *ONE],
                            env | {"QGEN_FAULT_INJECTION": str(faults)})
    assert code == 0, text[-2000:]
    assert "\x1b[1A" in text and "\x1b[2K" in text  # a live region: redrawn in place
    lines = screen_lines(text)
    clocks = {m.group(1) for line in lines if (m := re.match(r"\[(\d+:\d\d)\] ", line))}
    assert len(clocks) >= 2, clocks  # redrawn while the trial trained, not only on events
    assert any(re.match(r"bits\s+optimizer\s+lr\s+epoch\s+train loss\s+test acc\s+trial", line)
               for line in lines)
    assert _epochs_shown(lines) & {1, 2, 3, 4}, lines[-20:]  # from the per-epoch rows
    assert any("1/1 finished (1 done, 0 diverged this run)" in line for line in lines)


def _events(folder: Path) -> list:
    """Every TensorBoard event in `folder`'s event files (TFRecord framing: length, crc,
    payload, crc), parsed with tensorboardX's protobuf classes."""
    import struct

    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


def _scalars(folder: Path, tag: str) -> dict[int, float]:
    return {e.step: v.simple_value for e in _events(folder) for v in e.summary.value
            if v.tag == tag}


def test_launch_into_a_pipe_prints_heartbeats_and_failures_at_once(tmp_path, env):
    """...and `--log tensorboard` writes each epoch's scalars and the trial's HParams row."""
    results = tmp_path / "one"
    spec = load_spec("smoke", [ONE[i + 1] for i in range(0, len(ONE), 2)])
    (trial,) = plan(spec)
    faults = write_faults(tmp_path / "faults.json", [
        {"trial_id": trial.trial_id, "epoch": 2, "times": 1, "action": "raise"},
        # the retry pauses after epoch 3, so heartbeats see a trial mid-way on any machine
        {"trial_id": trial.trial_id, "epoch": 3, "times": 1, "action": "pause", "seconds": 2}])
    result = subprocess.run(
        [EXE, "launch", "smoke", "--results-dir", str(results), "--backend", "local",
         "--progress-interval", "0.5", "--log", "tensorboard", *ONE], capture_output=True,
        text=True, timeout=300,
        env=env | {"QGEN_FAULT_INJECTION": str(faults)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not ANSI.search(result.stdout)  # plain lines in a log
    lines = result.stdout.splitlines()
    beats = [ln for ln in lines if "| running: Int4 sgd lr=0.05 epoch " in ln]
    assert len(beats) >= 2, lines
    assert any(re.search(r"epoch [1-4]/4 loss \d+\.\d{3} acc \d+\.\d%", ln) for ln in beats)
    retry = [i for i, ln in enumerate(lines)
             if ln.startswith(f"trial {trial.trial_id} attempt failed, retrying: InjectedFault")]
    final = [i for i, ln in enumerate(lines) if "1/1 finished (1 done" in ln]
    assert retry and final and retry[0] < final[0]  # the failure showed while it ran
    store = ResultsStore(results)
    epochs = store.epochs(trial.trial_id, 4)
    logged = _scalars(results / "tensorboard" / trial.trial_id, "loss/train")
    assert logged == pytest.approx({r["epoch"]: r["train_loss"] for r in epochs})  # 1..4
    final_row = store.final_row(trial.trial_id, 4)
    hparams = results / "tensorboard" / trial.trial_id / "hparams"
    assert _scalars(hparams, "hparam/test_acc") == pytest.approx({0: 100 * final_row["test_acc"]})
    plugins = {v.metadata.plugin_data.plugin_name for e in _events(hparams)
               for v in e.summary.value}
    assert "hparams" in plugins


def test_status_watch_follows_a_launch_until_it_stops(tmp_path, env):
    """A watcher on a terminal beside a 'launch' (this test holds the sweep lock and writes the
    rows a launch would): it shows the running trial's epoch, then ends when the lock goes."""
    spec = load_spec("smoke", ["grid.bits=[4, 32]", 'grid.optimizer=["sgd"]', "grid.width=[4]"])
    trials = plan(spec)
    store = ResultsStore(tmp_path / "w")
    from qgen_sweep.backends.runner import start_attempt
    from qgen_sweep.plan import save_plan

    save_plan(store, spec, trials)
    lock = SweepLock(store.root, "launch smoke")
    lock.__enter__()
    running = trials[0]
    start_attempt(store, SimpleNamespace(lease=None), running.trial_id)
    store.write_epochs(running.trial_id, running.config.bits, [
        {"epoch": 1, "train_loss": 1.25, "train_acc": 0.5, "test_loss": 1.5, "test_acc": 0.625,
         "lr": 0.05, "seconds": 1.0}])
    released = threading.Event()

    def release_once_seen(text: str) -> None:
        if not released.is_set() and re.search(r"Int4\s+sgd\s+0\.05\s+1/3\s+1\.250\s+62\.5%",
                                                ANSI.sub("", text)):
            released.set()
            lock.__exit__(None, None, None)

    try:
        code, text = run_in_pty([EXE, "status", "smoke", "--results-dir", str(store.root),
                                 "--watch", "--interval", "0.3"], env, timeout=120,
                                while_running=release_once_seen)
    finally:
        if not released.is_set():
            lock.__exit__(None, None, None)
    assert released.is_set(), screen_lines(text)[-20:]
    assert code == 0
    lines = screen_lines(text)
    assert any(line.startswith("running now: launch smoke") for line in lines)
    assert lines[-1] == "watch ended: the launch stopped"


def test_status_watch_in_a_log_prints_one_line_per_interval_and_ends_when_done(tmp_path, env):
    spec = load_spec("smoke", ["grid.bits=[4]", 'grid.optimizer=["sgd"]', "grid.width=[4]"])
    root = tmp_path / "w"
    from qgen_sweep.plan import save_plan

    save_plan(ResultsStore(root), spec, plan(spec))
    watcher = subprocess.Popen([EXE, "status", "smoke", "--results-dir", str(root), "--watch",
                                "--interval", "0.3"], stdout=subprocess.PIPE, text=True, env=env)
    first = watcher.stdout.readline()
    assert re.match(r"\[\d+:\d\d\] 0/1 finished \(0 done, 0 diverged\), 0 running, 0 failed, "
                    r"1 pending$", first), first
    from test_analysis import _trial_row

    (trial,) = plan(spec)
    ResultsStore(root).write_trial(_trial_row(trial.config, spec.name,
                                              (0.9, 0.8, 0.1, 0.3, 1.0), 0))
    out, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    assert "1/1 finished (1 done, 0 diverged)" in out
    assert out.rstrip().endswith("watch ended: every planned trial has a result")


def test_status_watch_refuses_json_and_a_bad_interval(tmp_path, env):
    for extra, message in ((["--format", "json"], "does not combine with --format json"),
                           (["--json"], "does not combine with --format json"),
                           (["--interval", "0"], "--interval must be > 0 seconds, but got 0")):
        result = subprocess.run([EXE, "status", "smoke", "--results-dir", str(tmp_path),
                                 "--watch", *extra], capture_output=True, text=True, env=env)
        assert result.returncode == 2 and message in result.stderr


# -- the components -------------------------------------------------------------------------


def test_phase_shows_before_the_first_trial_and_the_clock_ticks():
    now = [0.0]
    progress = Progress(planned=4, already_done=0, to_run=4, stream=io.StringIO(), live=True,
                        clock=lambda: now[0])
    progress.phase("starting Ray...")
    assert progress.line().startswith("[0:00] starting Ray... 0/4 finished")
    now[0] = 75.0  # the live view is rebuilt on every redraw: the clock moves without events
    assert progress._view().plain.startswith("[1:15] starting Ray... 0/4")
    progress.on_start("a")
    assert "starting Ray" not in progress.line()


def test_heartbeat_lines_come_without_events():
    out = io.StringIO()
    display = Display(out, live=False, interval=0.05, view=lambda: None,
                      line=lambda: "alive", clock=time.monotonic)
    display.start()
    deadline = time.monotonic() + 20
    while out.getvalue().count("alive") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    display.stop()
    assert out.getvalue().count("alive") >= 4  # first line, heartbeats, the last line


def test_running_trials_read_the_latest_epoch_of_each_bundle_member(tmp_path):
    spec = load_spec("smoke", ["grid.bits=[2, 4]", 'grid.optimizer=["sgd"]', "grid.width=[4]"])
    a, b = plan(spec)
    store = ResultsStore(tmp_path)
    bundle = {"trial_id": "bundle-x", "bits": 2,
              "bundle": [task_of(t.trial_id, t.config, t.lr_index) for t in (a, b)]}
    store.write_epochs(a.trial_id, a.config.bits, [
        {"epoch": k, "train_loss": 2.0 / k, "test_acc": 0.1 * k} for k in (1, 2)])
    now = [0.0]
    trials = RunningTrials(tmp_path, [bundle], poll=1.0, clock=lambda: now[0])
    rows = {r["trial_id"]: r for r in trials.rows({"bundle-x"})}
    assert (rows[a.trial_id]["precision"], rows[a.trial_id]["epoch"]) == ("Int2", 2)
    assert rows[a.trial_id]["train_loss"] == pytest.approx(1.0)
    assert (rows[b.trial_id]["precision"], rows[b.trial_id]["epoch"]) == ("Int4", 0)
    store.write_epochs(b.trial_id, b.config.bits, [{"epoch": 1, "train_loss": 0.5}])
    assert trials.rows({"bundle-x"}) is trials.rows({"bundle-x"})  # within `poll`: cached
    now[0] = 2.0
    rows = {r["trial_id"]: r for r in trials.rows({"bundle-x"})}
    assert rows[b.trial_id]["epoch"] == 1


def test_running_trials_of_a_search_come_from_the_plan(tmp_path):
    spec = load_spec("smoke", ["grid.bits=[8]", 'grid.optimizer=["adam"]', "grid.width=[4]"])
    from qgen_sweep.plan import save_plan

    (trial,) = plan(spec)
    save_plan(ResultsStore(tmp_path), spec, [trial])
    (row,) = RunningTrials(tmp_path).rows({trial.trial_id})
    assert (row["precision"], row["optimizer"], row["lr"], row["epochs"]) == \
        ("Int8", "adam", 1e-3, 3)
    assert RunningTrials(tmp_path).rows({"unknown"})[0]["precision"] is None


def test_job_progress_prints_a_line_per_job_with_an_eta():
    now = [0.0]
    out = io.StringIO()
    with JobProgress(4, "measure smoke", stream=out, interval=3600,
                     clock=lambda: now[0]) as progress:
        progress.phase("starting Ray and the first jobs...")
        now[0] = 30.0
        progress.on_done("a", text="measured a Int4 1.0 s")
        now[0] = 40.0
        progress.on_done("b", ok=False, text="failed b Int2 0.5 s  boom")
        now[0] = 50.0
        progress.on_done("c", text="measured c FP32 1.0 s")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[0:00] starting Ray and the first jobs... measure smoke: 0/4 (0 ok, " \
                       "0 failed), ETA --"  # the header line is the command's own
    assert "[1/4] measured a Int4 1.0 s | ETA --" in lines  # one finish: no rate yet
    assert "[2/4] failed b Int2 0.5 s  boom | ETA 0:20" in lines  # 2 left at one per 10 s
    assert "[3/4] measured c FP32 1.0 s | ETA 0:10" in lines
    assert lines[-1] == "[0:50] measure smoke: 3/4 (2 ok, 1 failed), ETA 0:10"


@pytest.mark.slow
def test_launch_on_ray_shows_the_clock_from_the_first_moment(tmp_path, env):
    """On Ray the live region starts before Ray does: 'starting Ray...' with a ticking clock."""
    code, text = run_in_pty([EXE, "launch", "smoke", "--results-dir", str(tmp_path / "one"),
                             "--max-concurrent", "1", *ONE], env, timeout=600)
    assert code == 0, text[-2000:]
    lines = screen_lines(text)
    starting = [line for line in lines if re.match(r"\[\d+:\d\d\] starting Ray\.\.\. 0/1 ", line)]
    assert starting, lines[:10]
    assert any(re.match(r"\[\d+:\d\d\] waiting for the first trial\.\.\. 0/1 ", line)
               for line in lines)
    assert any("1/1 finished (1 done" in line for line in lines)
