#!/usr/bin/env bash
# `make firmware-check`: the reference firmware on the host and on an emulated ATmega2560 (about 2 minutes).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
need=()
command -v cc >/dev/null || command -v gcc >/dev/null || need+=(build-essential)
command -v avr-gcc >/dev/null || need+=(gcc-avr binutils-avr)
[ -f /usr/lib/avr/include/avr/io.h ] || need+=(avr-libc)
[ -f /usr/include/simavr/sim_avr.h ] || need+=(libsimavr-dev libsimavrparts1)
[ -f /usr/include/libelf.h ] || [ -f /usr/include/gelf.h ] || need+=(libelf-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "firmware-check: installing ${need[*]}"
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}") >/tmp/firmware-check-apt.log 2>&1 \
            || { echo "SKIPPED firmware-check: apt-get install ${need[*]} failed (see /tmp/firmware-check-apt.log)"; exit 0; }
    else
        echo "SKIPPED firmware-check: missing ${need[*]} and cannot install them (needs root and apt-get)"
        exit 0
    fi
fi
set -e
export IMLE_FIRMWARE_AVR=1
nice -n 5 "$PY" -m pytest -q tests/firmware_bridge/test_firmware_codec.py
nice -n 5 "$PY" -m pytest -q -rs hil_tests/test_serial_faults.py -k "c-host or avr-sim"
nice -n 5 "$PY" -m firmware_bridge.firmware.bench
