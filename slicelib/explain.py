"""Which slices does a trained slice model use? Per-slice importance, three ways.

For a trained :class:`~slicelib.model.SliceModel` and volumes ``x`` of shape ``(B, 1, X, Y, Z)``
every function returns a :class:`SliceImportance` whose ``values`` are ``(B, S)``: one number
per volume and per slice, for every slice of every axis the model uses (S sums over its axes,
in the order of ``model(x, return_details=True)["slice_index"]``).

- :func:`attention_importance` -- the pooling weights (attention softmax; ``1/S`` for mean
  pooling; the share of features a slice wins for max pooling). Free, but only says where the
  pooling looked, not what changed the prediction.
- :func:`occlusion_importance` -- blank one slice at a time and measure how much the output
  changes (years for regression; logit or probability for classification). Computed on slice
  embeddings: every slice is encoded once, then one embedding at a time is replaced by the
  embedding of a blank slice. Because a slice model encodes its slices independently (eval
  mode), this is exactly what re-running the model on the blanked volume would give, at the
  cost of one encoder pass instead of S of them.
- :func:`gradient_importance` -- gradient x (input - baseline), or integrated gradients
  (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017), summed
  over the voxels of each slice. :func:`gradient_map` gives the voxel-level map ``(B, X, Y, Z)``
  to show over the brain.

Helpers turn results into profiles along one axis (:func:`importance_profile`), paint them
back into a volume (:func:`to_volume`), and compare them with a known effect map
(:func:`ground_truth_profile`, :func:`profile_correlation`).

Axis names follow slicelib: "sagittal" = X (axis 0), "coronal" = Y (axis 1), "axial" = Z
(axis 2) of RAS-canonical arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from slicelib.model import AXES

__all__ = [
    "AXIS_NAMES",
    "SliceImportance",
    "attention_importance",
    "occlusion_importance",
    "gradient_importance",
    "gradient_map",
    "all_importances",
    "importance_profile",
    "to_volume",
    "ground_truth_profile",
    "profile_correlation",
    "slice_coordinates",
    "baseline_values",
]

AXIS_NAMES = {v: k for k, v in AXES.items()}  # 0 -> "sagittal", 1 -> "coronal", 2 -> "axial"


# -----------------------------------------------------------------------------
# result type


@dataclass
class SliceImportance:
    """Per-slice importance of a batch of volumes.

    Attributes:
        values: ``(B, S)`` float numpy array, importance of slice s of volume b (units in
            ``units``). S runs over all slices of all axes the model uses.
        slice_index: ``(S,)`` int array, index of each slice along its axis.
        slice_axis: ``(S,)`` int array, axis id of each slice (0 sagittal, 1 coronal, 2 axial).
        axes: the axis names the model uses, e.g. ``("sagittal",)``.
        method: how it was computed, e.g. ``"occlusion"``, ``"attention"``,
            ``"integrated_gradients"``.
        units: what a value measures, e.g. ``"|Δ prediction| (years)"``.
        output: ``(B,)`` the scored model output on the intact volumes (prediction in target
            units, or the logit / probability of the explained class), or None.
        target: ``(B,)`` the class explained for classification models, or None.
    """

    values: np.ndarray
    slice_index: np.ndarray
    slice_axis: np.ndarray
    axes: tuple[str, ...]
    method: str
    units: str = ""
    output: np.ndarray | None = None
    target: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def for_axis(self, axis: str | int | None = None) -> np.ndarray:
        """Values of one axis ordered by slice index: ``(B, S_axis)``.

        ``axis`` may be omitted when the result has a single axis.
        """
        a = _axis_id(axis, self)
        keep = self.slice_axis == a
        order = np.argsort(self.slice_index[keep], kind="stable")
        return self.values[:, keep][:, order]

    def profile(self, axis: str | int | None = None) -> np.ndarray:
        """Mean over the batch of :meth:`for_axis`: ``(S_axis,)``."""
        return self.for_axis(axis).mean(axis=0)

    def __len__(self) -> int:
        return self.values.shape[0]


def _axis_id(axis: str | int | None, result: SliceImportance | None = None) -> int:
    """Axis name or id -> id (0, 1, 2); None means the result's only axis."""
    if axis is None:
        if result is None or len(result.axes) != 1:
            axes = None if result is None else result.axes
            raise ValueError(
                f"This importance covers several axes {axes}: pass axis='sagittal', "
                "'coronal' or 'axial'."
            )
        axis = result.axes[0]
    if isinstance(axis, str):
        if axis not in AXES:
            raise ValueError(f"axis must be one of {tuple(AXES)}, got {axis!r}.")
        a = AXES[axis]
    else:
        a = int(axis)
        if a not in (0, 1, 2):
            raise ValueError(f"axis id must be 0, 1 or 2, got {axis!r}.")
    if result is not None and AXIS_NAMES[a] not in result.axes:
        raise ValueError(
            f"This importance was computed for axes {result.axes}, not {AXIS_NAMES[a]!r}."
        )
    return a


# -----------------------------------------------------------------------------
# shared machinery


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _as_batch(x, model: nn.Module) -> torch.Tensor:
    """Volumes as a float tensor ``(B, 1, X, Y, Z)`` on the model's device.

    Accepts ``(X, Y, Z)`` (one volume), ``(B, X, Y, Z)`` or ``(B, 1, X, Y, Z)``, numpy or torch.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[:, None]
    elif x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(
            f"Expected volumes of shape (X, Y, Z), (B, X, Y, Z) or (B, 1, X, Y, Z); got "
            f"{tuple(x.shape)}."
        )
    return x.detach().to(device=_device(model), dtype=torch.float32)


def baseline_values(x: torch.Tensor, baseline: str | float = "background") -> torch.Tensor:
    """The grey value that stands for "no information", one per volume: ``(B,)``.

    Args:
        x: ``(B, 1, X, Y, Z)`` volumes (z-scored, as the model sees them).
        baseline: ``"background"`` -- the volume's minimum. In slicelib's preprocessed,
            z-scored volumes the minimum is the air/background outside the head (zero intensity
            before z-scoring), so a slice set to it looks like the empty slices at the edge of
            every training volume: the model has seen such slices and they carry no anatomy.
            This is the default. ``"mean"`` -- the volume's mean (0 for a whole-volume z-score):
            a flat mid-grey slice, which the model never saw in training. A float -- that
            constant for every volume (e.g. ``0.0``).

    Returns:
        ``(B,)`` float tensor of baseline values (same units as ``x``).
    """
    flat = x.reshape(x.shape[0], -1)
    if isinstance(baseline, str):
        if baseline == "background":
            return flat.min(dim=1).values
        if baseline == "mean":
            return flat.mean(dim=1)
        raise ValueError(f"baseline must be 'background', 'mean' or a number, got {baseline!r}.")
    return torch.full((x.shape[0],), float(baseline), device=x.device, dtype=x.dtype)


def _score(
    model: nn.Module, out: torch.Tensor, target: torch.Tensor | None, score: str
) -> torch.Tensor:
    """Model output -> one scalar per volume, ``(N,)``.

    regression: the prediction (target units). binary: the logit (or probability) of class
    ``target`` (1 = positive; class 0 has logit ``-z``). multiclass: the logit (or softmax
    probability) of class ``target``.
    """
    task = getattr(model, "task", "regression")
    if task == "regression":
        return out
    if score not in ("logit", "probability"):
        raise ValueError(f"score must be 'logit' or 'probability', got {score!r}.")
    if task == "binary":
        sign = 2.0 * target.to(out.dtype) - 1.0  # class 1 -> +1, class 0 -> -1
        z = sign * out
        return torch.sigmoid(z) if score == "probability" else z
    if score == "probability":
        out = out.softmax(dim=1)
    return out.gather(1, target[:, None].long())[:, 0]


def _targets(model: nn.Module, out: torch.Tensor, target) -> torch.Tensor | None:
    """The class to explain per volume ``(B,)``: given, or the predicted class."""
    task = getattr(model, "task", "regression")
    if task == "regression":
        return None
    B = out.shape[0]
    if target is None:
        pred = (out > 0).long() if task == "binary" else out.argmax(dim=1)
        return pred
    t = torch.as_tensor(target, device=out.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"target must be one class or one per volume ({B}); got {t.numel()}.")
    return t


def _units(model: nn.Module, score: str, what: str) -> str:
    task = getattr(model, "task", "regression")
    if task == "regression":
        return f"{what} prediction (target units, e.g. years)"
    return f"{what} {score} of the explained class"


def _result(model, values, index, axis, method, units, output=None, target=None, **extra):
    return SliceImportance(
        values=values.detach().cpu().numpy().astype(np.float64),
        slice_index=index.detach().cpu().numpy().astype(int),
        slice_axis=axis.detach().cpu().numpy().astype(int),
        axes=tuple(model.axes),
        method=method,
        units=units,
        output=None if output is None else output.detach().cpu().numpy().astype(np.float64),
        target=None if target is None else target.detach().cpu().numpy().astype(int),
        extra=extra,
    )


def _finish(model, h, index, axis) -> torch.Tensor:
    """Slice embeddings (before position) -> model output (``SliceModel.predict_from_embeddings``)."""
    return model.predict_from_embeddings(h, index, axis)


# -----------------------------------------------------------------------------
# attention


def attention_importance(model: nn.Module, x) -> SliceImportance:
    """The model's own pooling weights per slice.

    Args:
        model: a :class:`~slicelib.model.SliceModel`.
        x: ``(B, 1, X, Y, Z)`` volumes (also ``(X, Y, Z)`` or ``(B, X, Y, Z)``), z-scored.

    Returns:
        :class:`SliceImportance` with ``values`` ``(B, S)`` = ``slice_weights`` of
        ``model(x, return_details=True)``: the attention softmax for attention pooling, ``1/S``
        for mean pooling, the share of embedding features a slice wins for max pooling. Each
        row sums to 1. ``output`` is the raw model output (prediction or logit).
    """
    x = _as_batch(x, model)
    with _eval_mode(model), torch.no_grad():
        d = model(x, return_details=True)
    out = d["output"] if d["output"].ndim == 1 else d["output"].max(dim=1).values
    return _result(
        model,
        d["slice_weights"],
        d["slice_index"],
        d["slice_axis"],
        "attention",
        "pooling weight (sums to 1 over slices)",
        output=out,
    )


# -----------------------------------------------------------------------------
# occlusion


def _blank_embeddings(model: nn.Module, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Embedding of a constant slice per volume and axis: ``(B, S, D)``.

    Slice s of volume b gets the projected encoding of an (H, W) slice of its axis filled with
    ``values[b]``. One encoder pass per (volume, axis), not per slice.
    """
    B = x.shape[0]
    out = []
    for a in model.axes:
        a_id = AXES[a]
        H, W = [n for i, n in enumerate(x.shape[2:]) if i != a_id]
        blank = values[:, None, None, None].expand(B, 1, H, W).contiguous()  # (B, 1, H, W)
        e = model.project(model.encode_images(blank))  # (B, D), as encode_slices does

        out.append(e[:, None].expand(B, x.shape[2 + a_id], e.shape[1]))  # (B, S_a, D)
    return torch.cat(out, dim=1)  # (B, S, D)


def occlusion_importance(
    model: nn.Module,
    x,
    baseline: str | float = "background",
    *,
    target=None,
    score: str = "logit",
    signed: bool = False,
    batch_size: int = 64,
) -> SliceImportance:
    """Blank one slice at a time and measure the change of the output.

    Slice s of volume b is replaced by a constant slice (see :func:`baseline_values`:
    ``"background"`` = the volume minimum, i.e. air, by default) and the model is re-run. This
    is done on slice embeddings: all slices are encoded once, the blank slice once per axis,
    and then the embedding of slice s is swapped for the blank one before position embedding,
    pooling and head. For a single-axis model in eval mode this equals re-running the whole
    model on the blanked volume (the encoder sees each slice on its own), at a fraction of the
    cost. For a multi-axis model it blanks the slice as seen by its own plane only (the crossing
    slices of the other planes keep their voxels), i.e. it removes one element of the slice set.

    Args:
        model: a :class:`~slicelib.model.SliceModel`.
        x: ``(B, 1, X, Y, Z)`` volumes (also ``(X, Y, Z)`` or ``(B, X, Y, Z)``), z-scored.
        baseline: ``"background"`` (volume minimum), ``"mean"`` (volume mean) or a number.
        target: classification only: the class to explain, one int or ``(B,)``; default the
            predicted class.
        score: classification only: ``"logit"`` (default) or ``"probability"`` of the target
            class (for binary models class 0 has logit ``-z``).
        signed: return ``f(x) - f(x with slice s blanked)`` (positive: the slice pushed the
            output up) instead of its absolute value.
        batch_size: number of occluded copies pushed through the head at once (memory).

    Returns:
        :class:`SliceImportance`, ``values`` ``(B, S)``: ``|Δ output|`` per slice, in years
        for a brain-age model, in logits (or probability) for a classifier. ``output`` ``(B,)``
        is the score of the intact volume.
    """
    x = _as_batch(x, model)
    B = x.shape[0]
    with _eval_mode(model), torch.no_grad():
        h, index, axis = model.encode_slices(x)  # (B, S, D)
        S = h.shape[1]
        blank = _blank_embeddings(model, x, baseline_values(x, baseline))  # (B, S, D)
        raw = _finish(model, h, index, axis)  # (B,) or (B, C)
        tgt = _targets(model, raw, target)
        base = _score(model, raw, tgt, score)  # (B,)
        values = torch.empty(B, S, device=x.device)
        step = max(1, batch_size // max(1, B))  # slices per chunk
        for start in range(0, S, step):
            js = torch.arange(start, min(S, start + step), device=x.device)
            n = len(js)
            hh = h[:, None].expand(B, n, S, h.shape[2]).clone()  # (B, n, S, D)
            ar = torch.arange(n, device=x.device)
            hh[:, ar, js] = blank[:, js]  # copy j: slice js[j] blanked
            out = _finish(model, hh.reshape(B * n, S, -1), index, axis)
            t = None if tgt is None else tgt.repeat_interleave(n)
            occ = _score(model, out, t, score).reshape(B, n)  # (B, n)
            values[:, js] = base[:, None] - occ
    if not signed:
        values = values.abs()
    what = "signed Δ" if signed else "|Δ|"
    return _result(
        model,
        values,
        index,
        axis,
        "occlusion",
        _units(model, score, what),
        output=base,
        target=tgt,
        baseline=baseline,
    )


# -----------------------------------------------------------------------------
# gradients


def gradient_map(
    model: nn.Module,
    x,
    method: str = "integrated_gradients",
    *,
    steps: int = 16,
    baseline: str | float = "background",
    target=None,
    score: str = "logit",
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-level attribution ``(B, X, Y, Z)``: how much each voxel moved the output.

    Both methods attribute ``f(x) - f(x0)`` relative to a baseline volume ``x0`` that is
    constant (:func:`baseline_values`; ``"background"`` = the volume minimum, by default):

    - ``"grad_x_input"``: ``∂f/∂x · (x - x0)`` at ``x`` (one backward pass). With
      ``baseline=0.0`` this is the classic gradient x input.
    - ``"integrated_gradients"`` (Sundararajan et al. 2017): ``(x - x0) · mean_k ∂f/∂x`` at
      ``x0 + α_k (x - x0)``, ``α_k = (k + 1/2) / steps`` (midpoint rule). Its voxels sum to
      ``f(x) - f(x0)`` up to the integration error ("completeness").

    Args:
        model: a :class:`~slicelib.model.SliceModel`.
        x: ``(B, 1, X, Y, Z)`` volumes (also ``(X, Y, Z)`` or ``(B, X, Y, Z)``), z-scored.
        method: ``"grad_x_input"`` or ``"integrated_gradients"``.
        steps: integration steps for integrated gradients.
        baseline: ``"background"``, ``"mean"`` or a number (see :func:`baseline_values`).
        target, score: classification only, as in :func:`occlusion_importance`.
        batch_size: volumes per forward/backward pass (memory).

    Returns:
        ``(attribution, output)``: ``attribution`` float numpy ``(B, X, Y, Z)`` in output units
        (years or logits) per voxel; ``output`` ``(B,)`` the score of the intact volumes.
    """
    if method not in ("grad_x_input", "integrated_gradients"):
        raise ValueError(
            f"method must be 'grad_x_input' or 'integrated_gradients', got {method!r}."
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    x = _as_batch(x, model)
    B = x.shape[0]
    x0 = baseline_values(x, baseline)[:, None, None, None, None].expand_as(x)  # (B, 1, X, Y, Z)
    with _eval_mode(model):
        with torch.no_grad():
            raw = model(x)
            tgt = _targets(model, raw, target)
            base = _score(model, raw, tgt, score)  # (B,)
        if method == "grad_x_input":
            alphas = torch.ones(1, device=x.device)
        else:
            alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps
        grads = torch.zeros_like(x)  # (B, 1, X, Y, Z)
        # all (volume, alpha) pairs, in chunks of batch_size
        pairs = [(b, k) for b in range(B) for k in range(len(alphas))]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            bs = torch.tensor([b for b, _ in chunk], device=x.device)
            al = alphas[[k for _, k in chunk]][:, None, None, None, None]
            xi = (x0[bs] + al * (x[bs] - x0[bs])).requires_grad_(True)  # (n, 1, X, Y, Z)
            with torch.enable_grad():
                out = model(xi)
                t = None if tgt is None else tgt[bs]
                f = _score(model, out, t, score).sum()
                (g,) = torch.autograd.grad(f, xi)
            grads.index_add_(0, bs, g.detach())
        attr = (x - x0) * grads / len(alphas)  # (B, 1, X, Y, Z)
    return attr[:, 0].cpu().numpy().astype(np.float64), base.cpu().numpy().astype(np.float64)


def _slices_of(vox: np.ndarray, model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel map (B, X, Y, Z) -> per-slice sums (B, S), slice_index (S,), slice_axis (S,)."""
    vals, idx, ax = [], [], []
    for a in model.axes:
        a_id = AXES[a]
        other = tuple(i + 1 for i in range(3) if i != a_id)
        v = vox.sum(axis=other)  # (B, S_a)
        vals.append(v)
        idx.append(np.arange(v.shape[1]))
        ax.append(np.full(v.shape[1], a_id))
    return np.concatenate(vals, 1), np.concatenate(idx), np.concatenate(ax)


def gradient_importance(
    model: nn.Module,
    x,
    method: str = "integrated_gradients",
    *,
    steps: int = 16,
    baseline: str | float = "background",
    target=None,
    score: str = "logit",
    signed: bool = False,
    batch_size: int = 8,
    return_map: bool = False,
) -> SliceImportance:
    """Gradient attribution summed over the voxels of each slice.

    Computes :func:`gradient_map` and sums it per slice of every axis the model uses. For
    integrated gradients a slice's sum is its share of ``f(x) - f(x0)`` (completeness), so
    it is comparable with occlusion (which measures ``f(x) - f(x with the slice blanked)``).

    Args:
        model, x, method, steps, baseline, target, score, batch_size: as :func:`gradient_map`.
        signed: keep the sign of each slice's sum instead of its absolute value.
        return_map: also keep the voxel map in ``result.extra["map"]`` ``(B, X, Y, Z)``.

    Returns:
        :class:`SliceImportance`, ``values`` ``(B, S)`` in output units (years or logits).
    """
    vox, base = gradient_map(
        model,
        x,
        method,
        steps=steps,
        baseline=baseline,
        target=target,
        score=score,
        batch_size=batch_size,
    )
    vals, idx, ax = _slices_of(vox, model)
    if not signed:
        vals = np.abs(vals)
    extra = {"baseline": baseline, "steps": steps if method != "grad_x_input" else 1}
    if return_map:
        extra["map"] = vox
    task = getattr(model, "task", "regression")
    units = (
        "|Σ attribution| (target units, e.g. years)"
        if task == "regression"
        else f"|Σ attribution| ({score} of the explained class)"
    )
    if signed:
        units = units.replace("|Σ attribution|", "Σ attribution")
    return SliceImportance(
        values=vals,
        slice_index=idx,
        slice_axis=ax,
        axes=tuple(model.axes),
        method=method,
        units=units,
        output=base,
        extra=extra,
    )


def all_importances(
    model: nn.Module,
    x,
    *,
    gradient_method: str = "integrated_gradients",
    steps: int = 16,
    baseline: str | float = "background",
    target=None,
    score: str = "logit",
) -> dict[str, SliceImportance]:
    """The three methods at once: ``{"attention": ..., "occlusion": ..., gradient_method: ...}``.

    Args are passed on to :func:`attention_importance`, :func:`occlusion_importance` and
    :func:`gradient_importance`. Every value has ``values`` of shape ``(B, S)``.
    """
    return {
        "attention": attention_importance(model, x),
        "occlusion": occlusion_importance(model, x, baseline, target=target, score=score),
        gradient_method: gradient_importance(
            model,
            x,
            gradient_method,
            steps=steps,
            baseline=baseline,
            target=target,
            score=score,
        ),
    }


# -----------------------------------------------------------------------------
# profiles, volumes, ground truth


def importance_profile(
    result: SliceImportance | np.ndarray,
    axis: str | int | None = None,
    normalise: str | None = None,
) -> np.ndarray:
    """Mean importance over the batch along one axis: ``(S_axis,)``, ordered by slice index.

    Args:
        result: a :class:`SliceImportance`, or an already computed 1-D profile (returned as is,
            normalised if asked).
        axis: ``"sagittal"``, ``"coronal"``, ``"axial"`` (or 0/1/2); optional when the result
            has one axis.
        normalise: ``None``, ``"max"`` (peak = 1) or ``"sum"`` (sums to 1).
    """
    if isinstance(result, SliceImportance):
        p = result.profile(axis)
    else:
        p = np.asarray(result, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"A profile must be 1-D (S,), got shape {p.shape}.")
    return _normalise(p, normalise)


def _normalise(p: np.ndarray, how: str | None) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if how is None:
        return p
    if how == "max":
        m = np.max(np.abs(p))
    elif how == "sum":
        m = np.sum(p)
    else:
        raise ValueError(f"normalise must be None, 'max' or 'sum', got {how!r}.")
    return p / m if m != 0 else p


def to_volume(
    result: SliceImportance | np.ndarray,
    shape: Sequence[int],
    axis: str | int | None = None,
    sample: int | None = None,
) -> np.ndarray:
    """Paint each slice with its importance: a volume ``(X, Y, Z)`` to show over the brain.

    Every voxel of slice i along ``axis`` gets the importance of slice i, so the volume can
    go into :func:`slicelib.plotting.plot_importance_on_brain` (nilearn) with the volume's
    affine.

    Args:
        result: a :class:`SliceImportance`, or a 1-D profile ``(S_axis,)``.
        shape: ``(X, Y, Z)`` of the volume grid (e.g. ``(91, 109, 91)``).
        axis: which axis' slices to paint; optional when the result has one axis. For a
            result with several axes and ``axis=None`` is an error; paint each axis and
            combine yourself (e.g. add them).
        sample: paint volume ``sample`` of the batch instead of the batch mean.

    Returns:
        float numpy array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (X, Y, Z), got {shape}.")
    if isinstance(result, SliceImportance):
        a = _axis_id(axis, result)
        vals = result.for_axis(a)
        p = vals.mean(axis=0) if sample is None else vals[sample]
    else:
        if axis is None:
            raise ValueError("Pass axis= when painting a plain profile.")
        a = _axis_id(axis)
        p = np.asarray(result, dtype=np.float64)
    if p.shape != (shape[a],):
        raise ValueError(
            f"The profile has {p.shape[0]} {AXIS_NAMES[a]} slices but shape {shape} has "
            f"{shape[a]} along that axis."
        )
    view = [1, 1, 1]
    view[a] = shape[a]
    return np.broadcast_to(p.reshape(view), shape).astype(np.float64).copy()


def ground_truth_profile(effect_map, axis: str | int, normalise: str | None = None) -> np.ndarray:
    """How much of a known effect lies in each slice: ``(S_axis,)`` = sum of ``|effect|``.

    Args:
        effect_map: ``(X, Y, Z)`` array (or nibabel image), e.g. the synthetic cohort's
            ``ad_effect`` map (intensity change per voxel).
        axis: ``"sagittal"``, ``"coronal"``, ``"axial"`` or 0/1/2.
        normalise: ``None``, ``"max"`` or ``"sum"`` (see :func:`importance_profile`).
    """
    if hasattr(effect_map, "get_fdata"):
        effect_map = effect_map.get_fdata()
    e = np.abs(np.asarray(effect_map, dtype=np.float64))
    if e.ndim != 3:
        raise ValueError(f"effect_map must be 3-D (X, Y, Z), got shape {e.shape}.")
    a = _axis_id(axis)
    return _normalise(e.sum(axis=tuple(i for i in range(3) if i != a)), normalise)


def profile_correlation(a, b) -> float:
    """Pearson correlation r between two profiles of the same length (nan if one is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Profiles differ in length: {a.shape[0]} vs {b.shape[0]}.")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def slice_coordinates(affine, axis: str | int, n: int) -> np.ndarray:
    """World coordinate (mm) of each slice along ``axis``: ``(n,)``.

    For a RAS-canonical affine (diagonal, as in slicelib) slice i along X lies at
    ``x = affine[0, 0] * i + affine[0, 3]`` mm; the off-diagonal terms are ignored (the
    slice centre is taken at index 0 of the other two axes).
    """
    a = _axis_id(axis)
    A = np.asarray(affine, dtype=np.float64)
    return A[a, a] * np.arange(n) + A[a, 3]
