"""Scripts that run INSIDE project images (mounted read-only at /opt/envbuilder-tools).

They import nothing from envbuilder: the image has the project's Python and packages, not ours.
"""

from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
CONTAINER_TOOLS_DIR = "/opt/envbuilder-tools"

