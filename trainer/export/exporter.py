"""Checkpoint -> model package: ONNX graphs (fp32, optionally int8), parity report, manifest.

    from trainer.export import export_package
    export_package("runs/pusht-state/last.pt", "exported_models/pusht-state", quantize="int8")
"""
from __future__ import annotations

from pathlib import Path

import torch

from runtime.package import (METHODS, ActionSpec, ControlSpec, Horizons, Manifest, MinMaxStats, Normalization, ObsSpec,
                             Training)
from runtime.task_spec import TaskSpecError
from trainer.export import tasks
from trainer.export.baselines import DEFAULT_SAMPLERS, export_baseline
from trainer.export.common import ExportOptions
from trainer.export.imle import export_generator
from trainer.export.observations import Calibration, from_checkpoint_data, random_calibration
from trainer.export.onnx_export import ExportError
from trainer.export.writer import code_version, finish, staging_dir
from trainer.models.policy_net import NetworkSpec, PolicyNetwork

__all__ = ["ExportOptions", "export_package", "DEFAULT_SAMPLERS"]


def _load_state(checkpoint) -> dict:
    if isinstance(checkpoint, dict):
        return checkpoint
    from trainer.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def _network(state: dict, use_ema: bool) -> PolicyNetwork:
    from trainer.train.checkpoint import network_from_checkpoint

    return network_from_checkpoint(state, use_ema=use_ema)


# ---------------------------------------------------------------------------- entry point
def export_package(checkpoint: str | Path | dict, out_dir: str | Path, quantize: str | None = None,
                   calibration: Calibration | str | None = None, options: ExportOptions | None = None,
                   **overrides) -> Path:
    """Export a checkpoint (path or the dict of ``load_checkpoint``) as a model package in ``out_dir``.

    ``calibration``: None = observations of the checkpoint's dataset (training episodes calibrate,
    held-out ones measure parity); "random" = uniform observations in the data range (for randomly
    initialised networks); or a :class:`Calibration`. ``overrides`` set fields of ExportOptions.
    Raises ExportError (or DatasetError / CheckpointError) with a one-line message.
    """
    # Validation while training exports mid-run and must leave the training's random streams as they
    # were. The export seeds only private generators (never torch.manual_seed, which would also reset
    # CUDA's); building the graph wrappers initialises layers from the CPU stream, which is forked here.
    with torch.random.fork_rng(devices=[]):
        return _export_package(checkpoint, out_dir, quantize, calibration, options, **overrides)


def _export_package(checkpoint, out_dir, quantize, calibration, options, **overrides) -> Path:
    opt = options or ExportOptions()
    for k, v in overrides.items():
        if not hasattr(opt, k):
            raise TypeError(f"export_package() got an unknown option {k!r}")
        setattr(opt, k, v)
    if quantize is not None:
        opt.quantize = quantize
    if opt.quantize not in (None, "int8"):
        raise ExportError(f"unknown quantisation {opt.quantize!r}: the only format is int8")
    out_dir = Path(out_dir)
    state = _load_state(checkpoint)
    method = state.get("method", "rs_imle")
    if method not in METHODS:
        raise ExportError(f"checkpoint method {method!r} is not exportable")
    net = _network(state, opt.use_ema)
    spec: NetworkSpec = net.spec
    config = state.get("config", {})
    data_cfg = config.get("data", {})
    try:
        task = tasks.task_from_checkpoint(state, spec.state_dim, spec.action_dim, spec.obs_horizon,
                                          spec.pred_horizon, spec.image_shape)
    except TaskSpecError as exc:
        raise ExportError(f"checkpoint task: {exc}") from None
    for what, have, want in (("observation.state.use", len(task.state.use), spec.state_dim),
                             ("action.names", len(task.action.names), spec.action_dim),
                             ("horizons.obs", task.horizons.obs, spec.obs_horizon),
                             ("horizons.pred", task.horizons.pred, spec.pred_horizon)):
        if have != want:  # a checkpoint whose task and network disagree is refused, never relabelled
            raise ExportError(f"checkpoint task {task.name}: {what} gives {have} but the network has {want}")
    if calibration is None:
        calibration = from_checkpoint_data(state, opt.data_path, opt.n_calibrate, opt.n_parity, opt.seed)
    elif calibration == "random":
        st = state["state_stats"]
        calibration = random_calibration(spec, st["min"], st["max"], min(opt.n_calibrate, 16),
                                         min(opt.n_parity, 16), opt.seed)
    elif not isinstance(calibration, Calibration):
        raise ExportError("calibration must be None, 'random' or a Calibration")
    low, high = list(state["action_stats"]["min"]), list(state["action_stats"]["max"])

    stage = staging_dir(out_dir)
    try:
        sampler, cond_dim = None, None
        if method == "rs_imle":
            files, parity = export_generator(net, stage, calibration, opt, low, high)
        else:
            sampler = opt.sampler or DEFAULT_SAMPLERS[method]
            files, parity, cond_dim = export_baseline(net, stage, calibration, opt, sampler, low, high)
        manifest = Manifest(
            name=opt.name or out_dir.name, method=method, task=task.name,
            obs=ObsSpec(state_dim=spec.state_dim, state_names=list(task.state.use),
                        image_shape=list(spec.image_shape) if spec.image_shape else None,
                        channel_order=task.images[0].channel_order if spec.image_shape else None,
                        image_dtype="uint8" if spec.image_shape else None),
            action=ActionSpec(dim=spec.action_dim, names=list(task.action.names), low=low, high=high),
            horizons=Horizons(obs=spec.obs_horizon, pred=spec.pred_horizon, action=task.horizons.action),
            control=ControlSpec(period_s=task.period_s,
                                candidates=opt.candidates if method == "rs_imle" else 1,
                                temporal_consistency=opt.temporal_consistency,
                                tc_reset_after=opt.tc_reset_after if method == "rs_imle" else 0),
            latent_shape=[spec.pred_horizon, spec.action_dim],
            normalization=Normalization(state=MinMaxStats(**state["state_stats"]),
                                        action=MinMaxStats(**state["action_stats"])),
            files=files,
            training=Training(dataset=str(data_cfg.get("path", "")), episodes=list(state.get("episodes", [])),
                              steps=int(state.get("step", 0)), config=config, code_version=code_version(),
                              command=str(state.get("command", ""))),
            parity=parity, sampler=sampler, cond_dim=cond_dim, task_spec=task.to_dict())
        # golden vectors (runtime.golden): a few parity observations through every graph, re-run by imle-verify
        from runtime.golden import make_golden
        from runtime.package import Package

        par = calibration.parity
        manifest.golden = make_golden(Package(root=stage, manifest=manifest), par.obs_state, par.obs_image)
        return finish(stage, out_dir, manifest)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
