"""python_fit: which files serve a Python, the choice of Python, and its words. Pure; milliseconds."""

from __future__ import annotations

import pytest

from envbuilder.resolve.python_fit import (Blocker, InstallReport, PythonProbe, choose_python, describe_conflict,
                                           fit_from_report, python_ranges, target_platform, wheel_blocker)

CANDIDATES = ["3.14", "3.13", "3.12", "3.11", "3.10"]


@pytest.mark.parametrize("blocked, words", [
    (["3.14", "3.13", "3.12"], "3.12+"),
    (["3.14"], "3.14+"),
    (["3.13", "3.12"], "3.12-3.13"),
    (["3.12"], "3.12"),
    (["3.14", "3.11", "3.10"], "3.14+, 3.10-3.11"),
    ([], ""),
])
def test_python_ranges(blocked, words):
    assert python_ranges(blocked, CANDIDATES) == words


LINUX = target_platform("linux", "x86_64")
SCIPY_110 = [f"scipy-1.10.0-cp3{m}-cp3{m}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" for m in (8, 9, 10, 11)]


@pytest.mark.parametrize("files, python, platform, why", [
    (SCIPY_110 + ["scipy-1.10.0.tar.gz"], "3.12", LINUX, "has no wheels"),
    (SCIPY_110, "3.11", LINUX, None),
    (["tinyconf-0.4.0.tar.gz"], "3.14", LINUX, None),  # sdist only: pure Python, builds anywhere
    (["tool-1.0-py3-none-any.whl"], "3.14", LINUX, None),
    (["tool-1.0-py2-none-any.whl", "tool-1.0.tar.gz"], "3.12", LINUX, "has no wheels"),
    (["ext-1.0-cp39-abi3-manylinux_2_17_x86_64.whl"], "3.13", LINUX, None),  # the stable ABI serves later Pythons
    (["ext-1.0-cp313-abi3-manylinux_2_17_x86_64.whl"], "3.12", LINUX, "has no wheels"),
    (["ext-1.0-cp312-cp312-manylinux_2_34_x86_64.whl"], "3.12", LINUX, "has no linux/x86_64 wheels"),  # glibc too new
    (["ext-1.0-cp312-cp312-musllinux_1_2_x86_64.whl"], "3.12", LINUX, "has no linux/x86_64 wheels"),
    (["ext-1.0-cp312-cp312-linux_x86_64.whl"], "3.12", LINUX, None),
    (["ext-1.0-cp312-cp312-win_amd64.whl"], "3.12", target_platform("windows", "x86_64"), None),
    (["ext-1.0-cp312-cp312-macosx_11_0_arm64.whl"], "3.12", target_platform("macos", "arm64"), None),
    (["ext-1.0-cp312-cp312-macosx_11_0_arm64.whl"], "3.12", target_platform("macos", "x86_64"),
     "has no macos/x86_64 wheels"),
    (["ext-1.0-cp312-cp312-manylinux2014_aarch64.whl"], "3.12", target_platform("linux", "aarch64"), None),
    # a wheel of another release says nothing about this one
    (["ext-2.0-cp312-cp312-manylinux2014_x86_64.whl", "ext-1.0.tar.gz"], "3.12", LINUX, None),
])
def test_wheel_blocker(files, python, platform, why):
    name = files[0].split("-")[0]
    version = "1.10.0" if name == "scipy" else "0.4.0" if name == "tinyconf" else "1.0"  # the release asked about
    blocker = wheel_blocker(name, version, files, python, platform)
    assert (blocker.why if blocker else None) == why


def test_unknown_platform_is_an_error():
    with pytest.raises(ValueError, match="riscv64"):
        target_platform("linux", "riscv64")


NO_WHEEL = Blocker("scipy", "1.10.0", "no-wheel", "has no wheels")
NUMPY = Blocker("numpy", "1.26.4", "no-wheel", "has no wheels")
CONFLICT = Blocker("torchtext", "0.16.0", "conflict", "requires torch==2.1.0", "torch==2.1.0")


def test_the_highest_that_installs_with_the_reasons_for_the_ones_above():
    probes = [PythonProbe("3.13", False, (NUMPY, NO_WHEEL)), PythonProbe("3.12", False, (NO_WHEEL,)),
              PythonProbe("3.11", True, resolved=("scipy==1.10.0", "numpy==1.26.4"))]
    assert choose_python(probes) == (
        "3.11", ("Python 3.11: scipy==1.10.0 has no wheels for 3.12+; numpy==1.26.4 has no wheels for 3.13+",))


def test_the_highest_candidate_installs():
    assert choose_python([PythonProbe("3.13", True, resolved=("a==1",))]) == (
        "3.13", ("Python 3.13: the whole dependency set installs (1 packages)",))


def test_none_installs_and_an_unparsed_failure_keeps_uv_words():
    probes = [PythonProbe("3.12", False, (CONFLICT,)), PythonProbe("3.11", False, raw="\nerror: something new\n")]
    python, reasons = choose_python(probes)
    assert python is None
    assert reasons == (("no candidate Python installs every dependency: torchtext==0.16.0 requires torch==2.1.0 "
                        "(Python 3.12+); uv could not resolve the set for Python 3.11: error: something new"),)
    assert choose_python([]) == (None, ())


def test_conflicts_are_named_only_against_the_plans_pins():
    probes = [PythonProbe("3.12", False, (CONFLICT, Blocker("a", "1", "conflict", "requires b>2", "b>2")))]
    assert describe_conflict(probes, ["torch==2.7.1"]) == "torchtext==0.16.0 requires torch==2.1.0, not torch==2.7.1"
    assert describe_conflict(probes, ["numpy==2.0"]) is None


def test_fit_from_report():
    unchecked = fit_from_report(InstallReport(False, "x86_64-manylinux_2_28", note="offline"))
    assert (unchecked.python, unchecked.warnings) == (None, ("the other dependencies were not checked (offline)",))
    blocked = fit_from_report(InstallReport(True, "x86_64-manylinux_2_28", (PythonProbe("3.12", False, (CONFLICT,)),)),
                              ["torch==2.7.1"])
    assert blocked.python is None and blocked.conflict == "torchtext==0.16.0 requires torch==2.1.0, not torch==2.7.1"
    fits = fit_from_report(InstallReport(True, "x", (PythonProbe("3.12", True),)))
    assert (fits.python, fits.conflict) == ("3.12", None)
    assert fits.reasons == ("Python 3.12: the whole dependency set installs",)
