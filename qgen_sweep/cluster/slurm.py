"""Render the SLURM batch script of a sweep (workers/slurm.sbatch) and submit it with sbatch.

The script (see the template's own comments) starts a Ray cluster over the allocation with
workers/ray-node.sh, runs `qgen-sweep launch SWEEP --address HEAD:PORT`, and requeues itself on
the pre-timeout signal. Rendering fills `{{name}}` placeholders. Every value given by the user is
checked first (no control characters: a newline in a `#SBATCH` line would end the option block and
start a shell command) and then shell-quoted.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from qgen_sweep.errors import QGenError, UsageError, Validated
from qgen_sweep.resources import data_dir

TEMPLATE_NAME = "slurm.sbatch"
DEFAULT_SIGNAL_LEAD = 300  # s: time for a graceful Tune stop + Ray shutdown before the limit
MIN_SIGNAL_LEAD = 30  # s: SLURM delivers --signal with up to 60 s of jitter; below this is a race
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# SLURM's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (sbatch(1)); or UNLIMITED.
# (fullmatch: `$` would also accept a trailing newline)
_TIME = re.compile(r"(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)")
_MEM = re.compile(r"\d+[KMGT]?")
# Characters no rendered value may hold: controls (newline, CR, tab, ESC, ...), line and paragraph
# separators, lone surrogates, and the bidirectional overrides that make a script read differently
# from what runs.
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


@dataclass(frozen=True)
class SlurmJob(Validated):
    """What `qgen-sweep slurm` was asked for (validated on construction, UsageError if bad)."""

    sweep: str
    results_dir: Path
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None  # None: whole nodes (--exclusive)
    mem: str | None = None  # SLURM syntax: 64G, 500M, 64000 (MB)
    time: str | None = None  # SLURM syntax: 1-00:00:00, 12:00:00, 90
    partition: str | None = None
    account: str | None = None
    job_name: str | None = None
    signal_lead: int = DEFAULT_SIGNAL_LEAD
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE passed on to qgen-sweep launch
    workdir: Path = field(default_factory=Path.cwd)

    def problems(self) -> list[str]:
        """One line per invalid option (empty when all are valid)."""
        out = []
        if self.nodes < 1:
            out.append(f"--nodes must be >= 1, but got {self.nodes}")
        if self.gpus_per_node < 0:
            out.append(f"--gpus-per-node must be >= 0, but got {self.gpus_per_node}")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            out.append(f"--cpus-per-node must be >= 1, but got {self.cpus_per_node} "
                       f"(leave it out to take whole nodes)")
        out += self._text_problems()
        if out:  # the format checks below would quote the control characters again
            return out
        if self.mem is not None and not _MEM.fullmatch(self.mem):
            out.append(f"--mem must be SLURM memory like 64G, 500M or 64000 (MB), but got "
                       f"{self.mem!r}")
        if self.time is not None and time_limit_seconds(self.time) is None:
            out.append(f"--time must be SLURM time like 90 (minutes), 12:00:00 or 1-00:00:00, "
                       f"but got {self.time!r}")
        out += self._signal_problems()
        return out

    def _texts(self) -> list[tuple[str, str]]:
        """(option, text) of every user-given value the script will contain."""
        named = [("SWEEP", self.sweep), ("--results-dir", str(self.results_dir)),
                 ("--mem", self.mem), ("--time", self.time), ("--partition", self.partition),
                 ("--account", self.account), ("--job-name", self.job_name),
                 ("the working directory", str(self.workdir))]
        named += [("--set", item) for item in self.overrides]
        return [(flag, text) for flag, text in named if text is not None]

    def _text_problems(self) -> list[str]:
        out = []
        for flag, text in self._texts():
            bad = control_characters(text)
            if bad:
                out.append(f"{flag} must not contain control characters, but {text!r} has "
                           f"{', '.join(bad)} (a newline would end the #SBATCH block and run the "
                           f"rest as a command); give a plain value")
        return out

    def _signal_problems(self) -> list[str]:
        if self.signal_lead < MIN_SIGNAL_LEAD:
            return [f"--signal-lead must be >= {MIN_SIGNAL_LEAD} s (SLURM may deliver the "
                    f"signal up to 60 s late), but got {self.signal_lead}"]
        limit = time_limit_seconds(self.time) if self.time else None
        if limit and self.signal_lead >= limit:
            return [f"--signal-lead ({self.signal_lead} s) must be shorter than --time "
                    f"({self.time} = {limit} s); lower --signal-lead or raise --time"]
        return []


def control_characters(text: str) -> list[str]:
    """The characters of `text` that may not appear in a rendered script, as U+XXXX names."""
    found = dict.fromkeys(ch for ch in text
                          if unicodedata.category(ch) in _BAD_CATEGORIES or ch in _BIDI_CONTROLS)
    return [f"U+{ord(ch):04X}" for ch in found]


def time_limit_seconds(text: str) -> int | None:
    """SLURM --time text in seconds (0 for UNLIMITED / INFINITE); None when it does not parse."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return 0
    match = _TIME.fullmatch(text)
    if not match:
        return None
    days, dh, dm, ds, minutes, ms, hs = match.groups()
    if days is not None:  # D-H[:M[:S]]
        return ((int(days) * 24 + int(dh)) * 60 + int(dm or 0)) * 60 + int(ds or 0)
    if hs is not None:  # H:M:S
        return (int(minutes) * 60 + int(ms)) * 60 + int(hs)
    return int(minutes) * 60 + int(ms or 0)  # M or M:S


def sbatch_options(job: SlurmJob) -> list[str]:
    """The `#SBATCH` lines of the job."""
    opts = [f"--job-name={job.job_name or 'qgen-' + Path(job.sweep).stem}",
            f"--nodes={job.nodes}", "--ntasks-per-node=1"]
    # One task per node holds the node's CPUs: Ray, not SLURM, places the trials inside it.
    opts.append(f"--cpus-per-task={job.cpus_per_node}" if job.cpus_per_node else "--exclusive")
    if job.gpus_per_node:
        opts.append(f"--gpus-per-node={job.gpus_per_node}")
    opts += [f"--{name}={value}" for name, value in
             (("mem", job.mem), ("time", job.time), ("partition", job.partition),
              ("account", job.account)) if value]
    # Logs: appended across requeues, named by job name and id, in the submit directory.
    opts += ["--output=slurm-%x-%j.out", "--open-mode=append", "--requeue",
             f"--signal=B:USR1@{job.signal_lead}"]
    return [f"#SBATCH {shlex.quote(o)}" for o in opts]


def launch_options(job: SlurmJob) -> str:
    """Extra `qgen-sweep launch` options (the --set overrides), shell-quoted."""
    return " ".join(shlex.join(["--set", item]) for item in job.overrides)


def template_values(job: SlurmJob) -> dict[str, str]:
    """Every placeholder of the template and its (already quoted) text."""
    q = shlex.quote
    python = Path(sys.executable)
    return {
        "sbatch_options": "\n".join(sbatch_options(job)),
        "sweep": q(job.sweep),
        "nodes": str(job.nodes),
        "signal_lead": str(job.signal_lead),
        "bin_dir": q(str(python.parent)),
        "python": q(str(python)),
        "workers_dir": q(str(data_dir("workers"))),
        "results_dir": q(str(job.results_dir.absolute())),
        "launch_options": launch_options(job),
        "gpus_per_node": str(job.gpus_per_node),
        # Whole nodes: the head's CPU count stands for every node's (exclusive partitions are
        # nearly always homogeneous).
        "srun_cpus": str(job.cpus_per_node) if job.cpus_per_node else '"$SLURM_CPUS_ON_NODE"',
        "srun_gpu_option": f"--gpus-per-node={job.gpus_per_node} " if job.gpus_per_node else "",
        "workdir": q(str(job.workdir.absolute())),
    }


def render(job: SlurmJob, template: str | None = None) -> str:
    """The batch script text: the template (workers/slurm.sbatch by default) filled in.

    Paths this process adds (the Python executable, the workers folder) are checked like the
    user's values: a control character in any of them is a UsageError, never a broken script.
    """
    text = template if template is not None else (data_dir("workers") / TEMPLATE_NAME).read_text()
    values = template_values(job)
    for name, value in values.items():
        bad = control_characters(value.replace("\n#SBATCH ", " "))
        if bad:
            raise UsageError(f"the SLURM script value {name} = {value!r} holds control "
                             f"characters ({', '.join(bad)}); move it to a path without them")
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise UsageError(f"the SLURM template has unknown placeholder(s) {unknown}; known: "
                         f"{sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def submit(script: str, sbatch: str = "sbatch") -> str:
    """Submit `script` with sbatch; return the job id. QGenError with SLURM's words on failure."""
    exe = shutil.which(sbatch)
    if exe is None:
        raise QGenError(f"{sbatch} not found on PATH: --submit needs SLURM's client commands; run "
                        f"on a login node, or write the script with --print and submit it there")
    proc = subprocess.run([exe, "--parsable"], input=script, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise QGenError(f"sbatch failed (exit {proc.returncode}): {slurm_message(proc.stderr)}; "
                        f"check the options against `sinfo` / `sacctmgr show assoc`, or inspect "
                        f"the script with --print")
    job_id = proc.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
    if not job_id.isdigit():
        raise QGenError(f"sbatch printed no job id (stdout {proc.stdout.strip()!r}, stderr "
                        f"{slurm_message(proc.stderr)!r})")
    return job_id


def slurm_message(stderr: str) -> str:
    """SLURM's own error lines (`sbatch: error: ...`) joined into one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines
    return " / ".join(errors) if errors else "no message on stderr"
