"""Reference firmware for the device side of the serial protocol (C99 core in ImleFirmware/src),
its host build (a pseudo-terminal device with a simulated joint plant) and an AVR ATmega2560 port run
in simavr. docs/firmware.md describes it; `build` compiles with caching, `process` starts the devices."""
