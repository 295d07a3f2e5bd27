"""Scores as people read them: the command's table and docs/RESULTS.md's markdown rows."""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluation.evaluator import Scores

METRIC_COLUMNS = (("psnr_y", "PSNR-Y", "8.2f"), ("ssim_y", "SSIM-Y", "8.4f"),
                  ("psnr_rgb", "PSNR-RGB", "9.2f"), ("ssim_rgb", "SSIM-RGB", "9.4f"),
                  ("lpips", "LPIPS", "7.4f"), ("fid", "FID", "8.2f"))  # fmt: skip


def _columns(scores: Scores) -> list[tuple[str, str, str]]:
    return [column for column in METRIC_COLUMNS if column[0] in scores.sr]


def report(scores: Scores, checkpoint: Path | str, step: int | None, precision: str) -> str:
    columns = _columns(scores)
    skipped = f", {scores.skipped} skipped" if scores.skipped else ""
    lines = [
        f"{scores.split} split, {scores.images:,} images{skipped}, checkpoint {checkpoint} "
        f"(step {'unknown' if step is None else step}),"
        f" SR in {precision}, {len(scores.images_per_rank)} process(es), {scores.seconds:.1f} s",
        f"{'':8} " + " ".join(f"{title:>{fmt.split('.')[0]}}" for _, title, fmt in columns),
    ]
    for name, values in (("SR", scores.sr), ("bicubic", scores.bicubic)):
        lines.append(f"{name:8} " + " ".join(f"{values[key]:{fmt}}" for key, _, fmt in columns))
    return "\n".join(lines)


def markdown_rows(scores: Scores, label: str) -> str:
    """The table of docs/RESULTS.md: method | PSNR | SSIM (Y, as papers) | LPIPS | FID."""
    columns = [c for c in _columns(scores) if c[0] not in ("psnr_rgb", "ssim_rgb")]
    head = "| method | " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {name} | " + " | ".join(f"{values[key]:.{fmt.split('.')[1]}}"
                                          for key, _, fmt in columns) + " |"
            for name, values in (("bicubic", scores.bicubic), (label, scores.sr))]  # fmt: skip
    return "\n".join([head, rule, *rows])
