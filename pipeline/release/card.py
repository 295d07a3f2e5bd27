"""What a release says about itself, rendered from its results.json only: the model card next
to the weights, and the rows of docs/RESULTS.md (between markers, so the doc cannot drift from
the file: tests/release/test_release.py compares them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# FSRNet's 1,000 CelebA test faces at 8x, PSNR-Y / SSIM-Y as published (docs/RESULTS.md cites)
PUBLISHED_X8 = {
    "FSRNet (Chen et al. 2018)": (26.66, 0.7714),
    "SPARNet (Chen et al. 2020)": (27.42, 0.8036),
}
WHERE = {"val": "sample val split", "test": "sample test split", "fsrnet": "FSRNet's test faces"}
BEGIN, END = "<!-- release-results:begin -->", "<!-- release-results:end -->"


def _pair(values: dict[str, float]) -> str:
    return f"{values['psnr_y']:.2f} / {values['ssim_y']:.4f}"


def scores_table(results: dict[str, Any]) -> str:
    """Markdown: scale, where, images, bicubic and SR (PSNR-Y dB / SSIM-Y), the gain; at 8x on
    FSRNet's faces the gap to the published methods in dB."""
    rows = [
        "| model | scored on | images | bicubic | this release | gain (dB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    gaps = []
    for name, model in results["models"].items():
        for where, s in model["scores"].items():
            gain = s["sr"]["psnr_y"] - s["bicubic"]["psnr_y"]
            rows.append(
                f"| {name} | {WHERE.get(where, where)} | {s['images']:,} | "
                f"{_pair(s['bicubic'])} | {_pair(s['sr'])} | {gain:+.2f} |"
            )
            if name == "x8" and where == "fsrnet":
                gaps += [
                    f"{paper} {psnr:.2f} dB: {s['sr']['psnr_y'] - psnr:+.2f} dB"
                    for paper, (psnr, _) in PUBLISHED_X8.items()
                ]
    table = "\n".join(rows)
    if gaps:
        table += (
            "\n\nAt 8x on FSRNet's faces, this release against the published: "
            + "; ".join(gaps)
            + " (both trained on CelebA's 162,770 training faces)."
        )
    return table


def how_made(results: dict[str, Any]) -> str:
    data = results["data"]
    images = ", ".join(f"{n:,} {split}" for split, n in data["images"].items())
    kind = "synthetic demo faces" if data["synthetic"] else "real CelebA faces"
    lines = [
        f"- Made {results['made']} by `{results['command']}` in {results['minutes']} min on "
        f"{results['hardware']}, commit `{results['commit']}`.",
        f"- Size `{results['size']['name']}`: {results['size']['about']}.",
        f"- Data: {kind} ({data['source']}), preset {data['preset']} (HR {data['hr_size']} px, "
        f"{data['codec']} HR, {data['lr_codec']} LR): {images} by the root's "
        "list_eval_partition.txt. "
        "Trained on the train split; val scored during training and by the release; the "
        "test split only by the release, after training.",
    ]
    for name, model in results["models"].items():
        net, train = model["network"], model["train"]
        lines.append(
            f"- {name}: SRResNet-B{net['blocks']} ({net['channels']} channels, {net['output']} "
            f"output, {net['parameters']:,} parameters), MSE, {train['steps']:,} steps of "
            f"{train['batch_size']} ({train['images_seen']:,} images seen) in "
            f"{train['precision']}, {train['seconds'] / 60:.1f} min: `{train['command']}`."
        )
    return "\n".join(lines)


def render_card(results: dict[str, Any]) -> str:
    """models/README.md: what the files are, how they were made, how they score, the terms."""
    files = "\n".join(
        f"| `{m['file']}` | {name} | {m['dtype']}, {m['weights']} weights | {m['bytes']:,} | "
        f"`{m['sha256']}` |"
        for name, m in results["models"].items()
    )
    interim = ""
    if results["size"]["name"] != "gpu":
        interim = (
            f"\n**Interim weights** (`--size {results['size']['name']}`, on "
            f"{results['hardware']}): {results['size']['about']}; not the paper-size "
            "generator. They are replaced when `launch/release.sh` runs with `--size gpu` on "
            "a GPU.\n"
        )
    return f"""# srgan-celeba: released generators

Super-resolution generators for aligned CelebA faces (SRResNet trained with pixel MSE: the
PSNR-oriented model, not the SRGAN one), 4x (32 -> 128 px) and 8x (16 -> 128 px).
{interim}
| file | scale | stored as | bytes | sha256 |
|---|---|---|---:|---|
{files}

Use: `srgan-upscale --input FACE --output OUT` (the 4x; `--model x8` for the 8x), or load the
file with `pipeline.serving.generator_file.read_generator_file`. The input is the whole LR face in
[0, 1]; faces aligned and cropped as CelebA's (`srgan-preprocess`: centre crop 178, HR 128).

## How they were made

{how_made(results)}

## Scores

PSNR-Y (dB) / SSIM-Y (BT.601 luma, a border of `scale` pixels left out, SR rounded to 8
bits), by `python -m pipeline.evaluate` on the weights files as shipped; bicubic is PIL's on the
same LR.

{scores_table(results)}

## Terms

CelebA is available for non-commercial research purposes only (its page's agreement); these
weights are derived from it and carry the same restriction. Faces outside CelebA's alignment,
other crops or other image kinds were not evaluated, except FSRNet's crops where listed above.
"""


def update_block(document: Path, text: str) -> str:
    """`document` with the part between BEGIN and END replaced by `text`."""
    doc = document.read_text()
    if BEGIN not in doc or END not in doc:
        raise ValueError(f"{document}: no {BEGIN} ... {END} block")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{text}\n{END}{tail}"


def results_block(results: dict[str, Any]) -> str:
    """docs/RESULTS.md's part for the shipped release."""
    return f"{how_made(results)}\n\n{scores_table(results)}"
