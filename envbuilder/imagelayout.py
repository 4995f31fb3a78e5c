"""Where things live inside envbuilder's images, and the label namespace on images and containers.

Plain constants shared by the renderers (which lay images out this way) and by the executor and builder (which
rely on it). Imports nothing, so that running a job does not load the renderers' pydantic models.
"""

IMAGE_VENV = "/opt/venv"
IMAGE_PROJECT_DIR = "/workspace/project"
IMAGE_USER = "envbuilder"
IMAGE_UID = 1000
LABEL_PREFIX = "org.envbuilder"
