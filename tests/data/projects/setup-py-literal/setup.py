from setuptools import find_packages, setup

REQUIRED = [
    "torch>=1.13,<2.1",
    "torchvision",
    "opencv-python-headless>=4.7",
]

EXTRAS = {
    "onnx": ["onnx>=1.14", "onnxruntime>=1.15"],
}

setup(
    name="legacy-detector",
    version="0.9.1",
    packages=find_packages(),
    python_requires=">=3.8",
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
