"""BN folding and the plain (dequantized) network the measures perturb."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qgen_sweep.measures.fold import fold_sequential, plain_network, weight_vector
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.models import build_model, conv_weight_count, weight_count

torch.set_num_threads(2)


def _randomise_bn(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BN non-trivial affine parameters and running statistics."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            with torch.no_grad():
                module.weight.copy_(torch.rand(c, generator=generator) * 2 + 0.1)
                module.bias.copy_(torch.randn(c, generator=generator))
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) * 3 + 0.05)


def test_folding_preserves_logits_of_a_conv_bn_relu_sequential() -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 5, 1), nn.ReLU(),  # a conv with no BN after it stays as it is
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
    )
    _randomise_bn(layers, g)
    layers.eval()
    x = torch.randn(16, 3, 12, 12, generator=g)
    folded = fold_sequential(layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in folded) == 3
    torch.testing.assert_close(folded(x), layers(x), rtol=0, atol=1e-5)


def test_bn_without_a_conv_before_it_is_refused() -> None:
    with pytest.raises(ValueError, match="without a conv"):
        fold_sequential(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()))


def test_layer_with_unfoldable_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="Linear"):
        fold_sequential(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(2, 2)))


@pytest.mark.parametrize("bits", [2, 4, 8, 32])
def test_plain_network_of_a_trained_like_nin_gives_the_models_logits(bits: int) -> None:
    config = TrialConfig("cifar10", bits, "sgd", 0.1, 0.0, depth=2, width=1, base_width=8)
    torch.manual_seed(1)
    model = build_model(config, in_channels=3, num_classes=10)
    g = torch.Generator().manual_seed(1)
    _randomise_bn(model, g)
    with torch.no_grad():  # move step sizes away from their init, as training does
        for module in model.modules():
            if hasattr(module, "step_size"):
                module.step_size.mul_(1.3)
    model.eval()
    x = torch.randn(8, 3, 32, 32, generator=g)
    plain = plain_network(model)
    assert not any(hasattr(m, "step_size") for m in plain.modules())
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-5)
    if bits != 32:
        # The plain net carries the dequantized weights: few distinct values per output channel
        # before the BN scale, so it must differ from the float weights.
        raw = torch.cat([c.weight.reshape(-1) for c in plain.modules() if isinstance(c, nn.Conv2d)])
        assert not torch.allclose(raw, weight_vector(fold_sequential(_float_copy(model))))


def _float_copy(model: nn.Module) -> nn.Sequential:
    """The same network with the float (not quantized) weights in ordinary convs."""
    layers = []
    for m in model.layers:
        if isinstance(m, nn.Conv2d) and hasattr(m, "step_size"):
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
            conv.load_state_dict({"weight": m.weight, "bias": m.bias})
            layers.append(conv)
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize(
    ("depth", "width", "omega"), [(2, 8, 527_400), (4, 12, 3_161_100)]
)
def test_weight_vector_length_is_the_pinned_conv_weight_count(
    depth: int, width: int, omega: int
) -> None:
    config = TrialConfig("cifar10", 4, "sgd", 0.1, 0.0, depth=depth, width=width)
    model = build_model(config, in_channels=3, num_classes=10).eval()
    assert weight_vector(plain_network(model)).numel() == omega == conv_weight_count(model)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2",
                                  "vgg19"])
def test_every_backbone_folds_into_a_plain_network_with_the_models_logits(arch: str) -> None:
    config = TrialConfig("digits", 4, "sgd", 0.1, 0.0, arch=arch, base_width=4)
    torch.manual_seed(2)
    model = build_model(config, in_channels=1, num_classes=10)
    _randomise_bn(model, torch.Generator().manual_seed(2))
    model.eval()
    x = torch.randn(8, 1, 8, 8)
    plain = plain_network(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())  # every BN folded
    assert not any(hasattr(m, "step_size") for m in plain.modules())
    with torch.no_grad():
        want, got = model(x), plain(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # w: every conv and linear weight (the classifier included), as the model computes with them
    assert weight_vector(plain).numel() == weight_count(model)
    assert any(isinstance(m, nn.Linear) for m in plain.modules())
