"""Where things live inside envbuilder's images, and every label key envbuilder puts on images and containers.

Plain constants shared by the renderers (which lay images out this way) and by the executor and builder (which
rely on it). The label keys are the one list of them: a key written here is read back by another stage (a build's
plan-hash by `run --image`, a run's run-id by `runs stop`), so none is spelled out anywhere else.
Imports nothing, so that running a job does not load the renderers' pydantic models.
"""

IMAGE_VENV = "/opt/venv"
IMAGE_PROJECT_DIR = "/workspace/project"
IMAGE_USER = "envbuilder"
IMAGE_UID = 1000
LABEL_PREFIX = "org.envbuilder"

# Project images (render/dockerfile.py writes them; build and run read them back).
LABEL_TORCH = f"{LABEL_PREFIX}.torch"
LABEL_FLAVOR = f"{LABEL_PREFIX}.flavor"
LABEL_PYTHON = f"{LABEL_PREFIX}.python"  # base images carry it too: the Python they ship
LABEL_PLAN_HASH = f"{LABEL_PREFIX}.plan-hash"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"  # run containers carry it too
LABEL_STATUS = f"{LABEL_PREFIX}.status"
LABEL_PLAN = f"{LABEL_PREFIX}.plan"
LABEL_BUILD_KEY = f"{LABEL_PREFIX}.build-key"
LABEL_CHECKOUT = f"{LABEL_PREFIX}.checkout"  # the checkout digest its repository carries (build/key.py)
# The resolved target, given at build time (build/labels.py): what `envbuilder image inspect` checks a host against.
LABEL_TARGET = f"{LABEL_PREFIX}.target"  # "linux/x86_64 nvidia"
LABEL_CUDA = f"{LABEL_PREFIX}.cuda"  # the CUDA toolkit of the torch build ("12.8"), absent for cpu/ROCm
LABEL_ROCM = f"{LABEL_PREFIX}.rocm"
LABEL_SM = f"{LABEL_PREFIX}.cuda-sm"  # compute capabilities the torch build has kernels (SASS) for: "8.0,9.0"
LABEL_PTX = f"{LABEL_PREFIX}.cuda-ptx"  # the highest one also shipped as PTX
LABEL_GFX = f"{LABEL_PREFIX}.rocm-gfx"

# Base images made by `envbuilder base`.
LABEL_BASE = f"{LABEL_PREFIX}.base"

# Containers: a job's run, and the short-lived helpers (Python probe, ONNX verification).
LABEL_RUN_ID = f"{LABEL_PREFIX}.run-id"
LABEL_JOB = f"{LABEL_PREFIX}.job"
LABEL_PROBE = f"{LABEL_PREFIX}.probe"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
