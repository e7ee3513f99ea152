"""Protocol integrity under line noise: how many corrupted JointCommands does the device act on?

    python benchmarks/protocol_integrity.py                          # 10^7 commands at 1-in-8 and 1-in-50
    python benchmarks/protocol_integrity.py --commands 200000 --crc16-commands 0   # a quick look

The host encodes JointCommands (protocol v2: CRC-32) along a plausible trajectory (a random walk of
at most 20 px per command and joint inside [10, 502] px, the Push-T emulator's joint space), the
bytes cross a channel that corrupts each byte independently with probability 1/N (XOR with a random
non-zero value, the emulator's FaultInjector model, vectorised here), and the emulated device's own
core (firmware_bridge.emulator.device.DeviceCore: the frame decoder, the session, the command checks
including the max_step plausibility check) receives them. Per run:

  applied        commands the device applied
  foreign        applied commands whose targets differ from every command the host sent (must be 0)
  misattributed  applied with targets of a sent command but another command's seq (a replay)
  crc_passed     corrupted frames that passed the CRC (the CRC-only residual; later checks and the
                 plausibility check still stand between them and the actuator)
  implausible    commands refused by the plausibility check (after a run of lost frames, or corrupted)
  max_step       the largest change of the device's target made by one applied command

The same channel with protocol v1's CRC-16 (--crc16-commands, default 2x10^6 per rate) shows what
the old framing let through. The device's plant is a stand-in with the Push-T emulator's limits
(no physics: the measured path is decoder -> checks -> target). Work is split into chunks over
--workers processes (default 2). Prints a table; writes benchmarks/results/protocol_integrity.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_bridge.emulator.device import DeviceConfig, DeviceCore  # noqa: E402
from firmware_bridge.emulator.plant import JOINT_NAMES, LIMIT_HIGH, LIMIT_LOW, MAX_STEP_PX  # noqa: E402
from firmware_bridge.protocol import (CRC16_V1, CRC32, PROTOCOL_VERSION, FrameCheck, FrameDecoder, Hello,  # noqa: E402
                                      JointCommand, MsgType, ProtocolError, cobs_encode, decode_frame, encode_frame)

RESULTS = REPO / "benchmarks" / "results" / "protocol_integrity.json"
CHECKS = {"crc32": CRC32, "crc16": CRC16_V1}
WALK_STEP = 20.0      # px per command and joint: the demos' 99th percentile is ~34 px per 0.1 s tick
BATCH = 4096          # commands encoded, corrupted and fed per batch
TOKEN = 0x5EED5EED5EED5EED


class LimitsPlant:
    """The Push-T emulator's joint space without the physics: what the command path needs."""
    joint_names = JOINT_NAMES
    extra_names = ("block_x", "block_y", "block_angle", "coverage")
    physics_dt = 0.01
    control_dt = 0.1

    def __init__(self) -> None:
        self.lower = np.full(2, LIMIT_LOW, np.float32)
        self.upper = np.full(2, LIMIT_HIGH, np.float32)
        self.max_step = np.full(2, MAX_STEP_PX, np.float32)
        self.max_velocity = self.max_step / np.float32(self.control_dt)
        self.position = np.array([256.0, 256.0])

    def brake(self) -> np.ndarray:
        return self.position.copy()

    def positions(self) -> np.ndarray:
        return self.position.astype(np.float32)

    def extras(self) -> np.ndarray:
        return np.zeros(4, np.float32)


class CountingDecoder(FrameDecoder):
    """FrameDecoder that also counts chunks whose CRC matched but that a later check rejected."""

    def __init__(self, check: FrameCheck) -> None:
        super().__init__(check)
        self.crc_ok_rejected = 0

    def _decode(self, encoded: bytes, out: list) -> None:
        try:
            frame = decode_frame(encoded, self.check)
        except ProtocolError as exc:
            self._count(exc)
            # version/type/length/payload are checked after the CRC; the v1-frame probe is a CRC-32 miss.
            if exc.reason in ("version", "type", "length", "payload") and "(CRC-16)" not in str(exc):
                self.crc_ok_rejected += 1
            return
        self.frames_ok += 1
        out.append(frame)


@dataclass
class Result:
    check: str
    one_in: int
    commands: int = 0
    corrupted_frames: int = 0      # frames with at least one corrupted byte (delimiter included)
    applied: int = 0
    genuine: int = 0               # applied with the exact targets and seq the host sent
    foreign: int = 0
    misattributed: int = 0
    crc_passed: int = 0            # corrupted frames whose CRC matched (decoded or not)
    decoded_corrupt: int = 0       # ... of which passed every codec check (reached the command checks)
    implausible: int = 0
    bad_command: int = 0
    max_step: float = 0.0
    seconds: float = 0.0
    foreign_examples: list = field(default_factory=list)


_CMD_HEADER = struct.Struct("<BBHBB")


def command_frame(seq: int, raw_targets: bytes, check: FrameCheck) -> bytes:
    """encode_frame(JointCommand(targets), seq) without the per-message validation (the host side is not
    what is measured; run_chunk checks the bytes against encode_frame regularly)."""
    body = _CMD_HEADER.pack(PROTOCOL_VERSION, MsgType.JOINT_COMMAND, seq, 1, len(raw_targets) // 4) + raw_targets
    return cobs_encode(body + struct.pack(check.fmt, check.fn(body))) + b"\x00"


def run_chunk(args: tuple) -> Result:
    check_name, one_in, n, seed = args
    check = CHECKS[check_name]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    res = Result(check_name, one_in)
    plant = LimitsPlant()
    core = DeviceCore(DeviceConfig("realtime", watchdog_ms=0), plant, lambda data: True, 0.0)  # type: ignore[arg-type]
    core.decoder = decoder = CountingDecoder(check)
    core.receive(encode_frame(Hello(nonce=1, session_token=TOKEN), 0, check=check), 0.0)  # clean: session up
    assert core.session

    sent: dict[int, bytes] = {}          # seq -> the float32 target bytes last sent with that seq
    sent_all: set[bytes] = set()         # every target this chunk sent
    applied: list[tuple[int, np.ndarray]] = []
    core.on_applied = lambda s, targets: applied.append((s, targets))
    on_frame = core._on_frame

    def classify(frame, now: float) -> None:  # every frame that passed every codec check
        msg = frame.message
        if not (isinstance(msg, JointCommand) and msg.valid and sent.get(frame.seq) == msg.targets.tobytes()):
            res.decoded_corrupt += 1
        on_frame(frame, now)

    core._on_frame = classify  # type: ignore[method-assign]
    prev_target = core.target.copy()
    pos = np.array([256.0, 256.0])
    seq, done, now = 1, 0, 0.0
    while done < n:
        m = min(BATCH, n - done)
        # Reflecting random walk inside [10, 502] px: fold the free walk back into the box.
        free = pos + np.cumsum(rng.uniform(-WALK_STEP, WALK_STEP, (m, 2)), axis=0)
        pos = free[-1]
        folded = np.mod(free - 10.0, 984.0)
        targets = (np.where(folded > 492.0, 984.0 - folded, folded) + 10.0).astype(np.float32)
        frames = []
        for i in range(m):
            raw = targets[i].tobytes()
            frames.append(command_frame(seq, raw, check))
            if seq % 997 == 0:  # the fast path is the codec's own encoding, byte for byte
                assert frames[-1] == encode_frame(JointCommand(targets[i]), seq, check=check)
            sent[seq] = raw
            sent_all.add(raw)
            seq = (seq + 1) & 0xFFFF
        wire = np.frombuffer(b"".join(frames), np.uint8).copy()
        hits = rng.random(wire.size) < 1.0 / one_in
        wire[hits] ^= rng.integers(1, 256, int(hits.sum()), dtype=np.uint8)
        starts = np.cumsum([0] + [len(f) for f in frames[:-1]])
        res.corrupted_frames += int(np.count_nonzero(np.add.reduceat(hits, starts)))
        data = wire.tobytes()
        for start in range(0, len(data), 512):  # UART-sized reads
            now += 0.002
            core.receive(data[start:start + 512], now)
        for s, t in applied:
            raw = t.tobytes()
            jump = float(np.max(np.abs(t.astype(np.float64) - prev_target)))
            res.max_step = max(res.max_step, jump)
            prev_target = np.clip(t, plant.lower, plant.upper).astype(np.float64)
            if sent.get(s) == raw:
                res.genuine += 1
            elif raw in sent_all:
                res.misattributed += 1
            else:
                res.foreign += 1
                if len(res.foreign_examples) < 5:
                    res.foreign_examples.append({"seq": s, "targets": t.tolist(), "jump": jump})
        res.applied += len(applied)
        applied.clear()
        res.commands += m
        done += m
    res.crc_passed = decoder.crc_ok_rejected + res.decoded_corrupt
    res.implausible = core.counters["commands_implausible"]
    res.bad_command = core.counters["commands_rejected"] - res.implausible
    res.seconds = time.perf_counter() - t0
    return res


def merge(parts: list[Result]) -> Result:
    out = Result(parts[0].check, parts[0].one_in)
    for p in parts:
        for k in ("commands", "corrupted_frames", "applied", "genuine", "foreign", "misattributed", "crc_passed",
                  "decoded_corrupt", "implausible", "bad_command", "seconds"):
            setattr(out, k, getattr(out, k) + getattr(p, k))
        out.max_step = max(out.max_step, p.max_step)
        out.foreign_examples += p.foreign_examples[:5 - len(out.foreign_examples)]
    return out


def rate(count: int, total: int) -> str:
    return "0" if count == 0 else f"{count / total:.2e}"


def upper95(count: int, total: int) -> float:
    """One-sided 95% upper bound on a rate with `count` events in `total` trials (rule of three at 0)."""
    if total == 0:
        return float("nan")
    if count == 0:
        return 3.0 / total
    # Wilson score upper bound, adequate for reporting
    z = 1.645
    p = count / total
    return (p + z * z / (2 * total) + z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))) / (
        1 + z * z / total)


def table(results: list[Result]) -> str:
    head = ("| check | noise | commands | corrupted frames | applied | foreign applied | foreign rate (95% bound) "
            "| misattributed | CRC passed corrupt | ... decoded | implausible refused | largest applied step |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        lines.append(
            f"| {CHECKS[r.check].name} | 1 in {r.one_in} | {r.commands:,} | {r.corrupted_frames:,} | {r.applied:,} | "
            f"{r.foreign} | {rate(r.foreign, r.commands)} (<= {upper95(r.foreign, r.commands):.1e}) | "
            f"{r.misattributed} | {r.crc_passed} ({rate(r.crc_passed, r.corrupted_frames)} of corrupted) | "
            f"{r.decoded_corrupt} | {r.implausible:,} | {r.max_step:.1f} px |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commands", type=int, default=10_000_000, help="JointCommands per noise rate with CRC-32")
    p.add_argument("--crc16-commands", type=int, default=2_000_000,
                   help="JointCommands per noise rate with protocol v1's CRC-16, for comparison (0 skips)")
    p.add_argument("--one-in", default="8,50", help="byte corruption rates to run, comma-separated N (1 in N)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250_000, help="commands per work unit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.commands < 1 or args.crc16_commands < 0 or args.workers < 1 or args.chunk < 1:
        p.error("--commands, --workers and --chunk must be >= 1 and --crc16-commands >= 0")
    try:
        rates = [int(v) for v in args.one_in.split(",")]
    except ValueError:
        p.error(f"--one-in must be comma-separated integers, got {args.one_in!r}")
    if any(r < 2 for r in rates):
        p.error(f"--one-in rates must be >= 2, got {args.one_in!r}")
    units: list[tuple] = []
    for check, total in (("crc32", args.commands), ("crc16", args.crc16_commands)):
        for one_in in rates:
            for i, start in enumerate(range(0, total, args.chunk)):
                units.append((check, one_in, min(args.chunk, total - start),
                              hash((args.seed, check, one_in, i)) & 0xFFFFFFFF))
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        parts = pool.map(run_chunk, units, chunksize=1)
    wall = time.perf_counter() - t0
    groups: dict[tuple, list[Result]] = {}
    for r in parts:
        groups.setdefault((r.check, r.one_in), []).append(r)
    results = [merge(v) for v in groups.values()]
    print(table(results))
    print(f"wall {wall:.0f} s on {args.workers} worker(s); max_step {MAX_STEP_PX:g} px; host walk <= {WALK_STEP:g} px "
          f"per command")
    out = {"command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:])),
           "wall_s": round(wall, 1), "workers": args.workers, "max_step_px": MAX_STEP_PX, "walk_step_px": WALK_STEP,
           "host": platform.node(), "python": platform.python_version(),
           "results": [asdict(r) | {"check_name": CHECKS[r.check].name,
                                    "foreign_rate_upper95": upper95(r.foreign, r.commands)} for r in results]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(r.foreign and r.check == "crc32" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
