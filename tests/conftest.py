"""Shared pytest setup.

Triton kernels run on CPU tensors through Triton's interpreter; it must be switched on before
triton is first imported, so it is set here when no CUDA device is visible.
"""

import os

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover - torch missing means most tests fail anyway
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def small_tok():
    """The small world tokenizer (every protocol tag one token), for IG and scorer tests."""
    from policy_fixtures import small_tokenizer

    return small_tokenizer()


@pytest.fixture(scope="module")
def small_qwen(small_tok):
    """A random 2-layer Qwen2 over ``small_tok``'s vocabulary."""
    from policy_fixtures import random_qwen

    return random_qwen(len(small_tok))
