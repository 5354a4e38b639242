"""VVTQ's oscillation-aware bin regularizer (Huang, Shen & Cheng, "Variation-aware Vision
Transformer Quantization", 2023), as an option of LSQ training (`config.bin_regularizer` = its
weight lambda; 0 = off).

Latent weights that sit near a bin boundary flip between two codes from step to step
(oscillation). The regularizer pulls each weight towards the centre of its bin and the weights of
a bin together: per LSQ layer, with s the step size, codes q = round(clamp(w / s, Qn, Qp)) and
w_c = clamp(w, Qn s, Qp s) the clipped latent weight,

    R = mean_i (w_c,i - s q_i)^2  +  sum over bins b with >= 2 weights of Var{w_c,i : q_i = b}

(unbiased variance), and the training objective is cross-entropy + lambda * sum of R over the
layers. The target s q and the bins are constants (no gradient); the gradient reaches the
latent weights only, never the step size. The epoch training loss the protocol records and
selects on stays the cross-entropy.

Of VVTQ's other components, none is implemented: multi-crop knowledge distillation (it needs a
full-precision teacher and multi-crop soft labels), module-dependent quantization (head-wise step
sizes for q/k/v and its own gradient scale), and activation quantization (QGen quantizes
weights only).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qgen_sweep.trial.lsq import lsq_layers, qrange


def layer_term(weight: Tensor, step_size: Tensor, bits: int) -> Tensor:
    """R of one layer (fp32; gradient to `weight` only)."""
    qn, qp = qrange(bits)
    w = weight.float().flatten()
    s = step_size.detach().float()
    clipped = torch.minimum(torch.maximum(w, qn * s), qp * s)
    with torch.no_grad():
        codes = (w / s).clamp(qn, qp).round()
        index = (codes - qn).long()
        count = torch.bincount(index, minlength=qp - qn + 1).to(w.dtype)
    distance = (clipped - codes * s).pow(2).mean()
    total = torch.zeros_like(count).index_add(0, index, clipped)
    mean = total / count.clamp_min(1)
    # two passes (deviation from the bin mean), not sum(x^2) - n mean^2: bins hold millions of
    # weights in large layers, where the one-pass form cancels catastrophically in fp32
    spread = torch.zeros_like(count).index_add(0, index, (clipped - mean[index]).pow(2))
    variance = torch.where(count >= 2, spread / (count - 1).clamp_min(1), torch.zeros_like(count))
    return distance + variance.sum()


def bin_regularizer(model: nn.Module) -> Tensor:
    """Sum of R over every LSQ layer of `model` (0 for a model without any)."""
    terms = [layer_term(layer.weight, layer.step_size, layer.bits)
             for _, layer in lsq_layers(model)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()
