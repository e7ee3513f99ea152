"""Build the reference firmware's host programs (and the AVR image) with caching.

Outputs go to $IMLE_FIRMWARE_CACHE or ~/.cache/imle-policy/firmware/<hash>/, keyed by a hash of the
sources, the flags and the compiler's version, so a test session compiles once and later sessions not
at all. Builds take a file lock, so parallel test workers never see a half-written binary.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
CORE = HERE / "ImleFirmware" / "src"
CORE_SOURCES = (CORE / "imle_proto.c", CORE / "imle_device.c")
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")

# program name -> (sources beyond the core, extra link flags)
HOST_PROGRAMS = {
    "imle-harness": ((HERE / "host" / "imle_harness.c",), ()),
    "imle-device": ((HERE / "host" / "imle_device_host.c", HERE / "host" / "hostio.c"), ("-lm",)),
}

AVR_MCU = "atmega2560"
AVR_F_CPU = 16_000_000
AVR_CFLAGS = ("-std=gnu99", "-Os", "-Wall", "-Wextra", "-Werror", f"-mmcu={AVR_MCU}", f"-DF_CPU={AVR_F_CPU}UL",
              "-ffunction-sections", "-fdata-sections", "-DIMLE_TX_PAYLOAD_MAX=160", "-DIMLE_MAX_JOINTS=4",
              "-DIMLE_MAX_EXTRAS=4", "-DIMLE_PORT_HEADER=\"trace_sim.h\"")
AVR_SOURCES = (HERE / "avr" / "port_sim_mega.c",)


class BuildUnavailable(RuntimeError):
    """No compiler (or simulator library) on this machine: tests skip with this message."""


@dataclass(frozen=True)
class Toolchain:
    cc: str
    version: str


def _tool(names: Sequence[str]) -> Optional[str]:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def host_compiler() -> Toolchain:
    cc = _tool([os.environ.get("CC", ""), "cc", "gcc", "clang"] if os.environ.get("CC") else ["cc", "gcc", "clang"])
    if cc is None:
        raise BuildUnavailable("no C compiler (cc/gcc/clang) on PATH: install build-essential to build the "
                               "reference firmware")
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    return Toolchain(cc, out.splitlines()[0] if out else cc)


def cache_root() -> Path:
    env = os.environ.get("IMLE_FIRMWARE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imle-policy" / "firmware"


def _digest(parts: Sequence[object], files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
    for path in sorted(set(files)):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _headers(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in sorted(d.glob("*.h"))]


def _compile_cached(name: str, argv_tail: Sequence[str], files: Sequence[Path], key: Sequence[object],
                    cc: str) -> Path:
    out_dir = cache_root() / f"{name}-{_digest(key, files)}"
    out = out_dir / name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        tmp = out_dir / f".{name}.{os.getpid()}"
        proc = subprocess.run([cc, *argv_tail, "-o", str(tmp)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, out)  # atomic: nobody runs a half-written binary
    return out


def build_host(program: str) -> Path:
    """Compile one host program (`imle-harness` or `imle-device`) and return its path."""
    extra, libs = HOST_PROGRAMS[program]
    tc = host_compiler()
    sources = [*CORE_SOURCES, *extra]
    files = [*sources, *_headers(CORE, HERE / "host")]
    argv = [*CFLAGS, f"-I{CORE}", f"-I{HERE / 'host'}", *map(str, sources), *libs]
    return _compile_cached(program, argv, files, (program, tc.version, argv), tc.cc)


# ----------------------------------------------------------------------------- AVR in simavr
SIMAVR_INCLUDE = Path("/usr/include/simavr")


def avr_toolchain_missing() -> Optional[str]:
    """None when the AVR image and its simulator runner can be built here, else what is missing."""
    missing = [t for t in ("avr-gcc", "avr-nm", "avr-size") if shutil.which(t) is None]
    if not (SIMAVR_INCLUDE / "sim_avr.h").exists():
        missing.append("libsimavr-dev")
    try:
        host_compiler()
    except BuildUnavailable:
        missing.append("a host C compiler")
    if missing:
        return (f"AVR toolchain incomplete (missing {', '.join(missing)}): apt-get install gcc-avr avr-libc "
                f"libsimavr-dev libsimavrparts1 libelf-dev")
    return None


@dataclass(frozen=True)
class AvrImage:
    elf: Path
    dev_addr: int          # data address of the firmware's `dev` (its counters come first)
    flash_bytes: int       # .text + .data
    ram_bytes: int         # .data + .bss + .noinit (static; the stack comes on top)
    eeprom_bytes: int


def build_avr() -> AvrImage:
    """Cross-compile the simulated-plant ATmega2560 port (avr/port_sim_mega.c) with avr-gcc."""
    why = avr_toolchain_missing()
    if why:
        raise BuildUnavailable(why)
    version = subprocess.run(["avr-gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    sources = [*AVR_SOURCES, *CORE_SOURCES]
    argv = [*AVR_CFLAGS, f"-I{HERE / 'avr'}", f"-I{CORE}", *map(str, sources), "-Wl,--gc-sections"]
    elf = _compile_cached("imle-mega2560.elf", argv, [*sources, *_headers(CORE, HERE / "avr")],
                          ("avr", version, argv), "avr-gcc")
    symbols = subprocess.run(["avr-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    addr = next(int(line.split()[0], 16) for line in symbols.splitlines() if line.endswith(" dev"))
    sizes = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sec = {p[0]: int(p[1]) for p in (line.split() for line in sizes.splitlines()) if len(p) >= 2 and
           p[0].startswith(".") and p[1].isdigit()}
    return AvrImage(elf, addr, sec.get(".text", 0) + sec.get(".data", 0),
                    sec.get(".data", 0) + sec.get(".bss", 0) + sec.get(".noinit", 0), sec.get(".eeprom", 0))


def build_simavr_runner() -> Path:
    """The host program that runs the AVR image in libsimavr with its UART on a pty."""
    why = avr_toolchain_missing()
    if why:
        raise BuildUnavailable(why)
    tc = host_compiler()
    sources = [HERE / "sim" / "imle_simavr.c", HERE / "host" / "hostio.c"]
    argv = [*CFLAGS, f"-I{SIMAVR_INCLUDE}", f"-I{HERE / 'host'}", *map(str, sources), "-lsimavr", "-lelf", "-lm"]
    argv = [a for a in argv if a != "-pedantic"]  # simavr's headers are GNU C
    return _compile_cached("imle-simavr", argv, [*sources, *_headers(HERE / "host")], ("simavr", tc.version, argv),
                           tc.cc)
