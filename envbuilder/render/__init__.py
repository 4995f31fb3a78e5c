"""Render a Plan as text: Dockerfile, bash, PowerShell, lock. Pure functions, no I/O.

RenderOptions carries the network and layout choices that shape every format the same way
(mirrors, find-links, CA bundle as a secret, venv location). Must not import docker or proc.
"""

from __future__ import annotations

from envbuilder.imagelayout import IMAGE_PROJECT_DIR, IMAGE_UID, IMAGE_USER, IMAGE_VENV
from envbuilder.values import Value

__all__ = ["CA_SECRET_ID", "IMAGE_PROJECT_DIR", "IMAGE_UID", "IMAGE_USER", "IMAGE_VENV", "NETRC_SECRET_ID",
           "RenderOptions"]

CA_SECRET_ID = "ca"  # BuildKit secret holding a CA bundle (PEM)
NETRC_SECRET_ID = "netrc"  # BuildKit secret holding index credentials (.netrc format)


class RenderOptions(Value):
    """How to reach packages and where to put things; identical meaning for every output format."""

    base_image: str | None = None  # None: chosen from the plan (python:X.Y-slim, CUDA/ROCm base when needed)
    index_url: str | None = None  # default index (a PyPI mirror); None: PyPI
    extra_index_urls: tuple[str, ...] = ()
    torch_index_url: str | None = None  # mirror of the chosen flavour's PyTorch index; None: the matrix's URL
    find_links: tuple[str, ...] = ()  # wheel locations as the installer sees them (URL or path)
    ca_cert: bool = False  # Dockerfile: a CA bundle arrives as BuildKit secret CA_SECRET_ID; scripts: see ca_cert_path
    ca_cert_path: str | None = None  # scripts only: a CA bundle file on the machine that runs the script
    netrc: bool = False  # Dockerfile: index credentials arrive as BuildKit secret NETRC_SECRET_ID
    venv: str | None = None  # scripts: venv location (default "runtime/venv"); Dockerfile: IMAGE_VENV
    copy_project: bool = True  # Dockerfile: COPY the project into the image as the last layer
    uv_version: str = "0.9.5"  # the installer pinned inside images and scripts
