"""``imle-export``: turn a training checkpoint into a model package for the robot's runtime."""
from __future__ import annotations

import argparse
import sys

from runtime.package import SAMPLERS, TC_RESET_AFTER

EPILOG = """\
examples:
  imle-export runs/pusht-state/last.pt --out exported_models/pusht-state --quantize int8
  imle-export runs/pusht-state-diffusion --out exported_models/pusht-ddim10 --sampler ddim --sampler-steps 10

The package holds manifest.json, the fp32 graph(s) and, with --quantize int8, the int8 graph(s).
Calibration uses observations of the checkpoint's training episodes; the parity report (written
into the manifest) uses held-out episodes. Export fails if fp32 ONNX differs from torch by more
than 1e-4 of the action range.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-export", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file (last.pt) or a run directory")
    p.add_argument("--out", required=True, help="package directory to write, e.g. exported_models/NAME")
    p.add_argument("--quantize", choices=["int8"], default=None, help="also write a static int8 graph")
    p.add_argument("--name", default=None, help="package name (default: the --out directory's name)")
    p.add_argument("--candidates", type=int, default=32, help="default candidate count in the manifest (IMLE)")
    p.add_argument("--no-temporal-consistency", action="store_true", help="manifest default: plain random draw")
    p.add_argument("--tc-reset-after", type=int, default=TC_RESET_AFTER, metavar="N",
                   help="manifest default: re-draw the temporal-consistency reference every N plans "
                        "(0: never; default %(default)s, as IMLE Policy's evaluation)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="baselines: sampler (default ddpm for diffusion, euler for flow matching)")
    p.add_argument("--sampler-steps", type=int, default=None, help="baselines: sampler steps (ddpm: 100)")
    p.add_argument("--data", default=None, help="replay buffer for calibration/parity (default: the checkpoint's)")
    p.add_argument("--random-calibration", action="store_true",
                   help="calibrate on random observations in the data range (untrained networks only)")
    p.add_argument("--calibration-obs", type=int, default=32, help="observations for int8 calibration")
    p.add_argument("--parity-obs", type=int, default=32, help="held-out observations for the parity report")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sign", default=None, metavar="KEY",
                   help="sign the package with this Ed25519 private key (imle-keygen); writes manifest.sig")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # heavy imports after --help
    from runtime.package import PackageError, SamplerSpec
    from trainer.data.replay_buffer import DatasetError
    from trainer.export.exporter import ExportOptions, export_package
    from trainer.export.onnx_export import ExportError
    from trainer.export.writer import PackageDirError
    from trainer.train.checkpoint import CheckpointError

    try:
        if args.candidates < 1 or args.calibration_obs < 1 or args.parity_obs < 1:
            raise ValueError("--candidates, --calibration-obs and --parity-obs must be positive")
        if args.tc_reset_after < 0:
            raise ValueError("--tc-reset-after must be >= 0 (0: never)")
        if args.sign:  # a bad key is refused before the (long) export
            from runtime.signing import load_private_key

            load_private_key(args.sign)
        sampler = None
        if args.sampler or args.sampler_steps:
            kind = args.sampler or "ddpm"
            steps = args.sampler_steps or (100 if kind == "ddpm" else 10 if kind == "ddim" else 1)
            if kind == "ddpm" and steps != 100:
                raise ValueError("DDPM runs all 100 train steps; use --sampler ddim for fewer")
            sampler = SamplerSpec(kind, steps, prediction="velocity" if kind == "euler" else "epsilon")
        opt = ExportOptions(quantize=args.quantize, name=args.name, candidates=args.candidates,
                            temporal_consistency=not args.no_temporal_consistency,
                            tc_reset_after=args.tc_reset_after, sampler=sampler,
                            data_path=args.data, n_calibrate=args.calibration_obs, n_parity=args.parity_obs,
                            use_ema=not args.no_ema, progress=not args.no_progress)
        out = export_package(args.checkpoint, args.out, calibration="random" if args.random_calibration else None,
                             options=opt)
        if args.sign:
            from runtime.signing import sign_package

            print(f"signed with key {sign_package(out, args.sign).key_id}")
    except (CheckpointError, DatasetError, ExportError, PackageError, PackageDirError, ValueError) as exc:
        print(f"imle-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imle-export: interrupted; nothing was written", file=sys.stderr)
        return 130
    from runtime.package import load_package

    try:
        m = load_package(out).manifest
    except PackageError as exc:  # e.g. a robot trust policy that refuses the fresh, unsigned package
        print(f"imle-export: error: wrote {out}, but it does not load: {exc}", file=sys.stderr)
        return 2
    p = m.parity
    print(f"package: {out} ({m.method}, {', '.join(f.name for f in m.files)})")
    print(f"parity on {p.observations} observations x {p.candidates} candidates ({p.source}):")
    print(f"  fp32 vs torch: max {p.fp32_vs_torch.max_abs:.3g}, mean {p.fp32_vs_torch.mean_abs:.3g} raw units "
          f"({p.fp32_vs_torch.max_frac_of_range:.2e} of range)")
    if p.fp32_step_vs_torch is not None:
        print(f"  one network step, fp32 vs torch: {p.fp32_step_vs_torch.max_frac_of_range:.2e} of range "
              "(the checked limit)")
    if p.int8_vs_fp32 is not None:
        print(f"  int8 vs fp32:  max {p.int8_vs_fp32.max_abs:.3g}, mean {p.int8_vs_fp32.mean_abs:.3g} raw units "
              f"({p.int8_vs_fp32.mean_frac_of_range:.2%} of range mean, {p.int8_vs_fp32.p99_frac_of_range:.2%} p99, "
              f"{p.int8_vs_fp32.max_frac_of_range:.2%} max)")
    if p.fp32_latent_jitter is not None:
        j = p.fp32_latent_jitter
        print(f"  for scale, fp32 with z moved by {p.latent_jitter_std:g} x N(0, 1): {j.mean_frac_of_range:.2%} mean, "
              f"{j.p99_frac_of_range:.2%} p99, {j.max_frac_of_range:.2%} max (the generator's own steepness)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
