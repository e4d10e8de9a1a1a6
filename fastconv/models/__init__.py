"""Reference CNNs built on :mod:`fastconv.nn`: LeNet-5, AlexNet, VGG-11/16, ResNet-18/34/50,
the CIFAR ResNet-20 and MobileNetV2, with torchvision's state_dict names. Every constructor
takes ``weights=PATH`` (``.pth``/``.pt``/``.safetensors``/``.npz``) and ``skip_head=``."""
from __future__ import annotations

from ._weights import load_into
from .alexnet import AlexNet, alexnet
from .lenet import LeNet5, lenet5
from .mobilenet import MobileNetV2, mobilenet_v2
from .resnet import ResNet, resnet18, resnet20, resnet34, resnet50
from .vgg import VGG, vgg11, vgg16

MODELS = {
    "lenet5": lenet5, "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16, "resnet18": resnet18,
    "resnet34": resnet34, "resnet50": resnet50, "resnet20": resnet20,
    "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, **kwargs):
    """Builds the model called ``name`` (one of :data:`MODELS`)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}") from None
    return factory(**kwargs)


__all__ = ["AlexNet", "LeNet5", "MobileNetV2", "ResNet", "VGG", "MODELS", "get_model",
           "load_into", "alexnet", "lenet5", "mobilenet_v2", "vgg11", "vgg16",
           "resnet18", "resnet34", "resnet50", "resnet20"]
