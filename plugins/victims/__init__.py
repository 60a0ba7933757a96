"""Built-in victims: the paper's CIFAR nets, a small CPU-friendly CNN, and any timm / torchvision model.

Paper: Sandoval-Segura et al., "Poisons that are learned faster are more effective" (CVPR-W 2022)
trains ResNet-18 (Table 1) and ResNet-18, VGG-19, MobileNet, GoogLeNet (Table 2) from scratch on
CIFAR-10. Names:

- ``resnet18``, ``resnet50``, ``vgg19``, ``mobilenet`` (MobileNetV2), ``googlenet``: torchvision model
  classes adapted to small inputs (adaptations documented in cifar_nets.py beside this file).
- ``small_cnn`` (param ``width``: channels of the first block, default 16): three conv blocks; for
  CPU runs (demo, smoke, tests).
- ``timm:<arch>``: ``timm.create_model(arch, num_classes=, in_chans=, pretrained=False)``.
- ``torchvision:<arch>``: ``torchvision.models.get_model(arch, num_classes=, weights=None)``, first
  convolution replaced when the input has other than 3 channels. ImageNet stems down-sample 32×32
  inputs heavily; use the plain names for the paper's CIFAR variants.
Always randomly initialised: a victim trains from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

from poisonbench.api import Victim
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl


class CifarResNet18(Victim):
    """ResNet-18, CIFAR variant (3×3 stride-1 stem, no max-pool): the paper's main victim."""

    name = "resnet18"

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import cifar_resnet

        return cifar_resnet(18, num_classes=num_classes, in_channels=in_channels)


class CifarResNet50(Victim):
    """ResNet-50, CIFAR variant (3×3 stride-1 stem, no max-pool)."""

    name = "resnet50"

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import cifar_resnet

        return cifar_resnet(50, num_classes=num_classes, in_channels=in_channels)


class CifarVGG19(Victim):
    """VGG-19 with BatchNorm, CIFAR variant (global pool, 512→classes head)."""

    name = "vgg19"

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import CifarVGG

        return CifarVGG(num_classes=num_classes, in_channels=in_channels)


class CifarMobileNet(Victim):
    """MobileNetV2, CIFAR strides (stride-1 stem and first 24-channel block)."""

    name = "mobilenet"

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import cifar_mobilenet_v2

        return cifar_mobilenet_v2(num_classes=num_classes, in_channels=in_channels)


class CifarGoogLeNet(Victim):
    """GoogLeNet, CIFAR variant (3×3 stride-1 stem to 192 channels, no auxiliary heads)."""

    name = "googlenet"

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import cifar_googlenet

        return cifar_googlenet(num_classes=num_classes, in_channels=in_channels)


@dataclass(frozen=True)
class SmallCNNParams:
    width: int = 16  # channels of the first conv block (then 2× and 4×)


class SmallCNN(Victim):
    """Small 3-block CNN: an epoch over 10k 28×28 images in seconds on 2 CPU cores."""

    name = "small_cnn"
    Params = SmallCNNParams

    def build(self, *, num_classes, in_channels, image_size):
        from poisonbench.plugins.victims.cifar_nets import SmallCNN as Net

        if self.params.width <= 0:
            raise BadInput(f"victim 'small_cnn': width must be positive, got {self.params.width}")
        return Net(num_classes=num_classes, in_channels=in_channels, width=self.params.width)


@dataclass(frozen=True)
class ArchParams:
    arch: str = "resnet18"  # the model's name in timm / torchvision


class TimmVictim(Victim):
    """Any timm model, randomly initialised, with the dataset's classes and input channels."""

    name = "timm"
    Params = ArchParams

    def build(self, *, num_classes, in_channels, image_size):
        import timm

        if not timm.is_model(self.params.arch):
            raise BadInput(f"victim 'timm:{self.params.arch}': timm has no model '{self.params.arch}'")
        return timm.create_model(self.params.arch, num_classes=num_classes, in_chans=in_channels,
                                 pretrained=False)


class TorchvisionVictim(Victim):
    """Any torchvision classification model, randomly initialised; first conv adapted to the channels."""

    name = "torchvision"
    Params = ArchParams

    def build(self, *, num_classes, in_channels, image_size):
        import torchvision

        from poisonbench.plugins.victims.cifar_nets import swap_first_conv

        arch = self.params.arch
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise BadInput(f"victim 'torchvision:{arch}': torchvision has no classification model '{arch}'")
        model = torchvision.models.get_model(arch, num_classes=num_classes, weights=None)
        return swap_first_conv(model, in_channels)


@hookimpl
def poisonbench_register_victims(register):
    for cls in (CifarResNet18, CifarResNet50, CifarVGG19, CifarMobileNet, CifarGoogLeNet, SmallCNN):
        register(cls)
    register(TimmVictim, prefix="timm", prefix_param="arch")
    register(TorchvisionVictim, prefix="torchvision", prefix_param="arch")
