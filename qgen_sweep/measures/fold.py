"""The plain network a trial computes, with every BatchNorm folded into the conv before it.

science.md, measures pipeline step 1: a quantized model is replaced by ordinary convs holding its
dequantized weights (q * s), and every BN in eval mode is folded into the preceding conv:
    W' = W * gamma / sqrt(var + eps)   (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta
so the measures perturb the weights that actually act on the data.

A NiN (a flat `layers` Sequential) folds into a Sequential of nn.Conv2d and its parameter-free
layers, which the measures' fast stacked path runs. Any other arch (ResNet, MobileNet, VGG, ...)
is traced with torch.fx after its LSQ layers are replaced by plain ones: every BatchNorm2d whose
input is a conv output used by nothing else is folded into that conv; what is left (a BN after an
addition, say) stays a BN in eval mode, and linear layers stay linear with their dequantized
weights. The result computes the model's eval-mode logits.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import Tensor, nn


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight a conv / linear layer computes with: q * s for an LSQ layer, else its weight."""
    quantized = getattr(layer, "quantized_weight", None)
    weight = quantized() if callable(quantized) else layer.weight
    return weight.detach().float()


def plain_linear(linear: nn.Linear) -> nn.Linear:
    """A plain fp32 nn.Linear with the layer's effective (dequantized) weight."""
    weight = effective_weight(linear)
    plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                      device=weight.device, dtype=torch.float32)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if linear.bias is not None:
            plain.bias.copy_(linear.bias.detach().float())
    return plain


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """A plain nn.Conv2d computing bn(conv(x)) in eval mode (conv(x) when `bn` is None)."""
    weight = effective_weight(conv)
    out_channels = weight.shape[0]
    bias = conv.bias.detach().float() if conv.bias is not None else weight.new_zeros(out_channels)
    if bn is not None:
        if not bn.track_running_stats or bn.running_var is None:
            raise ValueError("cannot fold a BatchNorm without running statistics into a conv")
        gamma = bn.weight.detach().float() if bn.affine else weight.new_ones(out_channels)
        beta = bn.bias.detach().float() if bn.affine else weight.new_zeros(out_channels)
        scale = gamma / torch.sqrt(bn.running_var.float() + bn.eps)  # (out,)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean.float()) * scale + beta
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=torch.float32,
    )
    with torch.no_grad():
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
    return plain


def fold_sequential(layers: nn.Sequential) -> nn.Sequential:
    """Fold every conv -> BatchNorm2d pair of `layers`; other layers are copied unchanged.

    A BatchNorm2d that does not directly follow a conv cannot be folded and is an error, as is a
    layer with parameters that is neither a conv nor a BN (the measures would miss its weights).
    """
    modules = list(layers)
    out: list[nn.Module] = []
    index = 0
    while index < len(modules):
        module = modules[index]
        if isinstance(module, nn.Conv2d):
            following = modules[index + 1] if index + 1 < len(modules) else None
            bn = following if isinstance(following, nn.BatchNorm2d) else None
            out.append(fold_conv_bn(module, bn))
            index += 2 if bn is not None else 1
            continue
        if isinstance(module, nn.BatchNorm2d):
            raise ValueError(f"layer {index} is a BatchNorm2d without a conv before it")
        if any(True for _ in module.parameters()):
            kind = type(module).__name__
            raise ValueError(f"layer {index} ({kind}) has parameters; only convs and BNs may")
        out.append(copy.deepcopy(module))
        index += 1
    return nn.Sequential(*out).eval()


def plain_network(model: nn.Module) -> nn.Module:
    """The folded plain network of any registered model, in eval mode (see the module
    docstring): a Sequential for NiN, a torch.fx GraphModule for the other archs."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential):
        return fold_sequential(layers)
    if isinstance(model, nn.Sequential):
        return fold_sequential(model)
    return fold_graph(model)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _plain_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` whose conv and linear layers are plain fp32 layers holding their
    effective weights (so torch.fx sees only standard leaf modules), other modules in fp32."""
    net = copy.deepcopy(model).eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Conv2d):
            _replace(net, name, fold_conv_bn(module, None) if hasattr(module, "quantized_weight")
                     else module.float())
        elif isinstance(module, nn.Linear) and hasattr(module, "quantized_weight"):
            _replace(net, name, plain_linear(module))
    return net.float()


def fold_graph(model: nn.Module) -> torch.fx.GraphModule:
    """Trace `model` and fold every conv -> BatchNorm2d pair whose conv output feeds only that
    BN; the GraphModule computes the model's eval-mode outputs."""
    traced = torch.fx.symbolic_trace(_plain_layers(model))
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1):
            continue  # a BN after an addition or a pooling stays a BN
        _replace(traced, source.target,
                 fold_conv_bn(modules[source.target], modules[node.target]))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def weight_vector(net: nn.Module) -> Tensor:
    """All conv and linear weights of `net` as one flat fp32 vector (no biases, no BN
    parameters), in module order: the measures' w (NiN has convs only)."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return torch.cat([m.weight.detach().float().reshape(-1) for m in layers])
