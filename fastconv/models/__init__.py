"""Reference CNNs built on :mod:`fastconv.nn`: LeNet-5, VGG-11/16, ResNet-18/34/50, the
CIFAR ResNet-20 and MobileNetV2, with torchvision's state_dict names."""
from __future__ import annotations

from .lenet import LeNet5, lenet5
from .mobilenet import MobileNetV2, mobilenet_v2
from .resnet import ResNet, resnet18, resnet20, resnet34, resnet50
from .vgg import VGG, vgg11, vgg16

MODELS = {
    "lenet5": lenet5, "vgg11": vgg11, "vgg16": vgg16, "resnet18": resnet18,
    "resnet34": resnet34, "resnet50": resnet50, "resnet20": resnet20, "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, **kwargs):
    """Builds the model called ``name`` (one of :data:`MODELS`)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}") from None
    return factory(**kwargs)


__all__ = ["LeNet5", "ResNet", "VGG", "MobileNetV2", "mobilenet_v2", "MODELS", "get_model", "lenet5", "vgg11", "vgg16",
           "resnet18", "resnet34", "resnet50", "resnet20"]
