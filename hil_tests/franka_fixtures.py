"""Start franka-sim (the Franka FCI simulator) on loopback for hardware-in-the-loop tests.

franka-sim speaks the real libfranka wire protocol (robot server version 10), so pylibfranka
connects to it exactly as it would to an arm. Three things about it shape this module:

* libfranka always dials TCP port 1337: a client cannot be pointed at another port. Each server
  therefore gets its own loopback address (any 127.x.y.z answers on Linux without configuration),
  so concurrent test runs on one machine do not collide. franka-sim's own pytest plugin picks a
  free *port* instead, which only its Python probe can follow, not libfranka.
* franka-sim's MuJoCo backend loads the MuJoCo Menagerie FR3 model, which `robot_descriptions`
  downloads (a git clone) on first use. Offline, `$FR3_MJCF` may name a local MJCF instead. When it
  is unset and the Menagerie copy is not already cached, `fr3_mjcf()` builds a mesh-free MJCF from
  the FR3 URDF that franka-sim itself ships (the one it serves to clients through GetRobotModel):
  the same kinematics, inertias, joint limits, damping and friction, plus the Menagerie `fr3v2`
  rotor armature (0.195 kg m^2), without which the simulator's stiff joint servo is unstable at its
  1 ms step. No meshes means no self-collision reflex; joint motion is unaffected.
* Without `--vis` the server renders nothing: it needs no display, no EGL and no OSMesa.
* Its UDP state socket is unbound, so states to a client on 127.0.0.1 come *from* 127.0.0.1 even when
  the server listens on another loopback address. libfranka does not mind; franka-sim's own
  `health_check` does (it drops datagrams whose sender is not the address it dialled), so the
  readiness probe here is the same Connect handshake without that filter.

    with FrankaSim() as sim:          # or the `franka_sim` fixture in test_franka_sim.py
        robot = FrankaRobot(sim.host, realtime=False)
"""
from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

COMMAND_PORT = 1337  # fixed by libfranka
FR3V2_ARMATURE = 0.195  # kg m^2, MuJoCo Menagerie franka_fr3_v2 default joint class

# The server process: a FrankaSimServer bound to one loopback address, motion limits enforced so a
# command stream that breaks the FCI's velocity/acceleration/jerk limits aborts like on the real arm.
_SERVER_CODE = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from franka_sim import FrankaSimServer
server = FrankaSimServer(host=sys.argv[1], port=int(sys.argv[2]), enable_gripper=False,
                         enforce_motion_limits=sys.argv[3] == "1", enforce_comm_constraints=False)
try:
    server.start()
except KeyboardInterrupt:
    pass
finally:
    server.stop()
"""


class FrankaSimUnavailable(RuntimeError):
    """franka-sim cannot run here (not installed, or the model cannot be built). One line."""


def _menagerie_cached() -> Optional[Path]:
    """The Menagerie fr3v2 MJCF if robot_descriptions already has it on disk (no download)."""
    cache = Path(os.environ.get("ROBOT_DESCRIPTIONS_CACHE", Path.home() / ".cache" / "robot_descriptions"))
    path = cache / "mujoco_menagerie" / "franka_fr3_v2" / "fr3v2.xml"
    return path if path.is_file() else None


def build_meshfree_fr3_mjcf(out_dir: Path) -> Path:
    """Write an MJCF of the FR3 arm from franka-sim's bundled URDF, without meshes. Returns its path."""
    try:
        import franka_sim
        import mujoco
    except ImportError as exc:
        raise FrankaSimUnavailable(f"franka-sim is not installed ({exc}); pip install 'imle-policy[franka-sim]'")
    urdf = Path(franka_sim.__file__).resolve().parent / "models" / "fr3.urdf"
    if not urdf.is_file():
        raise FrankaSimUnavailable(f"franka-sim ships no FR3 URDF at {urdf}")
    tree = ET.parse(urdf)
    for link in tree.getroot().iter("link"):
        for tag in ("visual", "collision"):
            for element in link.findall(tag):
                link.remove(element)
    out_dir.mkdir(parents=True, exist_ok=True)
    stripped = out_dir / "fr3_meshfree.urdf"
    tree.write(stripped)
    spec = mujoco.MjSpec.from_file(str(stripped))
    for joint in spec.joints:
        joint.armature = FR3V2_ARMATURE
    spec.compile()
    mjcf = out_dir / "fr3_meshfree.xml"
    mjcf.write_text(spec.to_xml())
    return mjcf


def fr3_mjcf(work_dir: Path) -> tuple[Path, str]:
    """The MJCF franka-sim should load, and where it came from ($FR3_MJCF, Menagerie cache, mesh-free)."""
    override = os.environ.get("FR3_MJCF")
    if override:
        return Path(override), "$FR3_MJCF"
    cached = _menagerie_cached()
    if cached is not None:
        return cached, "MuJoCo Menagerie fr3v2 (cached)"
    return build_meshfree_fr3_mjcf(work_dir), "mesh-free FR3 built from franka-sim's bundled URDF"


def _pick_loopback_address() -> str:
    """A random 127.x.y.z whose port 1337 is free right now."""
    rng = random.Random()
    for _ in range(50):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, COMMAND_PORT))
            except OSError:
                continue
        return host
    raise FrankaSimUnavailable("no free loopback address for port 1337 (is something bound to 0.0.0.0:1337?)")


def probe_fci(host: str, port: int = COMMAND_PORT, timeout: float = 5.0) -> None:
    """libfranka's Connect handshake, then wait for one RobotState datagram. Raises OSError if not served."""
    from franka_sim.franka_protocol import Command, ConnectStatus, MessageHeader
    from franka_sim.health_check import PROTOCOL_VERSION

    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("", 0))
        udp_port = udp.getsockname()[1]
        header = MessageHeader(command=Command.kConnect, command_id=1, size=12 + 4)
        tcp.sendall(header.to_bytes() + struct.pack("<HH", PROTOCOL_VERSION, udp_port))
        reply = b""
        while len(reply) < 15:
            tcp.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = tcp.recv(15 - len(reply))
            if not chunk:
                raise ConnectionError("server closed the connection during the Connect handshake")
            reply += chunk
        status, version = struct.unpack("<BH", reply[12:15])
        if status != ConnectStatus.kSuccess:
            raise ConnectionError(f"server refused Connect (status {status}, server version {version})")
        udp.settimeout(max(0.01, deadline - time.monotonic()))
        udp.recvfrom(65535)  # socket.timeout (an OSError) if no state arrives


class FrankaSim:
    """A franka-sim server subprocess on a private loopback address. Context manager."""

    def __init__(self, host: Optional[str] = None, enforce_motion_limits: bool = True,
                 startup_timeout_s: float = 60.0):
        self.host = host
        self.enforce_motion_limits = enforce_motion_limits
        self.startup_timeout_s = startup_timeout_s
        self.process: Optional[subprocess.Popen] = None
        self.model_source = ""
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.log_path: Optional[Path] = None

    def start(self) -> "FrankaSim":
        try:
            import franka_sim  # noqa: F401
        except ImportError as exc:
            raise FrankaSimUnavailable(f"franka-sim is not installed ({exc})") from None
        self._tmp = tempfile.TemporaryDirectory(prefix="franka-sim-")
        work = Path(self._tmp.name)
        mjcf, self.model_source = fr3_mjcf(work)
        if self.host is None:
            self.host = _pick_loopback_address()
        self.log_path = work / "server.log"
        env = dict(os.environ, FR3_MJCF=str(mjcf))
        env.pop("DISPLAY", None)  # headless: the server must never try to open a viewer
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVER_CODE, self.host, str(COMMAND_PORT),
                 "1" if self.enforce_motion_limits else "0"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: Optional[Exception] = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise FrankaSimUnavailable(
                    f"franka-sim exited with code {self.process.returncode} before serving: {tail[-600:]}")
            try:
                probe_fci(self.host, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                return self
            except OSError as exc:
                last_error = exc
                time.sleep(0.2)
        self.stop()
        raise FrankaSimUnavailable(f"franka-sim did not serve on {self.host}:{COMMAND_PORT} within "
                                   f"{self.startup_timeout_s:.0f} s ({last_error})")

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:] if self.log_path else ""
        except OSError:
            return ""

    def aborts(self) -> list[str]:
        """Log lines where the simulator aborted a motion (a broken FCI limit, or another reflex)."""
        return [line for line in self.log_tail(10_000_000).splitlines() if "aborting the motion" in line]

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    process.kill()
                process.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "FrankaSim":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def enforcing_sim_or_skip() -> "FrankaSim":
    """franka-sim with its motion limits enforced, started; skips the calling test where it cannot run
    (the module-scoped `franka_sim` fixtures of the HIL tests)."""
    import pytest

    try:
        return FrankaSim(enforce_motion_limits=True).start()
    except FrankaSimUnavailable as exc:
        pytest.skip(f"franka-sim cannot run here: {exc}")


def main(argv: Optional[list[str]] = None) -> int:
    """Serve franka-sim on a loopback address until Ctrl-C (for trying the bridge by hand)."""
    import argparse

    parser = argparse.ArgumentParser(description="Start franka-sim headless on a loopback address (port 1337).")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to serve on (default 127.0.0.1; "
                                                             "'random' picks a free 127.x.y.z)")
    parser.add_argument("--no-enforce-motion-limits", action="store_true",
                        help="log FCI limit violations instead of aborting the motion")
    args = parser.parse_args(argv)
    sim = FrankaSim(host=None if args.host == "random" else args.host,
                    enforce_motion_limits=not args.no_enforce_motion_limits)
    try:
        sim.start()
    except FrankaSimUnavailable as exc:
        print(f"franka-sim: {exc}", file=sys.stderr)
        return 1
    print(f"franka-sim serving the FCI on {sim.host}:{COMMAND_PORT} (model: {sim.model_source}); "
          f"log {sim.log_path}; Ctrl-C stops", flush=True)
    try:
        while sim.process is not None and sim.process.poll() is None:
            time.sleep(0.5)
        print(f"franka-sim exited: {sim.log_tail()[-400:]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        sim.cleanup()


if __name__ == "__main__":
    sys.exit(main())



@pytest.fixture(scope="module")
def franka_sim():
    """franka-sim with its limits enforced, one per test module (skips where it cannot run)."""
    sim = enforcing_sim_or_skip()
    yield sim
    sim.cleanup()
