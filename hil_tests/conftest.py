"""HIL options: --device serial:PORT points the serial protocol tests at a real board (docs/firmware.md)."""
from __future__ import annotations

import os


def pytest_addoption(parser) -> None:
    parser.addoption("--device", default=None, metavar="serial:PORT",
                     help="also run the serial protocol/safety HIL tests against a real board on PORT "
                          "(same as IMLE_HIL_DEVICE=serial:PORT)")


def pytest_configure(config) -> None:
    device = config.getoption("--device", default=None)
    if device:
        os.environ["IMLE_HIL_DEVICE"] = device  # read when hil_tests/device_kinds.py builds the device list
