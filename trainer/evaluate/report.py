"""Evaluation output: a terminal table, JSON, CSV and media files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from trainer.evaluate.rollout import EvalReport


def _tc(report: EvalReport) -> str:
    if not report.temporal_consistency:
        return "off"
    n = report.options.tc_reset_after
    return f"on, re-drawn every {n} plans" if n else "on"


def table(report: EvalReport, per_episode: bool = True) -> str:
    lines = []
    if per_episode:
        lines.append(f"{'ep':>4} {'seed':>8} {'max reward':>10} {'max cover':>9} {'success':>7} {'steps':>5} "
                     f"{'plan ms':>8}")
        for r in report.results:
            lines.append(f"{r.episode:>4} {r.seed:>8} {r.max_reward:>10.3f} {r.max_coverage:>9.3f} "
                         f"{'yes' if r.success else 'no':>7} {r.steps:>5} {r.plan_latency_ms:>8.2f}")
        lines.append("")
    s = report.summary
    lines += [
        f"package {report.package}: {report.method}, {report.precision}, {report.candidates} candidate(s), "
        f"temporal consistency {_tc(report)}, {report.options.action_horizon} action(s) per plan",
        f"{'metric':<34} {'value':>7}   95% CI",
        f"{'score (average max coverage/0.95)':<34} {s.score.value:>7.3f}   "
        f"[{s.score.low:.3f}, {s.score.high:.3f}] (bootstrap)",
        f"{'success rate (coverage > 0.95)':<34} {s.success.value:>7.3f}   "
        f"[{s.success.low:.3f}, {s.success.high:.3f}] (Wilson)",
        f"{s.episodes} episodes, seeds {report.options.seed}..{report.options.seed + s.episodes - 1}, "
        f"mean length {s.mean_steps:.0f} steps, plan latency {s.plan_latency_ms:.1f} ms, wall {report.wall_s:.0f} s",
    ]
    return "\n".join(lines)


def write_outputs(report: EvalReport, out_dir: str | Path, save_media: bool = False) -> list[Path]:
    """summary.json (everything), episodes.csv, and with media: rollout_<ep>.gif, final_frames.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.json", out / "episodes.csv"]
    written[0].write_text(json.dumps(report.to_dict(), indent=2))
    with written[1].open("w", newline="") as f:
        rows = [r.to_dict() for r in report.results]
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if save_media:
        from trainer.evaluate.media import write_final_grid, write_gif

        for ep, m in sorted(report.media.items()):
            if m.frames:
                written.append(write_gif(m.frames, out / f"rollout_{ep:03d}.gif"))
        finals = [(report.media[r.episode].final, f"{r.episode} {r.max_reward:.2f}", r.success)
                  for r in report.results if r.episode in report.media and report.media[r.episode].final is not None]
        if finals:
            written.append(write_final_grid(finals, out / "final_frames.png"))
    return written
