"""imle-emulator's argument errors are one line, before any pty is opened."""
from __future__ import annotations

import pytest

from firmware_bridge.emulator.cli import main


def test_bad_drop_fraction(capsys) -> None:
    assert main(["--drop-fraction", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "imle-emulator: error: --drop-fraction must be in [0, 1), got 1.5"


def test_bad_mode_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--mode", "bogus"])
    assert info.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
