"""Models for image inputs: an encoder per image input (the `image` kind's encoder), fused with the
vector inputs, then the ModelSpec's encoder and the task's head; or, for segmentation, a network
that answers per voxel.

`image_model` names the network (parameters at one channel, 2-D / 3-D; 4 bytes each on the wire):
  cnn          (default for classification) 3 blocks Conv → BatchNorm → ReLU → MaxPool (8, 16, 32
               channels), global average pool: 6.0 k / 17.7 k parameters; pure torch.
  densenet121, resnet18
               MONAI's networks, their last layer giving 32 features: 7.0 M and 11.2 M at 2-D.
  unet         (default for segmentation) MONAI's UNet, channels 16-32-64, strides 2-2, one
               residual unit, batch norm: 47.6 k / 138 k.
  basicunet    MONAI's BasicUNet, features 8-8-16-32-64-8, batch norm: 125 k at 2-D.
Every default has batch norm, so FedBN has layers to keep local; FedPer and FedRep keep the last
layer (the head, or the segmentation network's output convolution). MONAI is imported only when
one of its networks is named (the `imaging` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fedcare.core.config import ModelSpec
from fedcare.core.errors import ConfigError
from fedcare.data.dataset import InputShape
from fedcare.learning.tasks import Task

FEATURES = 32  # what a classification encoder hands the head, per image input
CLASSIFIERS = ("cnn", "densenet121", "resnet18")
SEGMENTERS = ("unet", "basicunet")
NEEDS = "MONAI's networks need the imaging extra: pip install 'fedcare[imaging]'"


def small_cnn(channels: int, dims: int) -> nn.Sequential:
    conv, norm, pool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2
                        else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d))
    layers: list[nn.Module] = []
    for width in (8, 16, FEATURES):
        layers += [conv(channels, width, 3, padding=1), norm(width), nn.ReLU(), pool(2)]
        channels = width
    return nn.Sequential(*layers, (nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d)(1), nn.Flatten())


def _monai():
    try:
        from monai.networks import nets
    except ImportError:
        raise ConfigError(NEEDS) from None
    return nets


def image_encoder(name: str, shape: InputShape) -> nn.Module:
    """An image input's encoder: (batch, channels, *size) → (batch, FEATURES)."""
    channels, dims = shape.shape[0], len(shape.shape) - 1
    if name == "cnn":
        return small_cnn(channels, dims)
    if name == "densenet121":
        return _monai().DenseNet121(spatial_dims=dims, in_channels=channels, out_channels=FEATURES)
    if name == "resnet18":
        return _monai().resnet18(spatial_dims=dims, n_input_channels=channels, num_classes=FEATURES)
    raise ConfigError(f"image_model '{name}' is not a classification network; choose {', '.join(CLASSIFIERS)}")


def segmenter(name: str, shape: InputShape, classes: int) -> nn.Module:
    channels, dims = shape.shape[0], len(shape.shape) - 1
    if min(shape.shape[1:]) % 4:
        raise ConfigError(f"the segmentation networks halve the image twice: --image-size must be multiples of 4, "
                          f"got {list(shape.shape[1:])}")
    if name == "unet":
        return _monai().UNet(spatial_dims=dims, in_channels=channels, out_channels=classes, channels=(16, 32, 64),
                             strides=(2, 2), num_res_units=1, norm="batch")
    if name == "basicunet":
        return _monai().BasicUNet(spatial_dims=dims, in_channels=channels, out_channels=classes,
                                  features=(8, 8, 16, 32, 64, 8), norm="batch")
    raise ConfigError(f"image_model '{name}' is not a segmentation network; choose {', '.join(SEGMENTERS)}")


class FusedImageModel(nn.Module):
    """Each image input through its encoder, beside the vector inputs; then the ModelSpec's layers
    and the head."""

    def __init__(self, images: Mapping[str, nn.Module], vectors: Sequence[str], layers: Sequence[nn.Module],
                 head: nn.Module) -> None:
        super().__init__()
        self.images = nn.ModuleDict(dict(images))
        self.vectors = tuple(vectors)
        self.layers = nn.Sequential(*layers)
        self.head = head

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [encoder(batch[name]) for name, encoder in self.images.items()] + [batch[n] for n in self.vectors]
        return self.head(self.layers(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)))


class SegmentationModel(nn.Module):
    """A per-voxel network of one image input."""

    def __init__(self, name: str, net: nn.Module) -> None:
        super().__init__()
        self.input, self.net = name, net

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch[self.input])


def build_image_model(spec: ModelSpec, inputs: Mapping[str, InputShape], task: Task, image_names: Sequence[str],
                      encoder_layers) -> nn.Module:  # models.encoder_layers
    """The model for inputs that include images (`image_names`)."""
    if task.reads == "mask":
        if len(inputs) != 1:
            raise ConfigError("segmentation takes one image input and nothing else; drop the other columns "
                              f"({', '.join(n for n in inputs if n not in image_names)})")
        if spec.name == "mlp":
            raise ConfigError("segmentation answers per voxel with image_model unet or basicunet; model mlp "
                              "does not apply: drop it")
        name = image_names[0]
        return SegmentationModel(name, segmenter(spec.image_model or "unet", inputs[name], task.num_outputs))
    encoders = {n: image_encoder(spec.image_model or "cnn", inputs[n]) for n in image_names}
    vectors = [n for n in inputs if n not in image_names]
    layers, width = encoder_layers(spec, FEATURES * len(encoders) + sum(inputs[n].shape[0] for n in vectors))
    return FusedImageModel(encoders, vectors, layers, nn.Linear(width, task.num_outputs))
