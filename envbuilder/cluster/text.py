"""A manifest as text: YAML when PyYAML is installed (it comes with the kubernetes and skypilot extras), else
JSON, which every YAML reader (kubectl, SkyPilot) also accepts. Pure: must not import proc, docker or the CLI."""

from __future__ import annotations

import json
from typing import Any


def manifest_text(manifest: Any) -> str:
    try:
        import yaml
    except ImportError:
        return json.dumps(manifest, indent=2) + "\n"
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=120)
