"""Pretrained starts from weight files the tests save themselves (no internet): torchvision's
layouts load by name or tensor by tensor and compute what torchvision's own model computes,
DeiT's release format loads into deit_t, the head is fresh for other class counts, LSQ step
sizes start from the loaded weights, and missing or foreign files are one-line errors that say
where to put them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from qgen_sweep.errors import DataError
from qgen_sweep.trial.archs import ARCHS
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import initial_step_size, lsq_layers
from qgen_sweep.trial.models import build_float_model, build_model
from qgen_sweep.trial.models.vit import from_torchvision, to_deit
from qgen_sweep.trial.weights import check_weights, hub_checkpoints, published_file, weight_file


@pytest.fixture()
def hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = hub_checkpoints()
    folder.mkdir(parents=True)
    return folder


def _save_torchvision(hub: Path, arch: str) -> torch.nn.Module:
    torch.manual_seed(7)
    model = getattr(torchvision.models, arch)().eval()
    torch.save(model.state_dict(), hub / published_file(arch))
    return model


def _config(arch: str, pretrained: str = "torchvision", bits: int = 32) -> TrialConfig:
    return TrialConfig("imagenet", bits, "sgd", 0.01, 0.0, arch=arch, pretrained=pretrained,
                       resolution=64)


def test_file_names_and_folder_are_torchvisions(hub):
    assert hub == Path(torch.hub.get_dir()) / "checkpoints"
    for name, weights in (("resnet18", "ResNet18_Weights"), ("resnet50", "ResNet50_Weights"),
                          ("mobilenet_v2", "MobileNet_V2_Weights"), ("swin_t", "Swin_T_Weights")):
        url = getattr(torchvision.models, weights).IMAGENET1K_V1.url
        assert ARCHS[name].torchvision == url


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_weights_compute_what_torchvision_computes(hub, arch):
    reference = _save_torchvision(hub, arch)
    ours = build_float_model(_config(arch), 3, 1000, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "swin_t"])
def test_large_torchvision_weights_compute_what_torchvision_computes(hub, arch):
    reference = _save_torchvision(hub, arch)
    ours = build_float_model(_config(arch), 3, 1000, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_deit_release_file_loads_into_deit_t(tmp_path):
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(3)
    reference = VisionTransformer(64, 16, 12, 3, 192, 768, num_classes=1000).eval()
    with torch.no_grad():
        reference.heads.head.weight.normal_(0, 0.02)  # torchvision starts it at zero
    path = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save({"model": to_deit(from_torchvision(reference.state_dict()))}, path)
    ours = build_float_model(_config("deit_t", str(path)), 3, 1000, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)
    # another resolution: the position embeddings are interpolated (5 tokens at 32 px)
    smaller = build_float_model(_config("deit_t", str(path)), 3, 1000, 32)
    assert smaller.encoder.pos_embedding.shape == (1, 5, 192)


def test_fewer_classes_keep_a_fresh_head_and_lsq_starts_from_the_weights(hub):
    reference = _save_torchvision(hub, "resnet18")
    model = build_model(_config("resnet18", bits=4), 3, 3, 64)
    assert model.fc.weight.shape == (3, 512)
    torch.testing.assert_close(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    layers = dict(lsq_layers(model))
    conv = layers["layer1.0.conv1"]
    torch.testing.assert_close(conv.step_size, initial_step_size(reference.layer1[0].conv1.weight,
                                                                 conv.qp))


def test_missing_weights_say_where_to_put_them(hub, tmp_path):
    config = _config("resnet50")
    with pytest.raises(DataError) as caught:
        build_model(config, 3, 10, 64)
    message = str(caught.value)
    assert "\n" not in message and "resnet50-0676ba61.pth" in message
    assert str(hub) in message and "runtime.download" in message
    assert check_weights(config, download=True) == hub / "resnet50-0676ba61.pth"
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(DataError, match="nowhere.pth not found"):
        check_weights(_config("deit_t", str(missing)))
    assert weight_file(TrialConfig("imagenet", 32, "sgd", 0.01, 0.0, arch="resnet18")) is None


def test_weights_of_another_architecture_are_refused(hub, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    with pytest.raises(DataError, match="does not fit resnet18"):
        build_model(_config("resnet18", str(path)), 3, 10, 64)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="does not load"):
        build_model(_config("resnet18", str(tmp_path / "junk.pth")), 3, 10, 64)


def test_pretrained_rules_are_checked_with_the_config():
    from qgen_sweep.errors import UsageError

    with pytest.raises(UsageError, match="published ImageNet weights for"):
        TrialConfig("imagenet", 32, "sgd", 0.01, 0.0, arch="vgg19", pretrained="torchvision")
    with pytest.raises(UsageError, match="base_width must be 64"):
        TrialConfig("imagenet", 32, "sgd", 0.01, 0.0, arch="resnet18", pretrained="torchvision",
                    base_width=16)
    with pytest.raises(UsageError, match="resolution applies to imagenet"):
        TrialConfig("cifar10", 32, "sgd", 0.01, 0.0, arch="resnet18", resolution=64)
    plain = TrialConfig("cifar10", 32, "sgd", 0.01, 0.0, arch="resnet18")
    assert "pretrained" not in plain.to_dict() and "resolution" not in plain.to_dict()
