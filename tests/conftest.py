"""Shared fixtures: tiny replay buffers written by the tests themselves (tests/tiny_buffers.py)."""
from __future__ import annotations

import pytest

from tiny_buffers import make_tiny_buffer


@pytest.fixture
def tiny_buffer(tmp_path):
    path = tmp_path / "tiny.zarr"
    data, ends = make_tiny_buffer(path)
    return path, data, ends
