"""Cluster commands: `qgen-sweep slurm` renders (and submits) a SLURM batch job for a sweep.

    qgen-sweep slurm cifar10-grid --nodes 4 --gpus-per-node 4 --time 1-00:00:00 --submit
    qgen-sweep slurm smoke --nodes 1 --print > smoke.sbatch

Heavy libraries are never imported here; the sweep is planned (validated) before any script is
written or submitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from qgen_sweep.errors import UsageError


def _gpus_per_node(sweep: str, overrides: tuple[str, ...], nodes: int,
                   gpus_per_node: int | None) -> int:
    """--gpus-per-node, by default the spec's resources.gpus_per_trial (one data-parallel trial
    per node); a job whose GPUs cannot hold one trial is a usage error."""
    from qgen_sweep.spec import load_spec

    per_trial = load_spec(sweep, overrides).resources.gpus_per_trial
    if gpus_per_node is None:
        gpus_per_node = per_trial
    if nodes < 1 or gpus_per_node < 0:
        return gpus_per_node  # SlurmJob names the bad count; a fit check would only confuse it
    if per_trial > nodes * gpus_per_node:
        raise UsageError(f"resources.gpus_per_trial = {per_trial} GPUs do not fit in the job's "
                         f"{nodes} node(s) x {gpus_per_node} GPUs; raise --nodes or "
                         f"--gpus-per-node")
    return gpus_per_node


def _validated_results_dir(sweep: str, overrides: tuple[str, ...], results_dir: Path | None):
    """Plan the sweep (every trial validated) and return its results directory."""
    from qgen_sweep.plan import plan
    from qgen_sweep.spec import load_spec

    spec = load_spec(sweep, overrides)
    plan(spec)
    return results_dir if results_dir is not None else spec.default_results_dir()


def _warn_if_node_local(results_dir: Path) -> None:
    from qgen_sweep.cluster.storage import node_local_reason

    reason = node_local_reason(results_dir)
    if reason:
        click.echo(f"warning: results directory {results_dir.absolute()} looks node-local "
                   f"({reason}); every node of the job, and the node a requeued job lands on, "
                   f"must reach it: use shared storage (NFS, Lustre, GPFS, ...) via --results-dir",
                   err=True)


@click.command("slurm")
@click.argument("sweep")
@click.option("--nodes", type=int, default=1, show_default=True, help="Nodes in the job.")
@click.option("--gpus-per-node", type=int, default=None,
              help="GPUs per node (SLURM --gpus-per-node); default: the spec's "
                   "resources.gpus_per_trial (0 without one).")
@click.option("--cpus-per-node", type=int, default=None,
              help="CPUs per node (default: whole nodes, --exclusive).")
@click.option("--mem", default=None, help="Memory per node, SLURM syntax (64G, 500M).")
@click.option("--time", "time_limit", default=None, help="Time limit, SLURM syntax (1-00:00:00).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--account", default=None, help="SLURM account.")
@click.option("--job-name", default=None, help="Job name (default qgen-SWEEP).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=None,
              help="Results directory on shared storage (default: the spec's, else ./runs/SWEEP).")
@click.option("--signal-lead", type=int, default=300, show_default=True,
              help="Seconds before the time limit at which the job stops and requeues itself.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Spec override passed on to `qgen-sweep launch` (repeatable).")
@click.option("--data-dir", default=None,
              help="Dataset folder as the job's nodes see it (passed on to `qgen-sweep launch` "
                   "as runtime.data_dir; default: the spec's, else $QGEN_DATA_DIR there).")
@click.option("--print", "print_", is_flag=True, help="Write the batch script to stdout.")
@click.option("--submit", is_flag=True, help="Submit the script with sbatch; print the job id.")
def slurm_command(sweep: str, nodes: int, gpus_per_node: int | None, cpus_per_node: int | None,
                  mem: str | None, time_limit: str | None, partition: str | None,
                  account: str | None, job_name: str | None, results_dir: Path | None,
                  signal_lead: int, overrides: tuple[str, ...], data_dir: str | None,
                  print_: bool, submit: bool) -> None:
    """Run SWEEP as a SLURM batch job: a Ray cluster over the allocation, then `launch`.

    The job requeues itself before its time limit (and resumes where it stopped); the results
    directory must be on storage that every node shares.

    \b
    Examples:
      qgen-sweep slurm smoke --nodes 1 --print > smoke.sbatch
      qgen-sweep slurm cifar10-grid --nodes 4 --gpus-per-node 4 --time 1-00:00:00 \\
        --results-dir /shared/runs/cifar10-grid --submit
    """
    from qgen_sweep.cluster.slurm import SlurmJob, render
    from qgen_sweep.cluster.slurm import submit as sbatch_submit

    if print_ == submit:
        raise UsageError("give exactly one of --print (write the script to stdout) or --submit "
                         "(call sbatch), e.g. `qgen-sweep slurm smoke --print > job.sbatch`")
    if data_dir is not None:  # a TOML string: the spec's own validation applies to it
        overrides = (*overrides, f"runtime.data_dir={json.dumps(data_dir)}")
    results = _validated_results_dir(sweep, overrides, results_dir)
    gpus_per_node = _gpus_per_node(sweep, overrides, nodes, gpus_per_node)
    job = SlurmJob(sweep=sweep, results_dir=results,
                   nodes=nodes, gpus_per_node=gpus_per_node, cpus_per_node=cpus_per_node,
                   mem=mem, time=time_limit, partition=partition, account=account,
                   job_name=job_name, signal_lead=signal_lead, overrides=overrides)
    _warn_if_node_local(job.results_dir)
    script = render(job)
    if print_:
        click.echo(script, nl=False)
        return
    job.results_dir.absolute().mkdir(parents=True, exist_ok=True)
    click.echo(sbatch_submit(script))


COMMANDS = (slurm_command,)
