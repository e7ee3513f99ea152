"""A microcontroller emulated in its own process on a pseudo-terminal, with the Push-T plant.

    emu = start_emulator(mode="lockstep")   # subprocess; emu.port is the device path
    ... SerialLink(emu.port) ...
    emu.stop()
"""
from .process import EmulatorError, EmulatorProcess, start_emulator

__all__ = ["EmulatorError", "EmulatorProcess", "start_emulator"]
