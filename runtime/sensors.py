"""Observation sources and the observation history the policy plans from.

- :class:`ObservationHistory`: the last To observations, padded at episode start by repeating the
  first one (the rule the trainer's windows and the in-process evaluation use).
- :class:`StateMapper`: a robot State (joint positions + extra sensors) -> the policy's state vector,
  matched strictly by name (or the operator's explicit mapping; runtime.binding), never by position.
- Cameras live in runtime.cameras; :class:`StandInCamera`, :class:`PiCamera`, :class:`LatestFrame` and
  :func:`make_camera` stay here for code written against this module.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

from runtime.binding import OBS_MAP_HINT, MappingError, check_map, join_names

FRAME_SHAPE = (96, 96, 3)  # H, W, C RGB uint8: Diffusion Policy's Push-T image setting


class ObservationHistory:
    """Fixed-length history of state vectors (and optionally images), oldest first."""

    def __init__(self, horizon: int, state_dim: int, image_shape: Optional[tuple[int, ...]] = None) -> None:
        if horizon < 1:
            raise ValueError("observation horizon must be >= 1")
        self.horizon = horizon
        self.state_dim = state_dim
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self._states = np.zeros((horizon, state_dim), np.float32)
        self._images = np.zeros((horizon, *self.image_shape), np.uint8) if self.image_shape else None
        self._count = 0

    def reset(self) -> None:
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, self.horizon)

    @property
    def ready(self) -> bool:
        return self._count > 0

    def push(self, state: np.ndarray, image: Optional[np.ndarray] = None) -> None:
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        if s.size != self.state_dim:
            raise ValueError(f"state has {s.size} values, the history holds {self.state_dim}")
        if self._images is not None and image is None:
            raise ValueError("this history needs an image with every state")
        if self._count == 0:  # episode start: fill the whole window with the first observation
            self._states[:] = s
            if self._images is not None:
                self._images[:] = image
        else:
            self._states[:-1] = self._states[1:]
            self._states[-1] = s
            if self._images is not None:
                self._images[:-1] = self._images[1:]
                self._images[-1] = image
        self._count += 1

    def states(self) -> np.ndarray:
        """[To, Ds] float32, a copy (safe to hand to the planning thread)."""
        if not self.ready:
            raise RuntimeError("observation history is empty")
        return self._states.copy()

    def images(self) -> Optional[np.ndarray]:
        """[To, H, W, C] uint8 copy, or None for a state-only history."""
        return None if self._images is None else self._images.copy()


class StateMapper:
    """Maps a State's positions + extras onto the policy's state vector, strictly by name.

    Policy observation `n` reads the robot's joint or extra named `obs_map.get(n, n)`. A name the
    robot does not report is refused (MappingError, both lists shown); there is no positional
    fallback. `progress_name` is the task's success signal (a robot name, after the same mapping),
    read by :meth:`progress`; None when the task declares none.
    """

    def __init__(self, obs_names: Sequence[str], joint_names: Sequence[str], extra_names: Sequence[str],
                 obs_map: Optional[Mapping[str, str]] = None, progress_name: Optional[str] = None) -> None:
        device = [*joint_names, *extra_names]
        obs = list(obs_names)
        obs_map = dict(obs_map or {})
        dup = sorted({n for n in device if device.count(n) > 1})
        if dup:
            raise MappingError(f"the robot reports {dup[0]!r} twice (it reports: {join_names(device)}): names are "
                               f"ambiguous")
        known = set(obs) | ({progress_name} if progress_name else set())
        check_map("obs map", obs_map, known, f"something the policy observes (policy observes: {join_names(obs)})",
                  device, f"reported by the robot (robot reports: {join_names(device)})")
        missing = [n for n in obs if obs_map.get(n, n) not in device]
        if missing:
            raise MappingError(f"the policy observes {join_names(missing)} which the robot does not report "
                               f"(policy observes: {join_names(obs)}; robot reports: {join_names(device)}); "
                               f"{OBS_MAP_HINT}")
        self.state_dim = len(obs)
        self.obs_names = tuple(obs)
        self.sources = tuple(obs_map.get(n, n) for n in obs)  # the robot name each observation reads
        self.index = np.array([device.index(n) for n in self.sources], dtype=np.intp)
        self.n_joints = len(joint_names)
        self.n_extras = len(extra_names)
        self.progress_name = progress_name
        self.progress_index: Optional[int] = None
        if progress_name is not None:
            src = obs_map.get(progress_name, progress_name)
            if src not in device:
                raise MappingError(f"the task's success signal {progress_name!r} is not reported by the robot "
                                   f"(robot reports: {join_names(device)}); {OBS_MAP_HINT}")
            self.progress_index = device.index(src)

    def _check(self, pos: np.ndarray, ext: np.ndarray) -> None:
        # A State with another count than the device declared is refused, never shifted into other fields.
        if pos.size != self.n_joints or ext.size != self.n_extras:
            raise ValueError(f"State has {pos.size} joint positions and {ext.size} extras; the device declared "
                             f"{self.n_joints} and {self.n_extras}")

    def __call__(self, positions: np.ndarray, extras: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, np.float32).reshape(-1)
        ext = np.asarray(extras, np.float32).reshape(-1)
        self._check(pos, ext)
        return np.concatenate([pos, ext])[self.index]

    def progress(self, positions: np.ndarray, extras: np.ndarray) -> Optional[float]:
        """The task's success signal in this State, or None when the task declares none."""
        if self.progress_index is None:
            return None
        pos = np.asarray(positions, np.float32).reshape(-1)
        ext = np.asarray(extras, np.float32).reshape(-1)
        self._check(pos, ext)
        return float(np.concatenate([pos, ext])[self.progress_index])


# ----------------------------------------------------------------------------- cameras
# The camera sources live in runtime.cameras (one module per source, a registry, --camera.FIELD options,
# timestamped Frames, the FrameStream and FrameMonitor the loop uses). The names below are kept for
# code written against this module (imle-record, older tests).
from runtime.cameras.frame import Frame, resize_nearest  # noqa: E402,F401  (resize_nearest: re-export)
from runtime.cameras.stream import FrameStream  # noqa: E402


class FrameSource(Protocol):
    """What a consumer reads a camera through: the newest frame, never blocking (LatestFrame)."""

    def latest(self) -> np.ndarray: ...  # [H, W, 3] RGB uint8


class Camera(Protocol):
    shape: tuple[int, int, int]

    def read(self) -> np.ndarray: ...  # blocks until a frame: [H, W, 3] RGB uint8 (or a Frame)

    def close(self) -> None: ...


class StandInCamera:
    """Synthetic frames with the camera's shape, for tests (never chosen silently: runtime.cameras'
    `synthetic` source is the command-line's explicit choice).

    `frame_fn(index) -> [H, W, 3] uint8` supplies frames; without one, a deterministic moving gradient.
    `fps` > 0 paces read() like a real camera.
    """
    label = "synthetic"
    synthetic = True

    def __init__(self, shape: tuple[int, int, int] = FRAME_SHAPE,
                 frame_fn: Optional[Callable[[int], np.ndarray]] = None, fps: float = 0.0) -> None:
        self.shape = tuple(shape)  # type: ignore[assignment]
        self.frame_fn = frame_fn
        self.fps = fps
        self._index = 0
        self._next = time.monotonic()
        h, w, _ = self.shape
        self._yy, self._xx = np.mgrid[0:h, 0:w]

    def read(self) -> np.ndarray:
        if self.fps > 0:
            now = time.monotonic()
            if now < self._next:
                time.sleep(self._next - now)
            self._next = max(now, self._next) + 1.0 / self.fps
        i = self._index
        self._index += 1
        if self.frame_fn is not None:
            frame = np.asarray(self.frame_fn(i), dtype=np.uint8)
            if frame.shape != self.shape:
                raise ValueError(f"stand-in frame has shape {frame.shape}, expected {self.shape}")
            return frame
        from runtime.cameras.synthetic import gradient_frame

        return gradient_frame(self.shape, self._yy, self._xx, i)

    def close(self) -> None:
        pass


class PiCamera:
    """Raspberry Pi camera (runtime.cameras.picamera2_source); RuntimeError when picamera2 is absent.
    read() gives timestamped Frames (FrameStream / LatestFrame accept them)."""

    def __init__(self, shape: tuple[int, int, int] = FRAME_SHAPE, capture_size: tuple[int, int] = (128, 96)) -> None:
        from runtime.cameras.base import CameraSpecError
        from runtime.cameras.picamera2_source import Picamera2Camera, Picamera2Config
        try:
            self._cam = Picamera2Camera(tuple(shape), Picamera2Config(capture_width=capture_size[0],
                                                                      capture_height=capture_size[1]))
        except CameraSpecError as exc:
            raise RuntimeError(str(exc)) from None
        self.shape = tuple(shape)  # type: ignore[assignment]
        self.label, self.synthetic = self._cam.label, False

    def read(self) -> Frame:
        return self._cam.read()

    def close(self) -> None:
        self._cam.close()


class LatestFrame(FrameStream):
    """FrameStream over a camera whose read() gives pixels or Frames; latest() never blocks. Raises
    RuntimeError (runtime.cameras.CameraTimeout) when no frame comes within `timeout_s`."""

    def __init__(self, camera: Camera, timeout_s: float = 2.0) -> None:
        super().__init__(camera, tuple(camera.shape), timeout_s)


def make_camera(spec: str, shape: tuple[int, int, int] = FRAME_SHAPE) -> Camera:
    """'picamera' -> PiCamera; 'standin' -> StandInCamera (paced at 30 fps). imle-run uses runtime.cameras."""
    if spec in ("picamera", "picamera2"):
        return PiCamera(shape)
    if spec in ("standin", "stand-in", "fake", "synthetic"):
        return StandInCamera(shape, fps=30.0)
    raise ValueError(f"unknown camera {spec!r}: use picamera or standin")
