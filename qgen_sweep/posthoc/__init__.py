"""Post-hoc per-trial jobs: work done for each finished trial after the sweep trained it.

`qgen-sweep measure` (generalization measures), `qgen-sweep robustness` (corrupted test sets) and
`qgen-sweep landscape` (loss surfaces) are the same driver around different work: select the
finished trials (`--where`), skip those whose result is already written, take the kind's own lock,
run one job per trial (a Ray task, or in-process), record a failure as a row and go on, show
progress with an ETA, end with a summary. `JobKind` names what differs (its store kind in
qgen_sweep.store.KINDS holds the folders and the lock role); `runner.run_jobs` is the driver;
`job.run_guarded` turns a failing trial into a failure row in the worker. Torch-free: the job
functions (which import torch) are named by "module:function" and imported in the worker.
"""

from qgen_sweep.posthoc.kind import JobKind

__all__ = ["JobKind"]
