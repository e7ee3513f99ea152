"""Drive the C core's test harness (host/imle_harness.c) from Python: codec calls and a fake-clock device."""
from __future__ import annotations

import subprocess
from typing import Optional

from ..protocol import Frame, FrameDecoder, Message, encode_frame
from .build import build_host


class Harness:
    """One `imle-harness` process. Commands return the lines the program printed before its '.'."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(build_host("imle-harness"))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.host_seq = 0

    def cmd(self, line: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = []
        while True:
            got = self.proc.stdout.readline()
            if not got:
                raise RuntimeError(f"imle-harness exited while answering {line[:60]!r}")
            got = got.rstrip("\n")
            if got == ".":
                return out
            out.append(got)

    # codec
    def crc(self, data: bytes) -> int:
        (line,) = self.cmd(f"crc {data.hex()}")
        return int(line.split()[1], 16)

    def encode(self, msg_type: int, seq: int, payload: bytes) -> bytes:
        (line,) = self.cmd(f"encode {msg_type} {seq} {payload.hex()}")
        return bytes.fromhex(line.split()[1])

    def decode(self, wire: bytes) -> list[tuple]:
        """('ok', type, seq, payload) or ('drop', reason) per frame end, as the C receiver saw them."""
        out = []
        for line in self.cmd(f"decode {wire.hex()}"):
            parts = line.split()
            if parts[0] == "ok":
                out.append(("ok", int(parts[1]), int(parts[2]), bytes.fromhex(parts[3]) if len(parts) > 3 else b""))
            else:
                out.append(("drop", parts[1]))
        return out

    # device with a fake clock
    def clock(self, ms: int) -> None:
        self.cmd(f"clock {ms}")

    def _frames(self, lines: list[str]) -> tuple[list[Frame], list[str]]:
        decoder = FrameDecoder()
        frames: list[Frame] = []
        other = []
        for line in lines:
            if line.startswith("tx "):
                frames += decoder.feed(bytes.fromhex(line[3:]))
            else:
                other.append(line)
        assert decoder.errors_total == 0, decoder.errors
        return frames, other

    def send(self, msg: Message, seq: Optional[int] = None, raw: Optional[bytes] = None) -> list[Message]:
        """Send a host frame (or raw bytes); return the messages the device answered with."""
        if raw is None:
            if seq is None:
                seq = self.host_seq
            self.host_seq = (seq + 1) & 0xFFFF
            raw = encode_frame(msg, seq)
        frames, self.last_other = self._frames(self.cmd(f"rx {raw.hex()}"))
        return [f.message for f in frames]

    def send_frames(self, raw: bytes) -> list[Frame]:
        frames, self.last_other = self._frames(self.cmd(f"rx {raw.hex()}"))
        return frames

    def tick(self) -> list[Message]:
        frames, _ = self._frames(self.cmd("tick"))
        return [f.message for f in frames]

    def reboot(self) -> None:
        assert self.cmd("reboot") == []

    def status(self) -> dict[str, int]:
        from ..protocol import DeviceStatus
        (line,) = self.cmd("status")
        st = DeviceStatus.decode_payload(bytes.fromhex(line.split()[1]))
        return {k: getattr(st, k) for k in st.__dataclass_fields__}

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)
