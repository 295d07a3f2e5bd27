"""A trained generator as a file to hand out: safetensors, half precision, self-describing.

Why safetensors rather than a `torch.save` state dict read with `weights_only=True`: both load
without running code, but a safetensors file cannot hold code at all (a header of JSON and raw
tensor bytes), so a user need not trust the reader's restrictions; it is the format Hugging
Face, ComfyUI and spandrel (the loader Real-ESRGAN-style models go through) read; and its
header carries what builds the network (scale, blocks, channels, output) as plain strings that
any language can read. Half precision halves the file (SRResNet-B16: 3 MB) and changes Y-PSNR
by far less than the scores' second decimal; the release scores the half-precision file itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from pipeline.archs import SRResNet
from preprocess.atomic import atomic_open

FORMAT = "srgan-celeba-generator/1"
SUFFIX = ".safetensors"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


RELEASE_GLOB = f"srgan-celeba-x*{SUFFIX}"


def release_file_name(scale: int) -> str:
    """What a release calls its generator of `scale` (and what models/ ships)."""
    return RELEASE_GLOB.replace("*", str(scale))


class GeneratorFileError(Exception):
    """A weights file that cannot be used; one line naming the file and the problem."""


def architecture(model: SRResNet) -> dict[str, str]:
    """What rebuilds `model`: its constructor's arguments, as safetensors metadata strings."""
    return {
        "scale": str(model.scale),
        "blocks": str(len(model.body)),
        "channels": str(model.head[0].out_channels),
        "output": model.output,
    }


def save_generator(
    model: SRResNet, path: Path, dtype: str = "fp16", metadata: dict[str, str] | None = None
) -> str:
    """Write `model`'s weights (floats in `dtype`) with its architecture and `metadata` in the
    header, atomically; returns the file's sha256."""
    cast = DTYPES[dtype]
    state = {
        name: (t.detach().to(cast) if t.is_floating_point() else t.detach()).cpu().contiguous()
        for name, t in model.state_dict().items()
    }
    header = {"format": FORMAT, "dtype": dtype, **architecture(model), **(metadata or {})}
    data = canonical(save_bytes(state, metadata={k: str(v) for k, v in header.items()}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def canonical(data: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata in the
    order of a hash map seeded per process, so the same weights would get another sha256 each
    time. Same keys and values, so the header keeps its length (and its padding)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    ordered = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if len(ordered) > length:  # never for what safetensors writes; keep its bytes then
        return data
    return data[:8] + ordered.ljust(length) + data[8 + length :]


def read_generator_file(path: Path, which: str | None = None) -> tuple[SRResNet, dict[str, str]]:
    """The generator in `path` (float32, CPU, eval mode) and the file's metadata. A file holds
    one set of weights: asking for the other (`which`, "ema" or "raw") is an error."""
    if not path.is_file():
        raise GeneratorFileError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise GeneratorFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise GeneratorFileError(
            f"{path}: not a srgan-celeba generator (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        model = SRResNet(int(metadata["scale"]), int(metadata["blocks"]),
                         int(metadata["channels"]), metadata["output"])  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise GeneratorFileError(f"{path}: header without a usable network ({exc})") from None
    try:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except RuntimeError as exc:
        raise GeneratorFileError(f"{path}: weights do not fit its header ({exc})") from None
    held = metadata.get("weights", "ema")
    if which is not None and which != held:
        raise GeneratorFileError(f"{path}: holds {held} weights only "
                                 f"(--weights {which} is for checkpoints)")  # fmt: skip
    return model.eval(), metadata


def is_generator_file(path: str | Path) -> bool:
    """A released weights file rather than a checkpoint or a run folder: by its suffix."""
    return str(path).endswith(SUFFIX)


def sha256(path: Path) -> str:
    """What a release's results.json and card list for each file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
