import os
import sys

from setuptools import setup


def read_requirements(name):
    with open(os.path.join(os.path.dirname(__file__), name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


extras = {"dev": ["pytest"]}
if sys.platform == "linux":
    extras["gpu"] = ["pynvml"]

setup(
    name="computed-deps",
    python_requires=">=3.9",
    install_requires=read_requirements("requirements.txt"),
    extras_require=extras,
)
