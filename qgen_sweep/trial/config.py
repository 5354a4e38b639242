"""Typed, frozen description of one trial and of its results (torch-free).

TrialConfig is the scientific identity of a trial: everything that changes what is computed.
Its canonical form is hashed into the content-addressed `trial_id`. Where the run happens and how
fast (device, data directory, compilation, eval batch size) lives in TrialRuntime and is excluded.
Defaults follow docs/science.md (paper appendix B.3) unless stated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qgen_sweep.errors import UsageError
from qgen_sweep.trial.archs import ARCH_NAMES, ARCHS, DEFAULT_ARCH

# name -> (in_channels, image_size, num_classes)
# imagenet: ImageNet-1K in the ImageFolder layout, streamed (trial/stream.py); 224 px is the
# training resolution of torchvision's weights (`resolution` changes it), its classes are the
# class folders found (1000 for ImageNet-1K).
DATASET_SHAPES = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "digits": (1, 8, 10),
                  "imagenet": (3, 224, 1000)}
RESIZED_DATASETS = ("imagenet",)  # images are resized to the model: `resolution` may be set
PRETRAINED_SOURCES = ("", "torchvision")  # or a path to a weight file
DATASETS = tuple(DATASET_SHAPES)
BITS = (2, 4, 8, 32)  # 32 = full precision: no quantizer at all
OPTIMIZERS = ("sgd", "adam", "rmsprop")
FIRST_LAST_POLICIES = ("int8", "same")  # LSQ paper keeps first/last layer at 8 bits
AMP_MODES = ("none", "bf16")  # bf16 autocast (GPU only); quantizer math stays fp32
AUGMENTATIONS = ("none", "crop-flip")  # science.md: reference code trains without augmentation
NOISE_CONVENTIONS = ("reference", "jiang")
NUM_CLASSES = {name: shape[2] for name, shape in DATASET_SHAPES.items()}  # chance = 1 / classes
MIN_RESOLUTION = 8  # pixels: the smallest image the registered models take
# Fields added after results existed, with the default at which to_dict leaves them out.
LATER_FIELDS: dict[str, Any] = {"arch": DEFAULT_ARCH, "resolution": 0, "pretrained": "",
                                "bin_regularizer": 0.0}


@dataclass(frozen=True)
class TrialConfig:
    """Everything that defines what one trial computes (hashed into trial_id)."""

    dataset: str
    bits: int
    optimizer: str
    lr: float
    weight_decay: float
    # NiN: number of blocks, required. Other archs fix their own depth: it is recorded as 1.
    depth: int = 0
    width: int = 0  # width multiplier: channels = base_width x width (0 = unset; 1 off NiN)
    # channels of the first stage (NiN: of every block); 0 = the arch's default (archs.py:
    # nin 25 as in the reference code, resnet 16 as in the paper, mobilenet 32, vgg 64)
    base_width: int = 0
    epochs: int = 300
    batch_size: int = 128
    milestones: tuple[int, ...] = (100, 200)  # MultiStep schedule, paper appendix B.3
    gamma: float = 0.1
    momentum: float = 0.9  # SGD only
    seed: int = 0
    augment: str = "none"
    first_last: str = "int8"
    # step-size lr = lr x this (science.md: an open choice under Adam/RMSProp; start at 1)
    step_size_lr_scale: float = 1.0
    amp: str = "none"
    arch: str = DEFAULT_ARCH  # a registered architecture (qgen_sweep/trial/archs.py)
    # Side of the square training images in pixels (imagenet only); 0 = the dataset's (224).
    resolution: int = 0
    # Start from trained weights: "" = from scratch (the seed's init), "torchvision" = torchvision's
    # ImageNet-1K weights of the arch (archs.py names them), or a path to a weight file (a
    # state_dict, a {"model": state_dict} checkpoint, or for deit_t the DeiT release's format).
    pretrained: str = ""
    # VVTQ's oscillation-aware bin regularizer (Huang, Shen & Cheng 2023), its weight lambda;
    # 0 = off (plain LSQ). trial/vvtq.py.
    bin_regularizer: float = 0.0
    # The engine drops the ragged last batch (static shapes): an epoch = floor(n / batch) steps.

    def __post_init__(self) -> None:
        self._resolve_arch_defaults()
        problems = self.problems()
        if problems:
            raise UsageError("; ".join(problems))

    def _resolve_arch_defaults(self) -> None:
        """Fill base_width (and off NiN, depth and width) from the arch, so the stored config
        and the trial id always hold the values the model is built with."""
        entry = ARCHS.get(self.arch) if isinstance(self.arch, str) else None
        if entry is None:
            return  # problems() names the bad arch
        if self.base_width == 0:
            # ImageNet and pretrained starts use torchvision's widths (their weights fix them)
            imagenet_layout = self.dataset == "imagenet" or bool(self.pretrained)
            object.__setattr__(self, "base_width",
                               entry.imagenet_base_width if imagenet_layout else entry.base_width)
        if not entry.uses_depth:
            # The arch fixes its depth; a depth given for NiN in a mixed grid does not apply.
            object.__setattr__(self, "depth", 1)
            if self.width == 0:
                object.__setattr__(self, "width", 1)

    def problems(self) -> list[str]:
        """Return one human-readable line per invalid field (empty when valid)."""
        out: list[str] = []

        def one_of(name: str, value: Any, allowed: tuple) -> None:
            if value not in allowed:
                shown = ", ".join(str(a) for a in allowed)
                out.append(f"{name} must be one of {shown}, but got {value!r}")

        def positive(name: str, value: float, allow_zero: bool = False) -> None:
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            ok = ok and (value >= 0 if allow_zero else value > 0)
            if not ok:
                rule = ">= 0" if allow_zero else "> 0"
                out.append(f"{name} must be a finite number {rule}, but got {value!r}")

        one_of("arch", self.arch, ARCH_NAMES)
        one_of("dataset", self.dataset, DATASETS)
        one_of("bits", self.bits, BITS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("augment", self.augment, AUGMENTATIONS)
        one_of("first_last", self.first_last, FIRST_LAST_POLICIES)
        one_of("amp", self.amp, AMP_MODES)
        positive("lr", self.lr)
        positive("weight_decay", self.weight_decay, allow_zero=True)
        positive("gamma", self.gamma)
        positive("momentum", self.momentum, allow_zero=True)
        positive("step_size_lr_scale", self.step_size_lr_scale)
        positive("bin_regularizer", self.bin_regularizer, allow_zero=True)
        out += self._imagenet_problems()
        for name in ("depth", "width", "base_width", "epochs", "batch_size"):
            value = getattr(self, name)
            if name in ("depth", "width") and value == 0:
                what = "the number of NiN blocks" if name == "depth" else "the width multiplier"
                out.append(f"{name} ({what}) is required for arch {self.arch}, but got none; "
                           f"give e.g. {name} = {3 if name == 'depth' else 10}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                out.append(f"{name} must be an integer >= 1, but got {value!r}")
        if not all(isinstance(m, int) and m >= 1 for m in self.milestones):
            out.append(f"milestones must be epochs >= 1, but got {list(self.milestones)!r}")
        elif list(self.milestones) != sorted(set(self.milestones)):
            out.append(f"milestones must be strictly increasing, but got {list(self.milestones)!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            out.append(f"seed must be an integer, but got {self.seed!r}")
        return out

    def _imagenet_problems(self) -> list[str]:
        """Rules of resolution, pretrained starts and the bin regularizer."""
        out: list[str] = []
        res = self.resolution
        if not isinstance(res, int) or isinstance(res, bool) or res < 0:
            out.append(f"resolution must be an integer >= 0 (0 = the dataset's), but got {res!r}")
        elif res and self.dataset not in RESIZED_DATASETS:
            out.append(f"resolution applies to {', '.join(RESIZED_DATASETS)} (images resized to "
                       f"the model), but {self.dataset} is fixed at its own size; leave it out")
        elif res and res < MIN_RESOLUTION:
            out.append(f"resolution must be >= {MIN_RESOLUTION} pixels, but got {res}")
        if not isinstance(self.pretrained, str):
            out.append(f"pretrained must be \"\", \"torchvision\" or a weight file path, but got "
                       f"{self.pretrained!r}")
            return out
        entry = ARCHS.get(self.arch)
        if self.pretrained == "torchvision" and entry is not None and not entry.torchvision:
            have = ", ".join(a.name for a in ARCHS.values() if a.torchvision)
            out.append(f"pretrained = \"torchvision\": there are published ImageNet weights for "
                       f"{have}, not {self.arch}; give a weight file path instead")
        if self.pretrained and entry is not None and (
                self.base_width != entry.imagenet_base_width or self.width != 1):
            out.append(f"pretrained weights fix {self.arch}'s layout: base_width must be "
                       f"{entry.imagenet_base_width} and width 1, but got base_width "
                       f"{self.base_width}, width {self.width}; leave them out")
        if self.bin_regularizer and self.bits == 32:
            out.append("bin_regularizer penalises weights around quantization bins: it needs "
                       "bits 2, 4 or 8, but bits is 32; leave it out for FP32 trials")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), the canonical form stored with every result.

        Fields added after results existed (`arch`, `resolution`, `pretrained`,
        `bin_regularizer`) are left out at their defaults, so the configs, checkpoints and
        trial ids written before them stay those of the same trials.
        """
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        for name, default in LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Inverse of to_dict. Unknown keys are an error naming the allowed ones."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UsageError(
                f"unknown trial config key(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
            )
        values = dict(data)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values)

    def canonical_json(self) -> str:
        """Sorted, compact JSON of to_dict(); floats in repr form so 1e-4 == 0.0001."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def trial_id(self) -> str:
        """Content address: first 16 hex digits of sha256(canonical_json)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @property
    def num_classes(self) -> int:
        return DATASET_SHAPES[self.dataset][2]

    @property
    def image_size(self) -> int:
        """Side of the square images the model sees, in pixels."""
        return self.resolution or DATASET_SHAPES[self.dataset][1]

    @property
    def in_channels(self) -> int:
        return DATASET_SHAPES[self.dataset][0]



# Fields a member of a fused bundle may set for itself; every other field must agree within a
# bundle (the members share one network shape and one data order).
PER_MEMBER_FIELDS = (
    "bits", "optimizer", "lr", "weight_decay", "momentum", "first_last", "step_size_lr_scale",
    "gamma",
)


def bundle_key(config: TrialConfig) -> tuple:
    """What members of one fused bundle must share: every field except PER_MEMBER_FIELDS."""
    data = config.to_dict()
    return tuple((k, json.dumps(data[k])) for k in sorted(data) if k not in PER_MEMBER_FIELDS)


def unfusable_reasons(config: TrialConfig) -> list[str]:
    """Why the fused engine (trial/fused.py, trial/bundle.py) cannot train `config`; [] if it can.

    The fused engine implements NiN from scratch on the resident datasets with the plain LSQ
    objective; a trial needing anything else trains alone (run_trial), so no option is dropped."""
    out = []
    if not ARCHS[config.arch].fusable:
        out.append(f"arch {config.arch}")
    if config.bin_regularizer:
        out.append("bin_regularizer")
    if config.pretrained:
        out.append("pretrained")
    if config.dataset in RESIZED_DATASETS:
        out.append(f"dataset {config.dataset} (streamed)")
    return out


# In checkpoints/bundle-<id>/: the member trial ids in training order (written by the fused
# engine, read by the planner to keep an interrupted bundle's members together).
MEMBERS_FILE = "members.json"


def bundle_id(configs: Sequence[TrialConfig]) -> str:
    """Content address of a bundle: sha256 of its sorted member trial ids, 16 hex digits."""
    ids = ",".join(sorted(c.trial_id for c in configs))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


# The TrialConfig fields that plan and trial rows carry as columns of their own, in column order
# (what the analysis groups and pairs on); every field is in their config_json as well. The store
# derives the column types from these fields' annotations.
COLUMN_FIELDS = ("dataset", "arch", "bits", "optimizer", "lr", "weight_decay", "depth",
                 "width", "base_width", "epochs", "batch_size", "seed")

# Values a runtime may take (checked by the spec parser, before any trial starts).
RUNTIME_DTYPES = ("float32", "float64")
DECODE_MODES = ("host", "device")  # runtime.decode (imagenet)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrialRuntime:
    """Where and how fast a trial runs; never changes the result beyond float tolerance."""

    device: str = "auto"  # "auto" = cuda when available, else cpu
    data_dir: str | None = None  # None = $QGEN_DATA_DIR, else ~/.cache/qgen-sweep/data
    download: bool = False  # let torchvision fetch CIFAR (needs internet)
    eval_batch_size: int = 1024
    eval_test_every: int = 1  # evaluate the clean test set every N epochs for curves (0 = never)
    compile: str | None = None  # a COMPILE_MODES torch.compile mode; None = eager
    channels_last: bool = False
    threads: int | None = None  # torch.set_num_threads on CPU; None = leave as is
    # Parameter/data dtype: "float64" makes fused-vs-unfused equivalence exact to ~1e-10 on the
    # CPU (tests/test_trial_bundle.py); training runs use float32 (optional bf16 autocast: `amp`).
    dtype: str = "float32"
    # imagenet: DataLoader worker processes that decode batches (0 = in the trial's process),
    # and where JPEGs are decoded: "host" (libjpeg-turbo in the workers) or "device" (nvJPEG
    # on the trial's GPU; the workers only read the files). trial/stream.py.
    data_workers: int = 4
    decode: str = "host"


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch of training. Test metrics are NaN when the epoch was not evaluated."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches (augmented data, train mode)
    train_acc: float  # fraction in [0, 1]
    lr: float
    seconds: float
    test_loss: float = math.nan
    test_acc: float = math.nan
    step_size_min: float = math.nan  # over quantized layers; NaN for FP32
    step_size_mean: float = math.nan
    step_size_max: float = math.nan


@dataclass(frozen=True)
class TrialResult:
    """Final metrics of the kept model (lowest epoch training loss), evaluated in eval mode on
    the full clean training and test splits. Accuracies are fractions in [0, 1]."""

    status: str  # "done" | "diverged"
    train_acc: float
    test_acc: float
    train_loss: float
    test_loss: float
    gap: float  # test_loss - train_loss
    l2_norm: float  # L2 norm of all conv weights (paper Table 2)
    best_epoch: int  # epoch of the kept model (0 if none)
    epochs_run: int
    seconds: float
    device: str
    diverged_epoch: int | None = None
    step_sizes: dict[str, float] = field(default_factory=dict)  # layer -> learned LSQ step size
    history: tuple[EpochMetrics, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics as a flat dict (for --json output and result rows)."""
        data = dataclasses.asdict(self)
        data.pop("history")
        return data
