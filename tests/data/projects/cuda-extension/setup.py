# A project with its own CUDA kernels, built against the installed torch (the usual cpp_extension shape).
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

setup(
    name="fused-ops",
    version="0.1.0",
    packages=find_packages(),
    install_requires=["torch>=2.1", "numpy"],
    ext_modules=[CUDAExtension("fused_ops._C", ["csrc/fused.cpp", "csrc/fused_kernel.cu"])],
    cmdclass={"build_ext": BuildExtension},
)
