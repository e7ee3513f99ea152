"""Function-preserving module rewrites that make the exported graph fast in onnxruntime on a CPU.

The trained network is never changed: export works on a copy, and the parity check compares the
rewritten graph with the original torch network. Measured on this project's 2-core x86 machine,
small U-Net, 32 candidates, 1 thread (see docs/benchmarks.md):

- U-Net Conv1d as one batched MatMul (fp32): onnxruntime's Conv does one im2col + GEMM per batch
  element, re-reading the weights for every candidate; the short sequences (16/8/4 steps) make that
  memory-bound. 54 ms -> 27 ms (paper-size net: 1178 ms -> ~350 ms). Not used for int8, where
  QLinearConv beats a quantised MatMul.
- ConvTranspose1d as MatMul (polyphase): onnxruntime's fp32 ConvTranspose took ~0.7 ms per call,
  and static quantisation leaves it in fp32.
- Mish as Exp arithmetic: onnxruntime's Softplus is scalar code (400 us vs 49 us per [32, 64, 16]).
- GroupNorm's affine and FiLM's scale/bias as BatchNormalization: a per-channel Mul + Add that
  broadcasts [1, C, 1] over [N, C, L] runs at ~58 us, BatchNormalization at ~15 us. FiLM this way
  needs the one observation condition ([1, C]) the package contract guarantees.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.policy_net import PolicyNetwork
from trainer.models.unet1d import CondResBlock1d


class Conv1dAsMatMul(nn.Module):
    """Conv1d as [B, L_out, k*C] @ W [k*C, O]: the k shifted views of the padded sequence, gathered."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        o, c, k = conv.weight.shape
        self.k, self.stride, self.pad = k, conv.stride[0], conv.padding[0]
        # W'[i*C + c, o] = W[o, c, i]: column blocks in the order of the gathered views
        self.weight = nn.Parameter(conv.weight.detach().permute(2, 1, 0).reshape(k * c, o).clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # [B, L, C]
        if self.pad:
            xt = F.pad(xt, (0, 0, self.pad, self.pad))
        length = int(xt.shape[1])  # static in the graph: horizons are fixed, only B is dynamic
        l_out = (length - self.k) // self.stride + 1
        if self.k == 1 and self.stride == 1:
            cols = xt
        else:  # one Gather: [B, L_out, k, C] -> [B, L_out, k*C]
            idx = torch.arange(l_out)[:, None] * self.stride + torch.arange(self.k)[None, :]
            cols = xt[:, idx, :].flatten(2)
        y = cols @ self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)


class ConvTranspose1dAsMatMul(nn.Module):
    """ConvTranspose1d (stride s, output length s*L) as one MatMul over windows of the input.

    Output t = s*m + r receives x[m + d] through kernel tap i = r + p - s*d. Gathering the window
    x[m + dmin .. m + dmax] for every m gives [B, L, D*C] @ W [D*C, s*O] -> [B, L, s, O] -> [B, s*L, O].
    """

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__()
        c, o, k = conv.weight.shape
        s, p = conv.stride[0], conv.padding[0]
        taps = [(r, (r + p - i) // s, i) for r in range(s) for i in range(k) if (r + p - i) % s == 0]
        self.dmin = min(d for _, d, _ in taps)
        self.ndelta = max(d for _, d, _ in taps) - self.dmin + 1
        self.stride, self.out_ch = s, o
        w = torch.zeros(self.ndelta, c, s, o)
        for r, d, i in taps:
            w[d - self.dmin, :, r, :] = conv.weight.detach()[:, :, i]
        self.weight = nn.Parameter(w.reshape(self.ndelta * c, s * o))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    @staticmethod
    def supports(conv: nn.ConvTranspose1d) -> bool:
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        return (conv.groups == 1 and conv.dilation[0] == 1 and conv.output_padding[0] == 0
                and k - 2 * p == s)  # output length exactly s * L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # [B, L, C]
        length = int(xt.shape[1])
        lo, hi = max(0, -self.dmin), max(0, self.dmin + self.ndelta - 1)
        xt = F.pad(xt, (0, 0, lo, hi))
        idx = torch.arange(length)[:, None] + (self.dmin + lo) + torch.arange(self.ndelta)[None, :]
        y = xt[:, idx, :].flatten(2) @ self.weight  # [B, L, s*O]
        y = y.reshape(-1, length * self.stride, self.out_ch)  # [B, L, s, O] -> [B, s*L, O]
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)


class ExpMish(nn.Module):
    """Mish as x * n / (n + 2) with n = e^x (e^x + 2), since tanh(softplus(x)) = n / (n + 2).
    x is capped at 20 in the exponential (n / (n + 2) is exactly 1 in float32 there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(torch.clamp(x, max=20.0))
        n = e * (e + 2.0)
        return x * (n / (n + 2.0))


_AFFINE_EPS = 1e-12


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel weight * x + bias as an inference BatchNormalization (mean 0, variance 1).

    eps is 1e-12, not 0: torch 2.11 rejects eps 0 (the export failed there), and 1 + 1e-12 rounds
    to exactly 1 in float32, so the graph still computes weight * x + bias."""
    zeros = torch.zeros_like(weight)
    return F.batch_norm(x, zeros, torch.ones_like(weight), weight, bias, False, 0.0, _AFFINE_EPS)


class GroupNormBNAffine(nn.Module):
    """GroupNorm with its affine applied as BatchNormalization."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.groups, self.eps = gn.num_groups, gn.eps
        self.weight = nn.Parameter(gn.weight.detach().clone())
        self.bias = nn.Parameter(gn.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _affine(F.group_norm(x, self.groups, None, None, self.eps), self.weight, self.bias)


class CondResBlockBNFiLM(nn.Module):
    """CondResBlock1d with FiLM as BatchNormalization: requires a single condition row ([1, C])."""

    def __init__(self, block: CondResBlock1d):
        super().__init__()
        self.blocks, self.cond_encoder, self.residual = block.blocks, block.cond_encoder, block.residual
        self.c_out, self.predict_scale = block.c_out, block.predict_scale

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        film = self.cond_encoder(cond).reshape(-1)  # one condition for every candidate
        if self.predict_scale:
            out = _affine(out, film[: self.c_out], film[self.c_out:])
        else:
            out = _affine(out, torch.ones_like(film), film)
        out = self.blocks[1](out)
        return out + self.residual(x)


def _replace(net: nn.Module, fn) -> None:
    # reversed pre-order: every module's descendants are rewritten before the module itself is
    # wrapped, so a wrapper (CondResBlockBNFiLM) takes over already rewritten children
    for prefix, module in reversed(list(net.named_modules())):
        for name, child in list(module.named_children()):
            new = fn(child, f"{prefix}.{name}" if prefix else name)
            if new is not None:
                setattr(module, name, new)


def decoder_tail(net: PolicyNetwork) -> Callable[[str], bool]:
    """Module names of the U-Net's last decoder level and output block (most sensitive to int8)."""
    last_up = f"unet.up.{len(net.unet.up) - 1}."
    return lambda name: name.startswith(last_up) or name.startswith("unet.final.")


def for_onnxruntime(net: PolicyNetwork, convs_as_matmul: bool | Callable[[str], bool] = True) -> PolicyNetwork:
    """A copy of ``net`` rewritten for onnxruntime (same function). ``convs_as_matmul``: which U-Net
    Conv1d become MatMuls (True: all, for fp32); the others stay Conv, the form static int8
    quantisation turns into QLinearConv (a predicate on module names picks, e.g. :func:`decoder_tail`)."""
    net = copy.deepcopy(net).eval()
    as_matmul = convs_as_matmul if callable(convs_as_matmul) else (lambda name: bool(convs_as_matmul))

    def rewrite(m: nn.Module, name: str):
        if type(m) is CondResBlock1d:
            return CondResBlockBNFiLM(m)
        if type(m) is nn.Mish:
            return ExpMish()
        if type(m) is nn.GroupNorm and m.affine:
            return GroupNormBNAffine(m)
        if type(m) is nn.ConvTranspose1d and ConvTranspose1dAsMatMul.supports(m):
            return ConvTranspose1dAsMatMul(m)
        if (as_matmul(name) and type(m) is nn.Conv1d and m.groups == 1 and m.dilation[0] == 1
                and m.padding_mode == "zeros" and isinstance(m.padding[0], int)):
            return Conv1dAsMatMul(m)
        return None

    _replace(net, rewrite)
    return net.eval()
