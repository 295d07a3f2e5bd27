"""The SRGAN training logic: networks, losses, optimizers and one step of each phase.

Kept apart from the architectures (pipeline/archs) and from the loop (pipeline/training/trainer.py).
Step order under DDP: the generator's adversarial term runs the discriminator's raw module
(no DDP hooks, its parameters frozen), and the discriminator's own update runs one DDP forward
and its backward for the real images, then one for the fakes, so no BatchNorm buffer is used
by two forwards before a backward.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils._pytree import tree_map

from pipeline.archs import Discriminator, SRResNet, VGGFeatures
from pipeline.archs.sync_bn import sync_batchnorm
from pipeline.runtime.precision import autocast
from pipeline.training.compilation import compile_errors, compiled, failure_reason
from pipeline.training.config import TrainConfig
from pipeline.training.ema import WeightAverage
from pipeline.training.losses import ContentLoss, adversarial_loss, pixel_loss


def _host_copy(value: Any) -> Any:
    return (
        value.detach().to("cpu", copy=True)
        if isinstance(value, torch.Tensor)
        else copy.deepcopy(value)
    )


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, DDP) else module


class SRGANModel:
    """G (and, for the GAN phase, D and the VGG content loss) with their optimizers."""

    def __init__(
        self, cfg: TrainConfig, hr_size: int, device: torch.device, world_size: int
    ) -> None:
        self.cfg, self.device = cfg, device
        self.gan = cfg.phase == "gan"
        g: nn.Module = SRResNet(cfg.scale, cfg.model.blocks, cfg.model.channels, cfg.model.output)
        d: nn.Module | None = Discriminator(hr_size, cfg.model.d_channels) if self.gan else None
        if world_size > 1:  # batch statistics over the global batch, as one process would
            g = sync_batchnorm(g, device)
            d = sync_batchnorm(d, device) if d is not None else None
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.g_raw = g.to(device, memory_format=memory_format)
        self.d_raw = d.to(device, memory_format=memory_format) if d is not None else None
        ddp_args: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
        self.g = DDP(self.g_raw, **ddp_args) if world_size > 1 else self.g_raw
        self.d = None
        if self.d_raw is not None:
            self.d = DDP(self.d_raw, **ddp_args) if world_size > 1 else self.d_raw
        # after DDP's wrap, which gave every rank rank 0's weights: so is every rank's average
        self.ema = WeightAverage(self.g_raw, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.d_frozen = self.d_raw  # D in G's adversarial term: no DDP hooks, weights frozen
        self.content = None
        if self.gan:
            vgg = VGGFeatures(cfg.vgg_weights, cfg.loss.vgg_layer)
            self.content = ContentLoss(vgg, cfg.loss.vgg_rescale).to(device)
        # "pending" until the first compiled step has run (compiling it), then "compiled", or
        # "failed" (the step fell back to eager); "off" when not asked for
        self.compile_state = "off"
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None
        self._eager = (self.g, self.d, self.d_frozen, self.content)
        if cfg.compile in ("on", True):  # the trainer resolves "auto" first
            self.g, self.d, self.d_frozen, self.content = (
                None if m is None else compiled(m, cfg.compile_backend, cfg.compile_mode)
                for m in self._eager
            )
            self.compile_state = "pending"
        # Fused Adam on CUDA: one kernel per step, and it takes fp16's GradScaler inf check
        # on the device (GradScaler.step otherwise reads it back to the host every step).
        adam: dict[str, Any] = {"lr": cfg.optim.lr, "betas": (cfg.optim.beta1, cfg.optim.beta2)}
        adam["fused"] = device.type == "cuda"
        self.opt_g = torch.optim.Adam(self.g_raw.parameters(), **adam)
        self.opt_d = (
            torch.optim.Adam(self.d_raw.parameters(), **adam) if self.d_raw is not None else None
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.memory_format = memory_format

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.cfg.precision)

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr

    def _input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached losses (local to this rank)."""
        lr, hr = self._input(lr), self._input(hr)
        if self.compile_state == "pending":
            return self._first_compiled_step(lr, hr)
        return self._step(lr, hr)

    def _step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._gan_step(lr, hr) if self.gan else self._pretrain_step(lr, hr)

    def _first_compiled_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step that compiles (timed). If compiling fails, the weights and optimizer states
        go back to what they were before it (G may already have taken its update) and the step
        runs again eager, as every later one will. Under DDP that holds for failures while
        compiling a forward; Inductor compiles a backward when it first runs, and a failure
        there leaves DDP expecting gradients it never got, which ends the run with DDP's own
        error (`--compile off` then)."""
        before = tree_map(_host_copy, self.state_dict())  # host memory: no GPU peak
        started = time.perf_counter()
        try:
            losses = self._step(lr, hr)
        except compile_errors() as exc:
            self.compile_state, self.compile_error = "failed", failure_reason(exc)
            self.g, self.d, self.d_frozen, self.content = self._eager
            # a fresh scaler: fp16's knows which optimizers stepped since its last update
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.scaler.is_enabled())
            self.load_state_dict(before)
            return self._step(lr, hr)
        self.compile_state, self.compile_seconds = "compiled", time.perf_counter() - started
        return losses

    def _pretrain_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            sr = self.g(lr)
        kind = self.cfg.loss.pixel
        loss = pixel_loss(sr, hr, kind)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self._average()
        return {f"loss/pixel_{kind}": loss.detach()}

    def _gan_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.d is not None and self.d_raw is not None and self.opt_d is not None
        assert self.content is not None
        # Generator: content + adversarial; D's weights are frozen, its raw module is used.
        self.d_raw.requires_grad_(False)
        with self.autocast():
            sr = self.g(lr)
            content = self.content(sr, hr)
            adversarial = adversarial_loss(self.d_frozen(sr), real=True)
        g_loss = content.float() + self.cfg.loss.adversarial_weight * adversarial
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_loss).backward()
        self.scaler.step(self.opt_g)
        self._average()
        # Discriminator: each DDP forward followed by its own backward. The real pass's
        # gradients stay local (no_sync) and the fake pass's backward all-reduces their sum:
        # one all-reduce of D's gradients per step (556 MB in fp32 at HR 256), not two.
        self.d_raw.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._local_gradients(self.d):
            with self.autocast():
                real_logits = self.d(hr)
            d_real = adversarial_loss(real_logits, real=True)
            self.scaler.scale(d_real).backward()
        with self.autocast():
            fake_logits = self.d(sr.detach())
        d_fake = adversarial_loss(fake_logits, real=False)
        self.scaler.scale(d_fake).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        return {
            "loss/content": content.detach().float(),
            "loss/adversarial": adversarial.detach(),
            "loss/generator": g_loss.detach(),
            "loss/discriminator": (d_real + d_fake).detach(),
            "d/real_prob": torch.sigmoid(real_logits.detach().float()).mean(),
            "d/fake_prob": torch.sigmoid(fake_logits.detach().float()).mean(),
        }

    def _average(self) -> None:
        if self.ema is not None:
            self.ema.update(self.g_raw)

    def eval_generator(self) -> nn.Module:
        """What is evaluated and exported: the weight average unless the raw G is asked for."""
        if self.ema is not None and self.cfg.eval_weights == "ema":
            return self.ema.net
        return unwrap(self.g)

    @staticmethod
    def _local_gradients(net: nn.Module) -> contextlib.AbstractContextManager:
        """DDP's no_sync for `net` (also under torch.compile); nothing to skip on 1 process."""
        ddp = getattr(net, "_orig_mod", net)
        return ddp.no_sync() if isinstance(ddp, DDP) else contextlib.nullcontext()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "generator": unwrap(self.g).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.d is not None and self.opt_d is not None:
            state["discriminator"] = unwrap(self.d).state_dict()
            state["opt_d"] = self.opt_d.state_dict()
        if self.ema is not None:
            state["generator_ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.g).load_state_dict(state["generator"])
        if self.ema is not None:
            if "generator_ema" in state:
                self.ema.load_state_dict(state["generator_ema"])
            else:  # a checkpoint written without an average: start one from these weights
                self.ema = WeightAverage(self.g_raw, self.ema.decay)
        self.scaler.load_state_dict(state["scaler"])
        optimizers = [(self.opt_g, state["opt_g"])]
        if self.d is not None and self.opt_d is not None:
            unwrap(self.d).load_state_dict(state["discriminator"])
            optimizers.append((self.opt_d, state["opt_d"]))
        for optimizer, saved in optimizers:
            fused = [group["fused"] for group in optimizer.param_groups]
            optimizer.load_state_dict(saved)
            # a checkpoint from another device (or an older version) carries its own `fused`
            for group, keep in zip(optimizer.param_groups, fused, strict=True):
                group["fused"] = keep
                for param in group["params"] if keep else []:
                    state = optimizer.state.get(param, {})
                    if "step" in state:  # fused Adam keeps its step count beside the weights
                        state["step"] = state["step"].to(param.device, torch.float32)

    def load_generator(self, weights: dict[str, torch.Tensor]) -> None:
        """Start from a pre-trained SRResNet (the GAN phase's --init); the average starts there."""
        unwrap(self.g).load_state_dict(weights)
        if self.ema is not None:
            self.ema = WeightAverage(self.g_raw, self.ema.decay)
