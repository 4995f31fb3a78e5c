"""Installability against real uv and a loopback index (tests/support/local_index.py); one opt-in PyPI test.

The cases are data (tests/data/index-fixtures/cases.json); uv's failure texts were captured from real uv
runs against PyPI (tests/data/index-fixtures/uv/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envbuilder.index.installability import (IndexPages, check_installability, parse_index_page, parse_pylock,
                                             parse_uv_failure, redact_text)
from envbuilder.resolve.python_fit import Blocker, InstallRequest, choose_python, describe_conflict, fit_from_report
from envbuilder.settings import Settings

FIXTURES = Path(__file__).parent / "data" / "index-fixtures"
CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture
def settings(tmp_path):
    return Settings(tmp_path / "home")


def _request(case: dict, index_url: str) -> InstallRequest:
    return InstallRequest(tuple(case["requirements"]), tuple(case["pythons"]), os=case.get("os", "linux"),
                          arch=case.get("arch", "x86_64"), pins=tuple(case.get("pins", ())), index_url=index_url)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_cases_against_the_loopback_index(case, local_index, settings):
    report = check_installability(_request(case, local_index.url), settings)
    assert report.checked, report.note
    assert [p.python for p in report.probes] == case["probed"]
    python, reasons = choose_python(report.probes)
    assert (python, list(reasons)) == (case["python"], case["reasons"])
    assert describe_conflict(report.probes, case.get("pins", ())) == case.get("conflict")


def test_answers_are_cached_per_index_package_and_request(local_index, settings):
    request = InstallRequest(("scipy==1.10.0",), ("3.12",), index_url=local_index.url)
    local_index.requests.clear()
    first = check_installability(request, settings)
    assert local_index.page_requests("scipy") >= 2  # uv's look-up and ours
    local_index.requests.clear()
    assert check_installability(request, settings).probes == first.probes and not first.probes[0].installs
    assert local_index.requests == []  # the same question within the TTL asks nobody
    pinned = check_installability(InstallRequest(("scipy==1.10.0",), ("3.12",), pins=("numpy==1.26.4",),
                                                 index_url=local_index.url), settings)
    assert pinned.probes[0].blockers == first.probes[0].blockers
    assert local_index.page_requests("scipy") == 1  # a new question runs uv again; our page comes from the cache
    cached = list((settings.data_dir / "index-cache").glob("*/scipy.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["index"] == local_index.url


def test_a_stale_page_is_fetched_again_and_html_pages_work(local_index, tmp_path):
    now = [1000.0]
    pages = IndexPages(tmp_path / "cache", ttl_s=60, clock=lambda: now[0])
    local_index.json_pages = False
    try:
        local_index.requests.clear()
        html_files = pages.files(local_index.url, "torchvision")
        assert pages.files(local_index.url, "torchvision") == html_files
        assert local_index.page_requests("torchvision") == 1
        now[0] += 61
        pages.files(local_index.url, "torchvision")
        assert local_index.page_requests("torchvision") == 2
    finally:
        local_index.json_pages = True
    json_files = IndexPages(tmp_path / "other").files(local_index.url, "torchvision")
    assert html_files == json_files
    assert [(f.yanked, f.requires_python) for f in json_files] == [(True, ">=3.8")] * 4
    assert IndexPages(tmp_path / "x").files(local_index.url, "not-there") is None


def test_offline_and_unreachable_are_not_checked(settings):
    request = InstallRequest(("scipy==1.10.0",), ("3.12", "3.11"), index_url="http://127.0.0.1:9/simple")
    offline = check_installability(request, settings, offline=True)
    assert (offline.checked, offline.warning) == (False, "the other dependencies were not checked (offline)")
    unreachable = check_installability(request, settings)
    assert not unreachable.checked and unreachable.note.startswith("no index reachable")
    fit = fit_from_report(unreachable)
    assert fit.python is None and fit.warnings[0].startswith("the other dependencies were not checked (no index")


def test_missing_uv_is_not_checked(settings, tmp_path):
    report = check_installability(InstallRequest(("x",), ("3.12",)), settings, uv=str(tmp_path / "no-uv"))
    assert (report.checked, report.note) == (False, "uv could not be run")


def test_a_uv_without_pylock_output_is_not_checked(settings, tmp_path):
    old_uv = tmp_path / "uv"
    old_uv.write_text("#!/bin/sh\necho \"error: invalid value 'pylock.toml' for '--format <FORMAT>'\" >&2\nexit 2\n")
    old_uv.chmod(0o755)
    report = check_installability(InstallRequest(("x",), ("3.12",)), settings, uv=str(old_uv))
    assert not report.checked and "uv 0.6.15 or newer" in report.note


@pytest.mark.parametrize("sample, blockers", [
    ("constraint-conflict", [Blocker("torchtext", "0.16.0", "conflict", "requires torch==2.1.0", "torch==2.1.0")]),
    ("direct-conflict", [Blocker("torchtext", "0.16.0", "conflict", "requires torch==2.1.0", "torch==2.1.0")]),
    ("no-abi-wheel", [Blocker("torch", "2.1.0", "no-wheel", "has no wheels")]),
    ("no-platform-wheel", [Blocker("torch", "2.1.0", "no-wheel", "has no windows/aarch64 wheels")]),
    ("not-found", [Blocker("nosuchpkg-zzz", "", "missing", "is not on the configured indexes")]),
    ("unreachable", []),
    ("no-such-version", [
        Blocker("torchvision", "0.15.0", "conflict", "requires torch==2.0.0+cu117", "torch==2.0.0+cu117"),
        Blocker("torch", "2.0.0+cu117", "missing", "has no such release")]),
])
def test_uv_failures_captured_from_real_runs(sample, blockers):
    text = (FIXTURES / "uv" / f"{sample}.txt").read_text(encoding="utf-8")
    assert list(parse_uv_failure(text, "windows/aarch64")) == blockers


def test_requires_python_and_all_versions_phrases():
    text = ("Because the current Python version (3.10) does not satisfy Python>=3.11 and all versions of "
            "numpy>=2.3 depend on Python>=3.11, we can conclude that numpy>=2.3 cannot be used.")
    assert parse_uv_failure(text) == (Blocker("numpy", "", "requires-python", "requires Python >=3.11"),)


def test_pylock_and_pages_parse():
    lock = ('lock-version = "1.0"\n[[packages]]\nname = "SciPy"\nversion = "1.10.0"\n'
            'sdist = { url = "https://x/scipy-1.10.0.tar.gz" }\n'
            '[[packages]]\nname = "mine"\ndirectory = { path = "." }\n')
    (dist,) = parse_pylock(lock)
    assert (dist.name, dist.version, dist.has_wheel, dist.has_sdist) == ("scipy", "1.10.0", False, True)
    page = '<a href="../../files/a-1.0-py3-none-any.whl#sha256=00" data-requires-python="&gt;=3.8" data-yanked="">x</a>'
    (found,) = parse_index_page(page, "text/html")
    assert (found.filename, found.yanked, found.requires_python) == ("a-1.0-py3-none-any.whl", True, ">=3.8")


def test_credentials_never_reach_messages():
    text = "error: Failed to fetch: https://user:s3cret@mirror.example/simple/scipy/"
    assert "s3cret" not in redact_text(text) and "mirror.example/simple/scipy/" in redact_text(text)


@pytest.mark.pypi
def test_scipy_1_10_against_pypi(settings):
    """The issue's own example on the real index: no cp312 wheel, so 3.11 (needs network; opt-in)."""
    request = InstallRequest(("scipy==1.10.0",), ("3.12", "3.11"), index_url=os.environ.get("ENVBUILDER_TEST_INDEX"))
    report = check_installability(request, settings)
    assert report.checked, report.note
    python, reasons = choose_python(report.probes)
    assert (python, reasons) == ("3.11", ("Python 3.11: scipy==1.10.0 has no wheels for 3.12+",))
