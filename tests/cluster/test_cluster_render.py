"""Fast tests of the cluster pieces that need no cluster: Ray port blocks, the rendered SLURM
script (options, quoting, `bash -n`), option errors, the node-local warning, sbatch errors, and
the example Ray cluster config against Ray's own schema. Not marked `cluster`: they run in
`make test`.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import BIN, QGEN, REPO, base_env

from qgen_sweep.cluster import ports
from qgen_sweep.cluster.slurm import SlurmJob, render, slurm_message, time_limit_seconds
from qgen_sweep.cluster.storage import node_local_reason
from qgen_sweep.errors import UsageError


def qgen(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run([QGEN, *args], capture_output=True, text=True, timeout=120,
                          env=env or base_env(), cwd=cwd, check=False)


# ---- ports ----
def test_job_ports_are_deterministic_and_disjoint_for_neighbouring_jobs():
    assert ports.ports_for_job(1234) == ports.ports_for_job(1234)  # a requeued job: same ports
    blocks = [set(ports.ports_for_job(j).all_ports("head")) for j in range(1000, 1000 + 20)]
    assert all(not (a & b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    every = set().union(*blocks)
    assert min(every) >= ports.FIRST_PORT and max(every) < ports.LAST_PORT
    assert ports.ports_for_job(7) == ports.ports_for_job(7 + ports.N_SLOTS)  # wraps around


def test_head_and_worker_get_their_own_ray_start_options():
    p = ports.ports_for_job(3)
    head, worker = p.ray_start_args("head"), p.ray_start_args("worker")
    assert f"--port={p.gcs}" in head and f"--dashboard-port={p.gcs + 3}" in head
    assert not any(a.startswith(("--port=", "--dashboard-port=", "--ray-client")) for a in worker)
    assert f"--min-worker-port={p.base + 10}" in worker
    assert f"--max-worker-port={p.base + ports.BLOCK_SIZE - 1}" in worker
    with pytest.raises(ValueError, match="role must be one of"):
        p.ray_start_args("driver")


def test_a_busy_port_moves_the_job_to_the_next_free_block():
    job = 17
    preferred = ports.ports_for_job(job)
    if not all(ports.port_is_free(p) for p in preferred.all_ports("worker")):
        pytest.skip(f"ports {preferred.base}+ are in use on this machine")
    with socket.socket() as sock:  # another program listening on the job's node-manager port
        sock.bind(("", preferred.base + 1))
        sock.listen()
        chosen = ports.free_ports_for_job(job, "worker")
    assert chosen != preferred
    assert chosen.base == preferred.base + ports.BLOCK_SIZE or chosen.base > preferred.base
    assert preferred.base + 1 not in chosen.all_ports("worker")


def test_ports_command_output_is_shell_assignments():
    script = (f'eval "$({BIN}/python -m qgen_sweep.cluster.ports --job-id 5 --role head '
              f'--ip 10.1.2.3)"; echo "$QGEN_NODE_IP $QGEN_RAY_PORT"; echo $QGEN_RAY_ARGS')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    ip, port = out[0].split()
    assert ip == "10.1.2.3" and int(port) >= ports.ports_for_job(5).base
    assert f"--port={port}" in out[1].split() and "--node-ip-address=10.1.2.3" in out[1].split()


# ---- the rendered script ----
def test_print_renders_every_option_into_a_valid_bash_script(tmp_path):
    proc = qgen("slurm", "smoke", "--print", "--nodes", "3", "--gpus-per-node", "4", "--mem",
                "64G", "--time", "1-00:00:00", "--partition", "gpu", "--account", "proj-7",
                "--signal-lead", "600", "--set", "train.epochs=2", "--results-dir",
                str(tmp_path / "runs dir" / "smoke"))
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in ("#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1", "#SBATCH --exclusive",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --mem=64G", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj-7", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@600", "#SBATCH --job-name=qgen-smoke"):
        assert line in script.splitlines(), line
    assert "{{" not in script and "}}" not in script
    # Values with spaces stay one shell word; --set reaches `qgen-sweep launch`.
    assert f"RESULTS_DIR='{tmp_path / 'runs dir' / 'smoke'}'" in script
    assert "LAUNCH_OPTIONS=(--set train.epochs=2)" in script
    worker_step = script.split("\n  srun ", 1)[1].split("&\n", 1)[0]
    assert "--gpus-per-node=4 " in worker_step  # the worker step asks for the node's GPUs
    assert '--cpus-per-task="$SLURM_CPUS_ON_NODE"' in worker_step  # ... and for its CPUs
    assert "--num-gpus=4" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # it parses


def test_cpus_per_node_replaces_whole_nodes(tmp_path):
    proc = qgen("slurm", "smoke", "--print", "--cpus-per-node", "8",
                "--results-dir", str(tmp_path / "r"))
    lines = proc.stdout.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH --exclusive" not in lines
    assert "#SBATCH --gpus-per-node=0" not in lines and "--gpus-per-node" not in proc.stdout
    assert "--cpus-per-task=8 " in proc.stdout.split("\n  srun ", 1)[1]


@pytest.mark.parametrize(("args", "words"), [
    (["--nodes", "0"], "--nodes must be >= 1, but got 0"),
    (["--gpus-per-node", "-1"], "--gpus-per-node must be >= 0"),
    (["--cpus-per-node", "0"], "--cpus-per-node must be >= 1"),
    (["--mem", "lots"], "--mem must be SLURM memory"),
    (["--time", "1 day"], "--time must be SLURM time"),
    (["--signal-lead", "5"], "--signal-lead must be >= 30"),
    (["--time", "10", "--signal-lead", "600"], "must be shorter than --time (10 = 600 s)"),
    (["--set", "train.epoch=3"], "epoch"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, args, words):
    proc = qgen("slurm", "smoke", "--print", "--results-dir", str(tmp_path / "r"), *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exactly_one_of_print_and_submit(tmp_path):
    for flags in ([], ["--print", "--submit"]):
        proc = qgen("slurm", "smoke", *flags, "--results-dir", str(tmp_path / "r"))
        assert proc.returncode == 2 and "exactly one of --print" in proc.stderr


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 5400), ("90:30", 5430), ("12:00:00", 43200), ("1-00", 86400),
    ("1-02:03", 93780), ("2-00:00:10", 172810), ("UNLIMITED", 0), ("1h", None), ("", None),
])
def test_slurm_time_formats(text, seconds):
    assert time_limit_seconds(text) == seconds


def test_unknown_template_placeholder_is_named(tmp_path):
    job = SlurmJob(sweep="smoke", results_dir=tmp_path)
    with pytest.raises(UsageError, match=r"unknown placeholder\(s\) \['node_count'\]"):
        render(job, template="#!/bin/bash\n{{sbatch_options}}\necho {{node_count}}\n")


# ---- shared storage ----
def test_node_local_warning_names_the_reason(tmp_path):
    proc = qgen("slurm", "smoke", "--print", "--results-dir", "/tmp/qgen-runs/smoke")
    assert proc.returncode == 0
    assert "warning: results directory /tmp/qgen-runs/smoke looks node-local" in proc.stderr
    assert "under /tmp" in proc.stderr and "shared storage" in proc.stderr
    assert proc.stdout.startswith("#!/bin/bash")  # the warning never goes into the script


def test_file_system_type_decides_for_paths_outside_scratch_folders(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("overlay / overlay rw 0 0\n"
                      "fs1:/export /home nfs4 rw 0 0\n"
                      "/dev/sdb1 /data ext4 rw 0 0\n"
                      "lustre@o2ib:/scratch /lustre\\040fs lustre rw 0 0\n")
    assert node_local_reason("/home/ann/runs/smoke", mounts) is None
    assert node_local_reason("/lustre fs/ann/runs", mounts) is None
    assert "ext4" in node_local_reason("/data/runs/smoke", mounts)
    assert "overlay" in node_local_reason("/opt/runs", mounts)
    assert "under /dev/shm" in node_local_reason("/dev/shm/runs", mounts)


# ---- sbatch errors ----
def test_missing_sbatch_is_one_line_with_the_way_out(tmp_path):
    env = base_env()
    env["PATH"] = str(BIN)  # the venv only: no sbatch
    proc = qgen("slurm", "smoke", "--submit", "--results-dir", str(tmp_path / "r"), env=env)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
    assert len(errors) == 1 and "sbatch not found on PATH" in errors[0] and "--print" in errors[0]


def test_slurm_message_keeps_slurms_error_lines():
    stderr = ("sbatch: warning: can't honor --ntasks-per-node set to 1\n"
              "sbatch: error: Batch job submission failed: Invalid account or account/partition "
              "combination specified\n")
    assert slurm_message(stderr) == ("sbatch: error: Batch job submission failed: Invalid "
                                     "account or account/partition combination specified")
    assert slurm_message("") == "no message on stderr"


# ---- the example Ray cluster config ----
def test_example_ray_cluster_config_matches_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler
    import yaml

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "workers" / "ray-cluster.example.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0, "GPU": 0}


# ---- rendered values cannot break out of their line ----
def _sbatch_block(script: str) -> list[str]:
    """The lines sbatch reads options from: after the shebang, up to the first command."""
    block = []
    for line in script.splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            break
        block.append(line)
    return block


@pytest.mark.parametrize(("flag", "value"), [
    ("--job-name", "x\necho injected"),
    ("--partition", "gpu\r\necho injected"),
    ("--account", "proj\x0becho injected"),
    ("--mem", "64G\n"),  # the memory pattern must match the whole value, newline included
    ("--time", "90\n"),
    ("--set", "description=a\necho injected"),
    ("--results-dir", "runs/a\nb"),
    ("--job-name", "evil\u202egnp.exe"),  # a bidi override: the script would read differently
])
def test_control_characters_in_any_rendered_value_are_refused(tmp_path, flag, value):
    args = ["--results-dir", str(tmp_path / "r")] if flag != "--results-dir" else []
    proc = qgen("slurm", "smoke", "--print", *args, flag, value)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == "" and "injected" not in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "control character" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_odd_but_printable_values_are_quoted_and_keep_every_sbatch_line(tmp_path):
    name = "a b'c\"$(touch pwned)`x`;#"
    job = SlurmJob(sweep="smoke", results_dir=tmp_path / "r $HOME", job_name=name,
                   partition="gpu;id", account="p'q", overrides=("description=x $(id) ü 🙂",))
    script = render(job)
    block = _sbatch_block(script)
    options = [shlex.split(line.removeprefix("#SBATCH "))[0] for line in block
               if line.startswith("#SBATCH ")]
    assert f"--job-name={name}" in options and "--partition=gpu;id" in options
    assert "--account=p'q" in options and options[-1].startswith("--signal=")  # none dropped
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    # The bash variables hold exactly the values given (bash parses the assignments).
    lines = [ln for ln in script.splitlines() if ln.startswith(("RESULTS_DIR=", "LAUNCH_OPTIONS="))]
    shown = subprocess.run(["bash", "-c", "\n".join(lines) + '\nprintf "%s\\n" "$RESULTS_DIR" '
                            '"${LAUNCH_OPTIONS[@]}"'], capture_output=True, text=True,
                           check=True, cwd=tmp_path).stdout.splitlines()
    assert shown == [str((tmp_path / "r $HOME").absolute()), "--set", "description=x $(id) ü 🙂"]
    assert not (tmp_path / "pwned").exists()
