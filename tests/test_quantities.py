"""envbuilder.quantities: the one parser of Docker sizes, GPU requests and environment variable names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from envbuilder.quantities import (
    human_size,
    is_env_name,
    normalize_size,
    parse_gpu_request,
    parse_size_bytes,
)


@pytest.mark.parametrize("text, expected", [
    ("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("2G", 2 * 1024**3), ("1.5GiB", int(1.5 * 1024**3)),
    ("64 mb", 64 * 1024**2), ("100", 100), ("100b", 100), ("1k", 1024), ("1t", 1024**4), (4096, 4096),
])
def test_sizes_in_bytes_as_docker_reads_them(text, expected):
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2x", "", "-1g", "1.g", True, None, 1.5])
def test_bad_sizes_are_value_errors_naming_the_syntax(bad):
    with pytest.raises(ValueError, match="Docker's size syntax"):
        parse_size_bytes(bad)


@pytest.mark.parametrize("value, expected", [("8G", "8g"), (" 2 GiB ", "2gib"), (1024, "1024b")])
def test_sizes_normalised_for_the_config(value, expected):
    assert normalize_size(value) == expected
    assert parse_size_bytes(expected) == parse_size_bytes(value)


@pytest.mark.parametrize("bad", [0, -5, False, "2x"])
def test_normalize_refuses_what_docker_would(bad):
    with pytest.raises(ValueError):
        normalize_size(bad)


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("ALL", "all"), ("None", "none"), (1, 1), ("2", 2), (" 3 ", 3),
])
def test_gpu_requests(value, expected):
    assert parse_gpu_request(value) == expected


@pytest.mark.parametrize("bad", [0, "0", -1, "-1", "some", True, 1.0, "²"])
def test_bad_gpu_requests(bad):
    with pytest.raises(ValueError, match="GPU count >= 1"):
        parse_gpu_request(bad)


@pytest.mark.parametrize("name, ok", [
    ("A", True), ("_x", True), ("OMP_NUM_THREADS", True), ("a1", True),
    ("", False), ("1A", False), ("A-B", False), ("É", False), ("A B", False), ("A\n", False),
])
def test_env_names(name, ok):
    assert is_env_name(name) is ok


def test_imports_nothing_of_envbuilder_or_pydantic():
    probe = ("import sys\nimport envbuilder.quantities\n"
             "print(sorted(m for m in sys.modules if m.startswith(('envbuilder.', 'pydantic'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['envbuilder.quantities']"


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (999, "999 B"), (1_500, "1.5 kB"), (2_000_000, "2.0 MB"), (302_000_000, "302 MB"),
    (1_234_000_000, "1.2 GB"), (9_800_000_000, "9.8 GB"), (1_500_000_000_000, "1500 GB"),
])
def test_sizes_print_in_decimal_units_as_docker_shows_them(size, text):
    assert human_size(size) == text
