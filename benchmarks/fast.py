"""Speed options for slice models that keep the plain model's outputs (within a tolerance).

Benchmark code, not part of the slicelib package: ``benchmarks/run.py`` measures each option on
and off (``import fast`` with ``benchmarks/`` on ``sys.path``). It uses only SliceModel's public
methods (``check_input``, ``encode_images``, ``project``, ``predict_from_embeddings``).

- :func:`to_channels_last`: store conv weights (and so activations) as NHWC / NDHWC, the layout
  oneDNN (CPU) and cuDNN tensor cores prefer. Same maths; float rounding may differ (~1e-6).
- the folded 1-channel stem: ``SliceModel(stem="fold")`` (in :mod:`slicelib.model`).
- :func:`autocast`: bfloat16 autocast (CUDA; CPU only pays off when the CPU has native bf16,
  see :func:`bf16_native`). Outputs differ at bf16 precision (~1e-2 relative).
- :class:`FastSliceModel` with ``skip_constant=True``: slices whose voxels all have the same
  value (the all-background slices at the edges of the grid) give identical encoder features
  when the encoder's normalisation layers do not use batch statistics (eval mode, or
  ``freeze_batchnorm``), so each distinct constant slice is encoded once and its features are
  broadcast. Exact up to float rounding.
- chunked encoding: ``SliceModel(slice_chunk=..., checkpoint_activations=True)`` (memory).
- :func:`compile_encoder`: ``torch.compile`` of the 2D encoder, in place (state_dict keys kept).

Nothing here changes a model's parameters, so a model trained with or without these options
loads and predicts the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from slicelib.model import AXES, SliceModel, volume_slices

__all__ = [
    "cpu_flags",
    "bf16_native",
    "autocast",
    "to_channels_last",
    "constant_slices",
    "FastSliceModel",
    "compile_encoder",
    "max_abs_diff",
]


def cpu_flags() -> set[str]:
    """The CPU feature flags listed in ``/proc/cpuinfo`` (empty set where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (fast), not by emulation.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere or newer). CPU: the ``avx512_bf16`` or
    ``amx_bf16`` instruction flags. Without them bf16 autocast on the CPU still runs (oneDNN
    converts to fp32 internally) but is usually slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def autocast(device: str | torch.device = "cpu", enabled: bool = True, dtype=torch.bfloat16):
    """Mixed-precision context: ``torch.autocast`` in ``dtype`` (default bfloat16) on ``device``.

    Use around the forward pass (and loss); the backward pass follows the forward's dtypes.
    ``enabled=False`` gives a no-op context, so callers can write one code path.
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4D parameter/buffer as channels_last (NHWC) and 5D as channels_last_3d, in place.

    Works for 2D models (the slice encoders) and 3D CNNs alike (``nn.Module.to(memory_format=)``
    only handles 4D). Convolutions then produce channels-last activations. Returns ``model``.
    """
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
        elif t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def constant_slices(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Find slices whose pixels all have one value, and the distinct such values.

    Args:
        images: ``(N, 1, H, W)`` slices.
    Returns:
        ``(is_constant (N,) bool, values (U,) the distinct constant values, which (K,) long``
        index into ``values`` for each of the K constant slices, in order).
    """
    flat = images.detach().flatten(1)  # (N, H*W)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # (N,), (N,)
    is_constant = lo == hi  # (N,)
    values, which = torch.unique(lo[is_constant], return_inverse=True)  # (U,), (K,)
    return is_constant, values, which


def _uses_batch_stats(module: nn.Module) -> bool:
    """True if a normalisation layer of ``module`` would normalise with batch statistics now."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or not m.track_running_stats
        ):
            return True
    return False


class FastSliceModel(nn.Module):
    """A :class:`~slicelib.model.SliceModel` with speed options; same parameters, same outputs.

    Wraps (does not copy) ``model``: training the wrapper trains ``model``; save
    ``wrapper.model.state_dict()``.

    Args:
        model: the SliceModel.
        skip_constant: encode each distinct all-constant slice (e.g. all-background) once and
            broadcast its features. Applied only while the encoder normalises per sample (eval
            mode, or ``freeze_batchnorm``); in BatchNorm training mode every slice is encoded,
            because batch statistics depend on all slices.
        channels_last: switch on the wrapped model's own ``channels_last`` (see
            :class:`~slicelib.model.SliceModel`): NHWC encoder weights and slices.
        autocast_dtype: e.g. ``torch.bfloat16``: run the encoder under autocast in this dtype
            (features are cast back to float32 before the projection); None = off.

    Input/Output: as :meth:`SliceModel.forward`: ``x`` ``(B, 1, X, Y, Z)`` -> ``(B,)`` or
    ``(B, C)``, or the details dict with ``return_details=True``. ``last_skipped`` holds how
    many slice encodings the last forward saved.
    """

    def __init__(
        self,
        model: SliceModel,
        skip_constant: bool = True,
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.model = model
        self.skip_constant = skip_constant
        self.autocast_dtype = autocast_dtype
        self.last_skipped = 0
        if channels_last:  # the model's own mechanism: NHWC weights here, NHWC slices in
            model.channels_last = True  # SliceModel.encode_images
            to_channels_last(model.encoder)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, F) float32 features, in the model's ``slice_chunk`` chunks."""
        m = self.model

        def run(part: torch.Tensor) -> torch.Tensor:
            dtype = self.autocast_dtype or torch.bfloat16
            with autocast(part.device, enabled=self.autocast_dtype is not None, dtype=dtype):
                return m.encode_images(part).float()  # stem and memory layout as the model's

        chunk = m.slice_chunk or max(images.shape[0], 1)
        feats = []
        for start in range(0, images.shape[0], chunk):
            part = images[start : start + chunk]
            if m.checkpoint_activations and torch.is_grad_enabled():
                feats.append(checkpoint(run, part, use_reentrant=False))
            else:
                feats.append(run(part))
        return torch.cat(feats)  # (N, F)

    def _encode_skipping(self, images: torch.Tensor) -> torch.Tensor:
        """Like :meth:`_encode`, but each distinct constant slice is encoded once."""
        N, _, H, W = images.shape
        if not self.skip_constant or _uses_batch_stats(self.model.encoder):
            self.last_skipped = 0
            return self._encode(images)
        is_constant, values, which = constant_slices(images)  # (N,), (U,), (K,)
        n_const = int(is_constant.sum())
        if n_const == 0:
            self.last_skipped = 0
            return self._encode(images)
        varying = torch.nonzero(~is_constant).squeeze(1)  # (N-K,)
        constant = torch.nonzero(is_constant).squeeze(1)  # (K,)
        reps = values[:, None, None, None].expand(-1, 1, H, W).to(images.dtype)  # (U, 1, H, W)
        f_rep = self._encode(reps)  # (U, F)
        parts = [f_rep[which]]  # (K, F)
        if len(varying):
            parts.insert(0, self._encode(images[varying]))  # (N-K, F)
        order = torch.cat([varying, constant])  # position in the output of each row of parts
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(N, device=images.device)
        self.last_skipped = n_const - len(values)
        return torch.cat(parts)[inverse]  # (N, F)

    def encode_slices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`SliceModel.encode_slices`, with the optimised encoding.

        ``x`` (B, 1, X, Y, Z) -> ``(h (B, S, D), slice_index (S,), slice_axis (S,))``.
        """
        m = self.model
        m.check_input(x)
        B, out, index, axis, skipped = x.shape[0], [], [], [], 0
        for a in m.axes:
            f = self._encode_skipping(volume_slices(x, a))  # (B*S_a, F)
            skipped += self.last_skipped
            out.append(m.project(f.reshape(B, -1, f.shape[1])))  # (B, S_a, D)
            index.append(torch.arange(out[-1].shape[1], device=x.device))  # (S_a,)
            axis.append(torch.full_like(index[-1], AXES[a]))  # (S_a,)
        self.last_skipped = skipped
        return torch.cat(out, dim=1), torch.cat(index), torch.cat(axis)

    def forward(self, x: torch.Tensor, return_details: bool = False):
        """Predict from ``x`` (B, 1, X, Y, Z); same outputs as the wrapped model's forward."""
        h, index, axis = self.encode_slices(x)  # (B, S, D)
        return self.model.predict_from_embeddings(h, index, axis, return_details)


def compile_encoder(model: nn.Module, **kwargs) -> nn.Module:
    """``torch.compile`` the 2D encoder of a SliceModel (or FastSliceModel) in place.

    Uses ``nn.Module.compile`` so parameter names and ``state_dict`` keys stay unchanged.
    ``kwargs`` go to ``torch.compile`` (e.g. ``mode="max-autotune"``, ``dynamic=False``). The
    first call of each new input shape compiles (minutes on a small CPU). Returns ``model``.
    """
    inner = model.model if isinstance(model, FastSliceModel) else model
    inner.encoder.compile(**kwargs)
    return model


def max_abs_diff(a, b) -> float:
    """Largest absolute difference of two tensors (or two dicts of tensors, over shared keys).

    Values are compared in float32 on the CPU; the result is in the tensors' own units.
    """
    if isinstance(a, dict):
        return max(max_abs_diff(a[k], b[k]) for k in a if k in b and torch.is_tensor(a[k]))
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())
