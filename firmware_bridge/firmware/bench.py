"""One benchmark row per device implementation, and the AVR image's size and cycles per command frame.

    python -m firmware_bridge.firmware.bench [--devices python,c-host,avr-sim] [--out FILE]

Per device, over its pty with SerialLink: handshake time; command-to-State latency p50/p99 (a
JointCommand, then the first State whose ack_seq is that command's, States streamed at 500 Hz);
frames processed per second (JointCommands sent back to back until the device has applied them all).
For the AVR: flash/RAM/EEPROM of the image (avr-size) and the MCU cycles spent on a JointCommand's
final byte (decode, CRC, checks, apply) and on any other byte, counted by the simulator.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _start(kind: str, **opts):
    if kind == "python":
        from firmware_bridge.emulator import start_emulator
        return start_emulator(**opts)
    from .process import start_avr_device, start_host_device
    return (start_host_device if kind == "c-host" else start_avr_device)(**opts)


def bench_device(kind: str, commands: int = 300, burst: int = 1000) -> dict:
    from firmware_bridge.serial_link import SerialLink
    dev = _start(kind, state_hz=500, watchdog_ms=0)
    try:
        link = SerialLink(dev.port, handshake_timeout_s=2.0, state_timeout_s=2.0)
        t0 = time.perf_counter()
        link.connect()
        handshake_ms = (time.perf_counter() - t0) * 1e3
        here = link.wait_state(timeout=2.0).positions.astype(np.float64)
        lat = []
        for i in range(commands):
            target = np.float32(here + [10.0 * np.sin(i / 10), 0.0])
            t = time.perf_counter()
            seq = link.send_command(target)
            link.wait_state(after_seq=seq, timeout=2.0)
            lat.append((time.perf_counter() - t) * 1e3)
        before = dev.status()["commands_applied"]
        t = time.perf_counter()
        # The AVR at 16 MHz handles ~1,200 commands/s, less than its 500 kbaud wire carries (2,500/s): a
        # back-to-back burst would overrun its 128-byte RX ring (lost bytes -> dropped frames), so it is paced.
        pace = 1.0 / 1000 if kind == "avr-sim" else 0.0
        for i in range(burst):
            link.send_command(np.float32(here + [5.0 * np.sin(i / 7), 0.0]))
            if pace:
                time.sleep(pace)
        deadline = time.perf_counter() + 60
        while dev.status()["commands_applied"] < before + burst and time.perf_counter() < deadline:
            time.sleep(0.01)
        status = dev.status()
        elapsed = time.perf_counter() - t
        applied = status["commands_applied"] - before
        link.close()
        row = {"device": kind, "handshake_ms": round(handshake_ms, 2),
               "cmd_to_state_ms_p50": round(float(np.percentile(lat, 50)), 3),
               "cmd_to_state_ms_p99": round(float(np.percentile(lat, 99)), 3),
               "commands_per_s": round(applied / elapsed, 1), "burst_applied": applied, "burst_sent": burst}
        row["paced_at_per_s"] = round(1 / pace) if pace else None
        for key in ("cmd_frame_cycles_mean", "cmd_frame_cycles_max", "byte_cycles_mean", "f_cpu"):
            if key in status:
                row[key] = status[key]
        if "cmd_frame_cycles_mean" in status:  # what the MCU alone could do: a 20-byte JointCommand frame
            cycles = status["cmd_frame_cycles_mean"] + 19 * status["byte_cycles_mean"]
            row["mcu_bound_commands_per_s"] = round(status["f_cpu"] / cycles, 1)
            row["cmd_frame_us_at_f_cpu"] = round(1e6 * cycles / status["f_cpu"], 1)
        return row
    finally:
        dev.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="python,c-host,avr-sim")
    p.add_argument("--out", default="benchmarks/results/firmware_devices.json")
    args = p.parse_args(argv)
    result: dict = {"rows": []}
    kinds = [k for k in args.devices.split(",") if k]
    if "avr-sim" in kinds:
        from .build import BuildUnavailable, build_avr
        try:
            img = build_avr()
            result["avr_image"] = {"mcu": "atmega2560", "flash_bytes": img.flash_bytes, "flash_total": 262144,
                                   "ram_static_bytes": img.ram_bytes, "ram_total": 8192,
                                   "eeprom_bytes": img.eeprom_bytes}
            print(f"AVR image: flash {img.flash_bytes} B of 256 KiB, static RAM {img.ram_bytes} B of 8 KiB, "
                  f"EEPROM {img.eeprom_bytes} B", flush=True)
        except BuildUnavailable as exc:
            print(f"SKIPPED avr-sim: {exc}", flush=True)
            kinds.remove("avr-sim")
    for kind in kinds:
        row = bench_device(kind)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
