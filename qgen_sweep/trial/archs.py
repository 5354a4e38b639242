"""The architecture registry (torch-free): every backbone a trial can train, by name.

An entry says where its builder lives (a module of qgen_sweep/trial/models/ and a function
`build(config, in_channels, num_classes, image_size) -> nn.Module` returning the float network),
its default `base_width`, and whether it takes NiN's `depth`. Adding an architecture is one entry
here plus its module and its test; the spec, the plan, the store, the measures and the report
pick it up by name. docs/science.md describes each one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture."""

    name: str
    module: str  # qgen_sweep.trial.models.<module> holds `build`
    base_width: int  # channels of the first stage when the config leaves base_width out
    uses_depth: bool  # True: `depth` is the number of blocks (NiN); else the depth is fixed
    fusable: bool  # the fused engine (trial/fused.py) can train bundles of it
    summary: str
    # base_width on imagenet and for pretrained starts: torchvision's layout (its weights fix it)
    imagenet_base_width: int = 0
    # URL of the published ImageNet-1K weights `pretrained = "torchvision"` starts from (torch.hub
    # caches the file under its name): torchvision's IMAGENET1K_V1, the weights the QAT
    # literature fine-tunes from; for deit_t, which torchvision lacks, DeiT's own release.
    # "" = none published for this arch.
    torchvision: str = ""
    head: str = ""  # state_dict prefix of the classifier, re-initialised when classes differ

    def __post_init__(self) -> None:
        if not self.imagenet_base_width:
            object.__setattr__(self, "imagenet_base_width", self.base_width)


_TV = "https://download.pytorch.org/models/"  # torchvision's weight files
_ENTRIES = (
    ArchSpec("nin", "nin", 25, True, True,
             "Network-in-Network, depth blocks of 3x3/2 conv + two 1x1 convs (reference code)"),
    ArchSpec("resnet18", "resnet", 16, False, False,
             "ResNet-18, basic blocks [2, 2, 2, 2], CIFAR stem below 64 px unless pretrained",
             imagenet_base_width=64, torchvision=_TV + "resnet18-f37072fd.pth", head="fc."),
    ArchSpec("resnet50", "resnet", 16, False, False,
             "ResNet-50, bottleneck blocks [3, 4, 6, 3], CIFAR stem below 64 px unless "
             "pretrained", imagenet_base_width=64, torchvision=_TV + "resnet50-0676ba61.pth",
             head="fc."),
    ArchSpec("mobilenet_v1", "mobilenet", 32, False, False,
             "MobileNet-V1, 13 depthwise-separable blocks", head="classifier."),
    ArchSpec("mobilenet_v2", "mobilenet", 32, False, False,
             "MobileNet-V2, 17 inverted residual blocks",
             torchvision=_TV + "mobilenet_v2-b0353104.pth", head="classifier."),
    ArchSpec("vgg19", "vgg", 64, False, False, "VGG-19 with batch norm, one linear classifier"),
    ArchSpec("deit_t", "vit", 192, False, False,
             "DeiT-Tiny: torchvision's VisionTransformer, 12 blocks, width 192, 3 heads, "
             "patch 16 (4 below 64 px unless pretrained)", head="heads.head.",
             torchvision="https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth"),
    ArchSpec("swin_t", "swin", 96, False, False,
             "Swin-T: torchvision's SwinTransformer, depths [2, 2, 6, 2], width 96, window 7",
             torchvision=_TV + "swin_t-704ceda3.pth", head="head."),
)
ARCHS: dict[str, ArchSpec] = {entry.name: entry for entry in _ENTRIES}
ARCH_NAMES = tuple(ARCHS)
DEFAULT_ARCH = "nin"  # the paper's main model; left out of the trial id (ids from before stay)
