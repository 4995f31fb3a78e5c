"""The resolver over table-driven cases kept as data: tests/data/resolve-cases/*.toml.

Each case is a small real-shaped project (its files), the target flags and request a user would type, and what
the plan must say (status, torch, companions, words in its reasons and warnings) or the error it must raise.
The project is read by the real reader (inspect_project) and the target built by target_for, as the CLI does;
a few cases also run through `envbuilder resolve` itself, with a mirror served on loopback.
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from envbuilder.errors import EnvbuilderError
from envbuilder.host.types import HostInfo
from envbuilder.index.server import IndexServer
from envbuilder.project.inspect import inspect_project
from envbuilder.resolve.matrix import load_matrix
from envbuilder.resolve.plan import ResolveRequest, TargetFlags
from envbuilder.resolve.resolver import resolve
from envbuilder.resolve.target import target_for

CASES_DIR = Path(__file__).parent / "data" / "resolve-cases"
MATRIX = load_matrix()
HOSTS = {"cpu": HostInfo(os="linux", arch="x86_64")}
EXPECT_KEYS = {"status", "torch", "python", "companions", "reasons", "warnings", "absent", "error", "message", "hint", "hint_absent"}


def load_cases() -> list[dict]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            unknown = set(case.get("expect", {})) - EXPECT_KEYS
            assert not unknown, f"{path.name} {case['id']}: unknown expectation {unknown}"
            cases.append({**case, "file": path.name})
    return cases


CASES = load_cases()


def write_files(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def run_case(case: dict, folder: Path):
    project = inspect_project(write_files(folder, case["files"]))
    host = HOSTS.get(case.get("host", ""))
    declared = dict(case.get("target", {}))
    if host is None:  # a declared target: the platform defaults to the common cloud box
        declared = {"os": "linux", "arch": "x86_64", **declared}
    flags = TargetFlags(**{k: tuple(v) if isinstance(v, list) else v for k, v in declared.items()})
    target = target_for(host, flags, MATRIX)
    return resolve(project, target, MATRIX, ResolveRequest(**case.get("request", {})))


def contains_each(texts, fragments, what: str) -> None:
    joined = "\n".join(map(str, texts))
    for fragment in fragments:
        assert fragment in joined, f"{what} lack {fragment!r}:\n{joined}"


def driver_hints_are_upgrades(texts, driver: str | None) -> None:
    """A hint to update the driver always names a version above the one the target has."""
    for needed in re.findall(r"update the NVIDIA driver to >= ([\d.]+)", "\n".join(texts)):
        assert driver is None or Version(needed) > Version(driver), f"told to update {driver} to {needed}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['file'][:-5]}:{c['id']}")
def test_case(case, tmp_path):
    expect = case["expect"]
    driver = case.get("target", {}).get("cuda_driver")
    if "error" in expect:
        with pytest.raises(EnvbuilderError) as info:
            run_case(case, tmp_path)
        error = info.value
        assert error.code == expect["error"], error
        contains_each([error.message], expect.get("message", []), "the error message")
        contains_each([error.hint or ""], expect.get("hint", []), "the hint")
        for fragment in expect.get("hint_absent", []):
            assert fragment not in (error.hint or ""), error.hint
        driver_hints_are_upgrades([error.hint or ""], driver)
        return
    plan = run_case(case, tmp_path)
    words = plan.reasons + tuple(map(str, plan.warnings))
    assert plan.status == expect.get("status", plan.status), words
    assert plan.torch.local == expect.get("torch", plan.torch.local), words
    assert plan.python == expect.get("python", plan.python)
    for name, version in expect.get("companions", {}).items():
        assert name in plan.companions and plan.companions[name].version == version, plan.companions
    contains_each(plan.reasons, expect.get("reasons", []), "the reasons")
    contains_each(plan.warnings, expect.get("warnings", []), "the warnings")
    for fragment in expect.get("absent", []):
        assert all(fragment not in text for text in words), f"{fragment!r} in {words}"
    driver_hints_are_upgrades(words, driver)


def test_every_case_file_has_cases_and_unique_ids():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and len({c["file"] for c in CASES}) >= 5


# --- through the CLI -------------------------------------------------------------------------------------------

A100_535 = ["--target-os", "linux", "--target-arch", "x86_64", "--gpu", "nvidia", "--cuda-driver", "535.104.05",
            "--compute-capability", "8.0"]


def test_cli_default_cuda_compat_is_auto(cli, tmp_path):
    write_files(tmp_path, {"requirements.txt": "torch\n"})
    auto = json.loads(cli("resolve", str(tmp_path), *A100_535, "--json").stdout)
    strict = json.loads(cli("resolve", str(tmp_path), *A100_535, "--cuda-compat", "strict", "--json").stdout)
    assert (auto["status"], auto["torch"]["local"]) == ("minor-version-compat", "2.14.1+cu126")
    assert (strict["status"], strict["torch"]["local"]) == ("ok", "2.7.1+cu118")


def test_cli_explicit_gpu_none_on_a_cuda_project(cli, tmp_path):
    write_files(tmp_path, {"requirements.txt": "--extra-index-url https://download.pytorch.org/whl/cu121\ntorch\n"})
    result = cli("resolve", str(tmp_path), "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["status"] == "ok" and plan["torch"]["flavor"] == "cpu"
    assert any("--gpu none asks for the CPU build" in r for r in plan["reasons"])


def fake_wheel(folder: Path, filename: str) -> Path:
    """A wheel file whose name is what a mirror's page lists; the snapshot reads names, not contents."""
    name, version = filename.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / filename, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder / filename


def test_cli_torch_index_url_is_the_index_the_plan_shows(cli, tmp_path):
    """A mirror on loopback serving only torch 2.7.1+cu126 and torchvision 0.22.1+cu126 for CPython 3.12."""
    wheels = tmp_path / "mirror"
    wheels.mkdir()
    for filename in ("torch-2.7.1+cu126-cp312-cp312-manylinux_2_28_x86_64.whl",
                     "torchvision-0.22.1+cu126-cp312-cp312-manylinux_2_28_x86_64.whl"):
        fake_wheel(wheels, filename)
    (tmp_path / "project").mkdir()
    project = write_files(tmp_path / "project", {"requirements.txt": "torch\ntorchvision\n"})
    flags = ["--target-os", "linux", "--target-arch", "x86_64", "--gpu", "nvidia", "--cuda-driver", "570.86.10",
             "--compute-capability", "9.0"]
    with IndexServer([wheels]) as mirror:
        url = mirror.url
        result = cli("resolve", str(project), *flags, "--torch-index-url", url)
        as_json = json.loads(cli("resolve", str(project), *flags, "--torch-index-url", url, "--json").stdout)
    assert result.exit_code == 0, result.stderr
    index_row = next(line for line in result.stdout.splitlines() if line.startswith("index"))
    assert url in index_row and "download.pytorch.org" not in index_row
    assert as_json["torch"]["local"] == "2.7.1+cu126" and as_json["torch"]["index_url"] == url
    assert as_json["companions"]["torchvision"] == {"name": "torchvision", "version": "0.22.1+cu126", "index_url": url}


def test_cli_unreadable_mirror_is_still_the_index_the_plan_shows(cli, tmp_path):
    write_files(tmp_path, {"requirements.txt": "torch\n"})
    with IndexServer([]) as stopped:  # nothing listens on its port once it is closed
        url = stopped.url
    result = cli("resolve", str(tmp_path), "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64",
                 "--torch-index-url", url, "--json")
    plan = json.loads(result.stdout)
    assert plan["torch"]["index_url"] == url
    assert any("resolved from the matrix alone" in w["message"] and w["code"] == "mirror-unread" for w in plan["warnings"])
