"""Compiled extension modules kept out of the project folder: the two small Python files an image uses for that.

An editable install of a project with extension modules builds them in place, next to the sources in
/workspace/project. A run mounts the live source over that folder, which hides them. So the project stage
builds in a throw-away writable bind mount of the context, `KEEP_SCRIPT` copies every extension module it
finds under the import roots to `kept_dir()` (as <module name><suffix>), and `FINDER_MODULE`, loaded from a
.pth file at interpreter start, serves those names from there. The image's build wins over a same-named file
in the mounted source: it was compiled against the image's Python and torch, which a host build may not be.
Nothing is installed when the project has no extension modules (no start-up cost). Pure: text only.
"""

from __future__ import annotations

from envbuilder.imagelayout import IMAGE_VENV

FINDER_NAME = "_envbuilder_extensions"  # the module, and its .pth file, in the venv's site-packages


def kept_dir() -> str:
    return f"{IMAGE_VENV}/envbuilder-extensions"


def site_packages(python: str) -> str:
    return f"{IMAGE_VENV}/lib/python{python}/site-packages"


# argv: the folders to search, import roots first (a module's name is its path below the first that holds it).
# Only importable names are kept: a build/lib.linux-x86_64-cpython-311/ copy is skipped ("-" in a folder name).
KEEP_SCRIPT = (
    "import os, shutil, sys",
    "from importlib.machinery import EXTENSION_SUFFIXES",
    "kept, seen = sys.argv[1], set()",
    "for root in sys.argv[2:]:",
    "    for folder, dirs, files in os.walk(root):",
    "        dirs[:] = sorted(d for d in dirs if d.isidentifier())",
    "        for name in sorted(files):",
    "            path = os.path.realpath(os.path.join(folder, name))",
    "            suffix = next((s for s in EXTENSION_SUFFIXES if name.endswith(s)), None)",
    "            if suffix is None or path in seen:",
    "                continue",
    "            module = os.path.relpath(path[: -len(suffix)], os.path.realpath(root)).replace(os.sep, \".\")",
    "            if all(part.isidentifier() for part in module.split(\".\")):",
    "                seen.add(path)",
    "                os.makedirs(kept, exist_ok=True)",
    "                shutil.copy2(path, os.path.join(kept, module + suffix))",
    "                print(\"envbuilder: kept extension module\", module)",
)

FINDER_MODULE = (
    '"""envbuilder: serves the extension modules of the project built in this image (envbuilder.render.extensions)."""',
    "import os",
    "import sys",
    "from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader",
    "from importlib.util import spec_from_file_location",
    "",
    f'KEPT = "{kept_dir()}"',
    "",
    "",
    "def _kept():",
    "    found = {}",
    "    for name in os.listdir(KEPT):",
    "        suffix = next((s for s in EXTENSION_SUFFIXES if name.endswith(s)), None)",
    "        if suffix:",
    "            found[name[: -len(suffix)]] = os.path.join(KEPT, name)",
    "    return found",
    "",
    "",
    "class KeptExtensions:",
    "    modules = _kept()",
    "",
    "    @classmethod",
    "    def find_spec(cls, fullname, path=None, target=None):",
    "        origin = cls.modules.get(fullname)",
    "        if origin is None:",
    "            return None",
    "        return spec_from_file_location(fullname, origin, loader=ExtensionFileLoader(fullname, origin))",
    "",
    "",
    'if not any(getattr(f, "__name__", "") == "KeptExtensions" for f in sys.meta_path):',
    "    sys.meta_path.insert(0, KeptExtensions)",
)
