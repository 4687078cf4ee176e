"""The native library's loader: what it refuses to load, and the one-line reasons it gives."""

import json

import torch

from igsearch_kernels import _native


def reason_with(monkeypatch, tmp_path, library: bytes | None, info: str | None) -> tuple[bool, str]:
    lib, build = tmp_path / "libigsearch_native.so", tmp_path / "native_build.json"
    if library is not None:
        lib.write_bytes(library)
    if info is not None:
        build.write_text(info)
    monkeypatch.setattr(_native, "LIBRARY", lib)
    monkeypatch.setattr(_native, "BUILD_INFO", build)
    return _native.load.__wrapped__()  # uncached


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    ok, why = reason_with(monkeypatch, tmp_path, None, None)
    assert not ok and "not built" in why and "make native" in why


def test_library_for_another_torch_is_not_loaded(monkeypatch, tmp_path):
    """A library built against another torch is refused before loading (loading it could crash)."""
    ok, why = reason_with(monkeypatch, tmp_path, b"not a library", json.dumps({"torch": "1.0.0"}))
    assert not ok and "built for torch 1.0.0" in why and torch.__version__ in why


def test_unreadable_build_info_and_bad_library(monkeypatch, tmp_path):
    ok, why = reason_with(monkeypatch, tmp_path, b"x", "{not json")
    assert not ok and "native_build.json unreadable" in why
    running = torch.__version__.split("+")[0]
    ok, why = reason_with(monkeypatch, tmp_path, b"not an ELF file", json.dumps({"torch": running}))
    assert not ok and "failed to load" in why and "\n" not in why
