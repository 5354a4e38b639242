"""Progress lines for batch logs: counts, throttling, failure lines, ETA."""

from __future__ import annotations

import io

from qgen_sweep.backends.progress import Progress


def test_plain_lines_count_events_and_name_failures():
    out = io.StringIO()
    with Progress(planned=10, already_done=4, to_run=6, stream=out, interval=0.0) as progress:
        progress.on_start("a")
        progress.on_start("b")
        progress.on_complete("a", "done")
        progress.on_complete("b", "diverged")
        progress.on_start("c")
        progress.on_retry("c", "RuntimeError: x")
        progress.on_fail("c", "RuntimeError: boom")
    lines = out.getvalue().splitlines()
    assert "trial c failed: RuntimeError: boom" in lines
    last = lines[-1]
    assert "6/10 finished (1 done, 1 diverged this run)" in last
    assert "0 running, 1 failed, 1 retried" in last


def test_batch_log_is_throttled_but_failures_always_show():
    out = io.StringIO()
    with Progress(planned=100, already_done=0, to_run=100, stream=out, interval=3600) as progress:
        for i in range(50):
            progress.on_start(str(i))
            progress.on_complete(str(i), "done")
        progress.on_fail("x", "ValueError: bad")
    lines = out.getvalue().splitlines()
    # first line, the failure note and its forced line, the final line
    assert len(lines) == 4 and lines[1] == "trial x failed: ValueError: bad"


def test_eta_uses_throughput_after_the_first_finish():
    now = [100.0]
    progress = Progress(planned=5, already_done=0, to_run=5, stream=io.StringIO(),
                        clock=lambda: now[0])
    assert progress.eta() == "--"
    now[0] += 50  # Ray's start and the first trial: not part of the rate
    progress.on_complete("a", "done")
    assert progress.eta() == "--"  # one finish says nothing about the rate yet
    now[0] += 20
    progress.on_complete("b", "done")
    assert progress.eta() == "1:00"  # 3 left at one per 20 s
    for name in "cde":
        progress.on_complete(name, "done")
    assert progress.eta() == "0:00"


def test_live_mode_renders_the_same_counts():
    out = io.StringIO()
    with Progress(planned=3, already_done=0, to_run=3, stream=out, live=True) as progress:
        progress.on_start("a")
        progress.on_complete("a", "done")
        progress.on_fail("b", "KeyError: 'x'")
    text = out.getvalue()
    assert "trial b failed: KeyError: 'x'" in text
    assert "1/3 finished (1 done, 0 diverged this run)" in text and "1 failed" in text


def test_pruned_trials_count_as_finished_and_are_named():
    out = io.StringIO()
    with Progress(planned=4, already_done=1, to_run=3, stream=out, interval=3600) as progress:
        progress.on_start("a")
        progress.on_complete("a", "done")
        progress.on_complete("b", "pruned")
    line = out.getvalue().splitlines()[-1]
    assert "3/4 finished (1 done, 0 diverged, 1 pruned this run)" in line


def test_results_of_bundles_and_stopped_trials_are_counted_by_outcome():
    progress = Progress(planned=6, already_done=0, to_run=6, stream=io.StringIO())
    progress.on_result("bundle-1", {"trial_id": "bundle-1", "status": "done", "members": 3,
                                    "statuses": ["done", "diverged", "done"]})
    progress.on_result("t", {"trial_id": "t", "status": "diverged"})
    progress.on_result("u", {"test_loss": 1.5, "epoch": 2})  # ASHA stopped it there
    progress.on_result("bundle-2", {"trial_id": "bundle-2", "status": "done", "members": 1,
                                    "skipped": True})
    assert (progress.done, progress.diverged, progress.pruned) == (3, 2, 1)


def test_eta_of_bundles_counts_from_the_first_bundle():
    """Members of a fused bundle finish at one instant: the first bundle sets the start of the
    rate, it is not a rate of its own (that would say 0:00 with most of the sweep to go)."""
    now = [0.0]
    progress = Progress(planned=24, already_done=0, to_run=24, stream=io.StringIO(),
                        clock=lambda: now[0])
    now[0] = 30.0
    progress.on_result("b1", {"status": "done", "members": 8, "statuses": ["done"] * 8})
    assert progress.eta() == "--"
    now[0] = 40.0
    progress.on_result("b2", {"status": "done", "members": 8,
                              "statuses": ["done"] * 7 + ["diverged"]})
    assert progress.eta() == "0:10"  # 8 left at 8 per 10 s
