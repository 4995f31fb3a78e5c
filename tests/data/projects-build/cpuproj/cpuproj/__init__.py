"""A tiny CPU project: a linear model, to check the image has torch and onnxruntime."""

GREETING = "hello from cpuproj"


def tiny_model():
    import torch

    return torch.nn.Linear(4, 2)
