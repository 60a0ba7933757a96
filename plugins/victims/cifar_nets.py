"""Model builders behind plugins/victims/__init__.py: the paper's CIFAR nets from torchvision classes, a small CNN.

The paper (docs/protocol.md) trains the usual CIFAR variants of ImageNet architectures (as in
kuangliu/pytorch-cifar). We build them from torchvision's model classes and adapt them to small inputs:

- ResNet-18/50: 3×3 stride-1 stem convolution, no max-pool (32×32 → 4×4 before global pooling).
- VGG-19 (with BatchNorm): torchvision's ``vgg19_bn`` features; max-pools use ``ceil_mode`` so 28×28
  inputs work (identical on 32×32); global average pool and a single 512→classes linear head, as in
  the CIFAR VGG (no 4096-wide ImageNet classifier).
- MobileNetV2: first convolution stride 1 and the first 24-channel block stride 1 (CIFAR strides:
  total down-sampling 8, 32×32 → 4×4); no dropout in the head.
- GoogLeNet (Inception v1): no auxiliary heads, no input transform; the ImageNet stem (7×7/2 conv,
  pools, 1×1 and 3×3 convs) is replaced by one 3×3 stride-1 conv to 192 channels; no dropout.
Any input channel count: the first convolution takes ``in_channels``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def cifar_resnet(depth: int, *, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet18, resnet50

    model = {18: resnet18, 50: resnet50}[depth](num_classes=num_classes, weights=None)
    model.conv1 = _conv3x3(in_channels, 64)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


class CifarVGG(nn.Module):
    """VGG-19-BN features (ceil-mode pools) → global average pool → Linear(512, classes)."""

    def __init__(self, *, num_classes: int, in_channels: int):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        # torchvision's vgg19_bn feature stack ("E" config) without its 120M-parameter ImageNet head.
        features = make_layers(cfgs["E"], batch_norm=True)
        features[0] = nn.Conv2d(in_channels, features[0].out_channels, 3, padding=1)
        for module in features:
            if isinstance(module, nn.MaxPool2d):
                module.ceil_mode = True  # 28 → 14 → 7 → 4 → 2 → 1; no change for 32×32
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's VGG initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def cifar_mobilenet_v2(*, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(num_classes=num_classes, weights=None, dropout=0.0)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    # features[2] opens the 24-channel stage; its depthwise conv carries the stride.
    for module in model.features[2].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
    return model


def cifar_googlenet(*, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import GoogLeNet
    from torchvision.models.googlenet import BasicConv2d

    model = GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False,
                      init_weights=True, dropout=0.0)
    model.conv1 = BasicConv2d(in_channels, 192, kernel_size=3, padding=1)
    model.maxpool1 = nn.Identity()
    model.conv2 = nn.Identity()
    model.conv3 = nn.Identity()
    model.maxpool2 = nn.Identity()
    return model


class SmallCNN(nn.Module):
    """Three conv–BN–ReLU blocks (width, 2·width, 4·width), two 2× max-pools, 2×2 pooled linear head.

    At width 16 an epoch over 10k 28×28 images takes a few seconds on 2 CPU cores; it reaches >85%
    on Fashion-MNIST within a few epochs. Works for any image size ≥ 4 and any channel count.
    """

    def __init__(self, *, num_classes: int, in_channels: int, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [_conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(4 * width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def swap_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the model's first Conv2d with one taking ``in_channels`` (same shape otherwise)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return model
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                            padding=module.padding, dilation=module.dilation, groups=1,
                            bias=module.bias is not None, padding_mode=module.padding_mode)
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return model
    raise ValueError("model has no Conv2d to adapt to the input channel count")
