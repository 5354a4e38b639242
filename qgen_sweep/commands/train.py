"""`qgen-sweep train`: one trial in-process, the debugging entry point for one configuration.

Flags mirror TrialConfig (what is computed) and TrialRuntime (where and how fast). Values are
validated by TrialConfig, so the messages are the same as for a sweep spec.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import click

from qgen_sweep.commands._output import chosen_format, format_option, json_alias
from qgen_sweep.errors import UsageError
from qgen_sweep.trial.archs import ARCH_NAMES, ARCHS, DEFAULT_ARCH
from qgen_sweep.trial.config import COMPILE_MODES, TrialConfig, TrialRuntime

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
_RUNTIME = TrialRuntime()


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(
            f"milestones must be comma-separated epochs like 100,200, but got {text!r}"
        ) from None


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: write not-a-number metrics as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def _write_outputs(out: Path, summary: dict[str, Any], history: list[dict[str, Any]]) -> None:
    from qgen_sweep.atomic import atomic_open, write_text_atomic

    write_text_atomic(out / "result.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    fields = list(history[0]) if history else ["epoch"]
    with atomic_open(out / "epochs.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


# Accuracies: fractions in result.json and --format json, percent in the lines for people.
_PERCENT = ("train_acc", "test_acc")


def _echo_epoch(metrics: Any) -> None:
    click.echo(
        f"epoch {metrics.epoch:4d}  loss {metrics.train_loss:.4f}  "
        f"acc {100 * metrics.train_acc:.2f}%  test acc {100 * metrics.test_acc:.2f}%  "
        f"lr {metrics.lr:.3g}  {metrics.seconds:.2f}s",
        err=True,
    )


@click.command("train")
@click.option("--dataset", required=True, help="cifar10, cifar100, imagenet or digits.")
@click.option("--bits", type=int, required=True, help="2, 4, 8 (LSQ weights) or 32 (FP32).")
@click.option("--optimizer", required=True, help="sgd (momentum), adam or rmsprop.")
@click.option("--lr", type=float, required=True, help="Learning rate.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="Weight decay (not applied to LSQ step sizes).")
@click.option("--arch", type=click.Choice(ARCH_NAMES), default=DEFAULT_ARCH, show_default=True,
              help="Architecture (docs/science.md describes each).")
@click.option("--depth", type=int, default=None,
              help="Number of NiN blocks (nin only: the other archs fix their depth).")
@click.option("--width", type=int, default=None,
              help="Width multiplier (required for nin; default 1 for the others).")
@click.option("--base-width", type=int, default=None,
              help="Channels of the first stage, times --width [default: the arch's: "
                   + ", ".join(f"{a.name} {a.base_width}" for a in ARCHS.values()) + "].")
@click.option("--epochs", type=int, default=_DEFAULTS["epochs"], show_default=True,
              help="Training epochs.")
@click.option("--batch-size", type=int, default=_DEFAULTS["batch_size"], show_default=True,
              help="Training examples per step.")
@click.option("--milestones", default=",".join(map(str, _DEFAULTS["milestones"])),
              show_default=True, help="MultiStep epochs, comma-separated ('' for none).")
@click.option("--gamma", type=float, default=_DEFAULTS["gamma"], show_default=True,
              help="Learning-rate factor at each milestone.")
@click.option("--momentum", type=float, default=_DEFAULTS["momentum"], show_default=True,
              help="SGD momentum.")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True,
              help="Seed of the initialisation, the data order and augmentation.")
@click.option("--augment", default=_DEFAULTS["augment"], show_default=True,
              help="none or crop-flip.")
@click.option("--first-last", default=_DEFAULTS["first_last"], show_default=True,
              help="int8 (first/last layer at 8 bits) or same (at --bits).")
@click.option("--step-size-lr-scale", type=float, default=_DEFAULTS["step_size_lr_scale"],
              show_default=True, help="LSQ step-size learning rate = lr x this.")
@click.option("--amp", default=_DEFAULTS["amp"], show_default=True, help="none or bf16.")
@click.option("--device", default=_RUNTIME.device, show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder [default: $QGEN_DATA_DIR, else ~/.cache/qgen-sweep/data].")
@click.option("--download", is_flag=True, help="Let torchvision fetch CIFAR (needs internet).")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=_RUNTIME.eval_batch_size,
              show_default=True, help="Examples per forward pass when evaluating.")
@click.option("--eval-test-every", type=click.IntRange(min=0), default=_RUNTIME.eval_test_every,
              show_default=True, help="Test-set curve every N epochs (0 = never).")
@click.option("--compile", "compile_mode", type=click.Choice(COMPILE_MODES), default=None,
              help="Compile the model with torch.compile in this mode (default: eager).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write result.json, epochs.csv and checkpoints/ here; rerun to resume.")
@format_option("table", "json", help_="table = the epoch lines and the final metrics for people "
              "(accuracies in percent); json = the result as one JSON object (accuracies as "
              "fractions, as in result.json).")
@json_alias
def train(**options: Any) -> None:
    """Train one trial in-process and print its final metrics.

    \b
    Examples:
      qgen-sweep train --dataset digits --bits 4 --optimizer sgd --lr 0.05 \\
        --weight-decay 1e-4 --depth 2 --width 2 --base-width 8 --epochs 15 --out runs/one
      qgen-sweep train --arch resnet18 --dataset digits --bits 2 --optimizer sgd --lr 0.05 \\
        --base-width 4 --epochs 5

    The architectures, LSQ and the protocol are described in docs/science.md.
    """
    out: Path | None = options.pop("out")
    as_json = chosen_format(options.pop("fmt"), options.pop("as_json")) == "json"
    runtime = TrialRuntime(
        device=options.pop("device"), data_dir=options.pop("data_dir"),
        download=options.pop("download"), eval_batch_size=options.pop("eval_batch_size"),
        eval_test_every=options.pop("eval_test_every"), compile=options.pop("compile_mode"),
        channels_last=options.pop("channels_last"), threads=options.pop("threads"),
    )
    options["milestones"] = _milestones(options["milestones"])
    if options["depth"] is not None and not ARCHS[options["arch"]].uses_depth:
        raise UsageError(f"--depth is the number of NiN blocks; arch {options['arch']} fixes "
                         f"its own depth, so leave --depth out (got {options['depth']})")
    for name in ("depth", "width", "base_width"):  # 0 = unset: the arch's default
        options[name] = 0 if options[name] is None else options[name]
    config = TrialConfig(**options)  # raises UsageError with one line per bad value
    _warn_unreached_milestones(config)
    summary = _reused(out, config) if out is not None else None
    if summary is None:
        summary = _train(config, runtime, out, as_json)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    _print_summary(summary, out)


def _warn_unreached_milestones(config: TrialConfig) -> None:
    late = [m for m in config.milestones if m > config.epochs]
    if late:
        click.echo(f"warning: milestones {', '.join(map(str, late))} are after the last epoch "
                   f"({config.epochs}): the learning rate never drops there; pass --milestones "
                   f"with epochs up to {config.epochs} ('' for none)", err=True)


def _reused(out: Path, config: TrialConfig) -> dict[str, Any] | None:
    """The finished result in --out when it is this configuration's (None: train); a result of
    another configuration there is a UsageError."""
    path = out / "result.json"
    if out.is_file():
        raise UsageError(f"--out {out} is a file; pass a folder (it gets result.json, "
                         "epochs.csv and checkpoints/)")
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        trial_id = summary["trial_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: train (resuming from the checkpoints) and rewrite it
    if trial_id != config.trial_id:
        raise UsageError(f"--out {out} holds the result of another configuration (trial "
                         f"{trial_id}, this one {config.trial_id}); pick another --out, or "
                         f"delete {out} to train this one there")
    click.echo(f"reused the result in {path} (the same configuration, trial {trial_id}, "
               f"already trained); delete {out} to train it again", err=True)
    return summary


def _train(config: TrialConfig, runtime: TrialRuntime, out: Path | None,
           as_json: bool) -> dict[str, Any]:
    from qgen_sweep.trial.train import run_trial  # torch: only when a trial really runs

    checkpoints = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints = out / "checkpoints"
    result = run_trial(config, runtime, checkpoints, on_epoch=None if as_json else _echo_epoch)
    summary = {"trial_id": config.trial_id, **result.metrics(), "config": config.to_dict()}
    summary = _finite_or_none(summary)
    if out is not None:
        history = [_finite_or_none(dataclasses.asdict(m)) for m in result.history]
        _write_outputs(out, summary, history)
    return summary


def _print_summary(summary: dict[str, Any], out: Path | None) -> None:
    def fmt(key: str, value: Any) -> str:
        if value is None:
            return "nan"
        if key in _PERCENT:
            return f"{100 * value:.2f}%"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    keys = ("status", "train_acc", "test_acc", "train_loss", "test_loss", "gap", "l2_norm",
            "best_epoch", "epochs_run", "seconds", "device")
    for key in keys:
        click.echo(f"{key:>11}  {fmt(key, summary[key])}")
    if summary.get("diverged_epoch") is not None:
        click.echo(f"   diverged  at epoch {summary['diverged_epoch']}")
    if out is not None:
        click.echo(f"    written  {out / 'result.json'}, {out / 'epochs.csv'}")


COMMANDS = (train,)
