"""Diffusion Policy's crop augmentation as batched tensor ops on the frames' own device.

Training: every frame of every sample gets its own random crop offset (as robomimic's CropRandomizer
used by Diffusion Policy, which crops the [B*To] frames independently). Evaluation and export: the
centre crop, a static slice, so the exported encoder graph crops exactly as evaluation does and the
runtime feeds the full camera frame.

The random crop is index arithmetic (one gather, no loop per sample and no host sync): rows
``top + arange(size)`` and columns ``left + arange(size)`` index the frames directly, on CPU or CUDA.
Offsets come from trainer.objectives.noise while training (keyed by seed and step, so one process
and N processes draw the same crops), or from an explicit generator.
"""
from __future__ import annotations

import torch


class CropError(ValueError):
    """A crop that does not fit the frames (one line naming both sizes)."""


def check_crop(size: int, height: int, width: int) -> None:
    """CropError unless 0 (no crop) or 1 <= ``size`` <= the frame's height and width."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise CropError(f"image crop must be an integer >= 0 (0: no crop), got {size!r}")
    if size > height or size > width:
        raise CropError(f"image crop {size} is larger than the frames ({height}x{width}); use a crop <= "
                        f"{min(height, width)} or 0 for none")


def crop_offsets(shape: tuple[int, ...], height: int, width: int, size: int, device: torch.device,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (top, left) offsets of ``shape`` (int64; [batch, ...] while training) with
    0 <= top <= height - size and 0 <= left <= width - size."""
    check_crop(size, height, width)
    shape = tuple(shape)
    if generator is not None:
        top = torch.randint(0, height - size + 1, shape, device=device, generator=generator)
        left = torch.randint(0, width - size + 1, shape, device=device, generator=generator)
        return top, left
    from trainer.objectives import noise as draw  # lazy: trainer.objectives imports the models

    return draw.randint(height - size + 1, shape, device), draw.randint(width - size + 1, shape, device)


def crop_at(frames: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Crop frames [N, C, H, W] at per-frame offsets [N] -> [N, C, size, size] (any dtype, one gather)."""
    n = frames.shape[0]
    ar = torch.arange(size, device=frames.device)
    rows = (top.to(frames.device)[:, None] + ar)[:, :, None]  # [N, s, 1]
    cols = (left.to(frames.device)[:, None] + ar)[:, None, :]  # [N, 1, s]
    batch = torch.arange(n, device=frames.device)[:, None, None]
    # channels last so the three index tensors are adjacent: the result is [N, s, s, C]
    return frames.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def centre_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of frames [..., H, W] (a static slice: exports as ONNX Slice)."""
    h, w = int(frames.shape[-2]), int(frames.shape[-1])
    check_crop(size, h, w)
    if size == 0:
        return frames
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size]


def random_crop(frames: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frames [B, ..., C, H, W], each cropped at its own random offset -> [B, ..., C, size, size]."""
    lead, (c, h, w) = tuple(frames.shape[:-3]), tuple(int(n) for n in frames.shape[-3:])
    if size == 0:
        check_crop(size, h, w)
        return frames
    top, left = crop_offsets(lead, h, w, size, frames.device, generator)
    out = crop_at(frames.reshape(-1, c, h, w), top.reshape(-1), left.reshape(-1), size)
    return out.reshape(*lead, c, size, size)
