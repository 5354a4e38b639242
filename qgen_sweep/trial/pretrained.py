"""Load a pretrained start into a freshly built float model, before LSQ wraps it (so the step
sizes are initialised from the pretrained weights, as LSQ fine-tuning does).

Accepted files (trial/weights.py finds them): a state_dict or a `{"model": ...}` /
`{"state_dict": ...}` checkpoint in any of these layouts:
- ours (a best.pt of the same arch; LSQ step sizes in it are dropped and initialised afresh);
- torchvision's (resnet18/50 and swin_t have the same names; mobilenet_v2's Conv2dNormActivation
  blocks are matched to ours tensor by tensor, in order, every shape checked; ViT's
  in_proj_weight becomes in_proj.weight);
- DeiT's released checkpoints for deit_t (timm names, models/vit.py converts them).
The classifier (ArchSpec.head) is kept from the fresh model when the class count differs (a
fine-tune on fewer classes); any other missing or misshapen tensor is a one-line DataError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from qgen_sweep.errors import DataError
from qgen_sweep.trial.archs import ARCHS
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.weights import check_weights


def fetch_torchvision(config: TrialConfig) -> Path:
    """Download torchvision's weight file of the arch into torch.hub's cache (internet)."""
    path = check_weights(config, download=True)
    if path is not None and not path.is_file():
        try:
            torch.hub.load_state_dict_from_url(ARCHS[config.arch].torchvision, progress=False)
        except Exception as error:  # network errors come in many types
            raise DataError(f"downloading {config.arch}'s torchvision weights into "
                            f"{path.parent} failed ({error}); copy the file there by "
                            f"hand") from error
    return path


def read_state(path: Path) -> dict[str, Tensor]:
    """The state_dict in a weight file (unwrapping {"model": ...} / {"state_dict": ...})."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file
        raise DataError(f"pretrained weight file {path} does not load ({error}); download it "
                        f"again") from error
    for key in ("model", "state_dict"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise DataError(f"pretrained weight file {path} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in payload.items()}  # DDP-saved files too


def by_order(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """`state` renamed to `target`'s names tensor by tensor in order, when both hold the same
    sequence of shapes (apart from a differing classifier at the end); else None."""
    if len(state) != len(target):
        return None
    pairs = list(zip(state.values(), target.items(), strict=True))
    if not all(v.shape == t.shape for v, (_, t) in pairs[:-2]):
        return None
    return {name: value for value, (name, _) in pairs}


def convert(config: TrialConfig, state: dict[str, Tensor], model: nn.Module,
            image_size: int) -> dict[str, Tensor]:
    """`state` in this model's names (see the module docstring for the layouts)."""
    state = {k: v for k, v in state.items() if not k.endswith("step_size")}
    target = model.state_dict()
    if config.arch == "deit_t":
        from qgen_sweep.trial.models import vit

        state = vit.resize_positions(vit.convert(state), image_size,
                                     vit.patch_size(config, image_size))
    elif set(state) != set(target):
        state = by_order(state, target) or state
    return state


def load_pretrained(model: nn.Module, config: TrialConfig, image_size: int) -> nn.Module:
    """Put the weights of `config.pretrained` into the float `model` (in place); returns it."""
    path = check_weights(config)
    state = convert(config, read_state(path), model, image_size)
    target, head = model.state_dict(), ARCHS[config.arch].head
    misshapen = sorted(k for k in state if k in target and state[k].shape != target[k].shape)
    fresh_head = [k for k in misshapen if head and k.startswith(head)]
    missing = sorted(set(target) - set(state) - {k for k in target if k.endswith("step_size")})
    problems = [k for k in misshapen if k not in fresh_head] + missing + \
        sorted(set(state) - set(target))
    if problems:
        raise DataError(f"pretrained weight file {path} does not fit {config.arch} "
                        f"({len(problems)} tensors missing, extra or misshapen, e.g. "
                        f"{problems[0]}); give weights of this architecture")
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh_head}, strict=False)
    return model
