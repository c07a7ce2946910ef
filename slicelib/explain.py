"""Which slices does a trained slice model use, and what did it learn per slice?

For a :class:`~slicelib.model.SliceModel` and z-scored volumes ``x`` ``(B, 1, X, Y, Z)`` (also
``(X, Y, Z)`` or ``(B, X, Y, Z)``) each method returns a :class:`SliceImportance` with ``values``
``(B, S)``: one number per volume and slice, over every slice of every axis the model uses.

- :func:`attention_importance`: the pooling weights: free, but only where the pooling looked.
- :func:`occlusion_importance`: blank one slice at a time, measure the change of the output.
- :func:`gradient_importance`: gradient x (input - baseline) or integrated gradients summed
  per slice (Sundararajan et al., ICML 2017); :func:`gradient_map` is the voxel map.

Helpers make profiles along one axis (:func:`importance_profile`), paint them into a volume
(:func:`to_volume`), bring reference maps onto the model grid (:func:`resample_to_grid`) and
compare profiles with known effects (:func:`ground_truth_profile`, :func:`profile_correlation`,
:func:`profile_table`). :func:`per_slice_parameters` collects the model's per-slice codes.
Axes: "sagittal" = X (0), "coronal" = Y (1), "axial" = Z (2) of RAS arrays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from slicelib.model import AXES
from slicelib.utils import pearson_r, resample

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
    "profile_table",
    "resample_to_grid",
    "slice_coordinates",
    "baseline_values",
    "per_slice_parameters",
]

AXIS_NAMES = {v: k for k, v in AXES.items()}  # 0 -> "sagittal", 1 -> "coronal", 2 -> "axial"


# -----------------------------------------------------------------------------
# result type


@dataclass
class SliceImportance:
    """Per-slice importance of a batch of volumes.

    ``values`` ``(B, S)`` in ``units`` (e.g. ``"|Δ| (prediction, target units, e.g. years)"``);
    ``slice_index``, ``slice_axis`` ``(S,)``: each slice's index along its axis and axis id;
    ``axes``: the model's axis names; ``method``: e.g. ``"occlusion"``; ``output`` ``(B,)``: the
    scored output of the intact volumes (or None); ``target`` ``(B,)``: the explained class
    (classification, else None); ``extra``: method settings (``baseline``, ``steps``, ``map``).
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
        """Values of one axis (optional for one-axis results) by slice index: ``(B, S_axis)``."""
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
            raise ValueError(
                f"This covers several axes {getattr(result, 'axes', None)}: pass "
                "axis='sagittal', 'coronal' or 'axial'."
            )
        axis = result.axes[0]
    a = AXES.get(axis, axis) if isinstance(axis, str) else axis
    if a not in (0, 1, 2):
        raise ValueError(f"axis must be one of {tuple(AXES)} or 0, 1, 2; got {axis!r}.")
    if result is not None and AXIS_NAMES[a] not in result.axes:
        raise ValueError(
            f"This importance was computed for axes {result.axes}, not {AXIS_NAMES[a]!r}."
        )
    return int(a)


# -----------------------------------------------------------------------------
# shared machinery


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag afterwards."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


def _as_batch(x, model: nn.Module) -> torch.Tensor:
    """``(X, Y, Z)``, ``(B, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` -> float ``(B, 1, X, Y, Z)``."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[:, None]
    elif x.ndim != 5 or x.shape[1] != 1:
        shape = tuple(x.shape)
        raise ValueError(
            f"Expected volumes (X, Y, Z), (B, X, Y, Z) or (B, 1, X, Y, Z); got {shape}"
        )
    return x.detach().to(device=_device(model), dtype=torch.float32)


def baseline_values(x: torch.Tensor, baseline: str | float = "background") -> torch.Tensor:
    """The grey value that stands for "no information", one per volume: ``(B,)``.

    ``x``: ``(B, 1, X, Y, Z)`` z-scored volumes. ``baseline``: ``"background"`` (default) = the
    volume's minimum, the air around the head, so a blanked slice looks like the empty edge
    slices seen in training; ``"mean"`` = the volume's mean (a flat grey slice it never saw); a
    float = that constant for every volume. Returns ``(B,)`` in the units of ``x``.
    """
    flat = x.reshape(x.shape[0], -1)
    if isinstance(baseline, str):
        if baseline == "background":
            return flat.min(dim=1).values
        if baseline == "mean":
            return flat.mean(dim=1)
        raise ValueError(f"baseline must be 'background', 'mean' or a number, got {baseline!r}.")
    return torch.full((x.shape[0],), float(baseline), device=x.device, dtype=x.dtype)


def _score(model: nn.Module, out: torch.Tensor, target: torch.Tensor | None, score: str):
    """Model output -> one scalar per volume ``(N,)``: the prediction (regression), or the logit
    / probability of class ``target`` (binary: class 0 has logit ``-z``; multiclass: softmax)."""
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
    if target is None:  # the predicted class
        return (out > 0).long() if task == "binary" else out.argmax(dim=1)
    t = torch.as_tensor(target, device=out.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"target must be one class or one per volume ({B}); got {t.numel()}.")
    return t


def _units(model: nn.Module, score: str, what: str) -> str:
    """What a value measures, e.g. "|Δ| (prediction, target units, e.g. years)"."""
    if getattr(model, "task", "regression") == "regression":
        return f"{what} (prediction, target units, e.g. years)"
    return f"{what} ({score} of the explained class)"


def _numpy(v, dtype=np.float64) -> np.ndarray | None:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return None if v is None else np.asarray(v).astype(dtype)


def _result(model, values, index, axis, method, units, output=None, target=None, **extra):
    """A :class:`SliceImportance` from torch tensors or numpy arrays."""
    index, axis, target = (_numpy(v, int) for v in (index, axis, target))
    values, output, axes = _numpy(values), _numpy(output), tuple(model.axes)
    return SliceImportance(values, index, axis, axes, method, units, output, target, extra)


# -----------------------------------------------------------------------------
# the three methods: attention, occlusion, gradients


def attention_importance(model: nn.Module, x) -> SliceImportance:
    """The model's own pooling weights per slice.

    Returns a :class:`SliceImportance`, ``values`` ``(B, S)`` = ``slice_weights`` of
    ``model(x, return_details=True)``: the attention softmax for attention pooling, ``1/S`` for
    mean pooling, the share of embedding features a slice wins for max pooling (rows sum to 1);
    ``output`` is the raw model output (prediction or logit).
    """
    x = _as_batch(x, model)
    with _eval_mode(model), torch.no_grad():
        d = model(x, return_details=True)
    out = d["output"] if d["output"].ndim == 1 else d["output"].max(dim=1).values
    units = "pooling weight (sums to 1 over slices)"
    index, axis = d["slice_index"], d["slice_axis"]
    return _result(model, d["slice_weights"], index, axis, "attention", units, output=out)


def _blank_embeddings(model: nn.Module, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Embedding of a constant slice ``values[b]`` for every slice s of volume b: ``(B, S, D)``
    (one encoder pass per volume and axis)."""
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

    Slice s is replaced by a constant slice (:func:`baseline_values`) on slice embeddings: all
    slices are encoded once, the blank slice once per axis, and slice s's embedding is swapped
    for the blank one before position, pooling and head: for a single-axis model in eval mode
    exactly re-running the model on the blanked volume (a multi-axis model: the slice is blanked
    in its own plane only).

    Args:
        model, x: a :class:`~slicelib.model.SliceModel` and volumes (see the module docstring).
        baseline: ``"background"`` (volume minimum), ``"mean"`` (volume mean) or a number.
        target: classification: the class to explain, one int or ``(B,)`` (default: predicted).
        score: classification: ``"logit"`` or ``"probability"`` of the target class (binary:
            class 0 has logit ``-z``).
        signed: ``f(x) - f(x with slice s blanked)`` instead of its absolute value.
        batch_size: occluded copies pushed through the head at once (memory).
    Returns :class:`SliceImportance`, ``values`` ``(B, S)``: ``|Δ output|`` per slice (years,
    logits or probability); ``output`` ``(B,)``: the score of the intact volume.
    """
    x = _as_batch(x, model)
    B = x.shape[0]
    with _eval_mode(model), torch.no_grad():
        h, index, axis = model.encode_slices(x)  # (B, S, D)
        S = h.shape[1]
        blank = _blank_embeddings(model, x, baseline_values(x, baseline))  # (B, S, D)
        raw = model.predict_from_embeddings(h, index, axis)  # (B,) or (B, C)
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
            out = model.predict_from_embeddings(hh.reshape(B * n, S, -1), index, axis)
            t = None if tgt is None else tgt.repeat_interleave(n)
            occ = _score(model, out, t, score).reshape(B, n)  # (B, n)
            values[:, js] = base[:, None] - occ
    if not signed:
        values = values.abs()
    units = _units(model, score, "signed Δ" if signed else "|Δ|")
    return _result(
        model, values, index, axis, "occlusion", units, output=base, target=tgt, baseline=baseline
    )


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

    ``method``: ``"grad_x_input"`` or ``"integrated_gradients"`` (``steps`` integration steps);
    ``baseline``: see :func:`baseline_values`; ``target``, ``score``: classification only, as in
    :func:`occlusion_importance`; ``batch_size``: volumes per forward/backward pass (memory).
    Returns ``(attribution, output)``: float ``(B, X, Y, Z)`` in output units (years or logits)
    per voxel, and ``(B,)`` the score of the intact volumes.
    """
    if method not in ("grad_x_input", "integrated_gradients"):
        raise ValueError(f"method must be 'grad_x_input' or 'integrated_gradients', not {method!r}")
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
        alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # midpoints
        if method == "grad_x_input":
            alphas = torch.ones(1, device=x.device)
        grads = torch.zeros_like(x)  # (B, 1, X, Y, Z)
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
    ids = [AXES[a] for a in model.axes]
    sums = [vox.sum(axis=tuple(i + 1 for i in range(3) if i != a)) for a in ids]  # (B, S_a)
    index = [np.arange(v.shape[1]) for v in sums]
    axis = [np.full(v.shape[1], a) for a, v in zip(ids, sums)]
    return np.concatenate(sums, 1), np.concatenate(index), np.concatenate(axis)


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

    ``model, x, method, steps, baseline, target, score, batch_size``: as :func:`gradient_map`;
    ``signed``: keep each slice sum's sign; ``return_map``: keep the voxel map in
    ``result.extra["map"]`` ``(B, X, Y, Z)``. Returns a :class:`SliceImportance`, ``values``
    ``(B, S)`` in output units (years or logits).
    """
    kw = dict(steps=steps, baseline=baseline, target=target, score=score, batch_size=batch_size)
    vox, base = gradient_map(model, x, method, **kw)  # (B, X, Y, Z), (B,)
    vals, idx, ax = _slices_of(vox, model)
    if not signed:
        vals = np.abs(vals)
    extra = {"baseline": baseline, "steps": steps if method != "grad_x_input" else 1}
    if return_map:
        extra["map"] = vox
    units = _units(model, score, "Σ attribution" if signed else "|Σ attribution|")
    return _result(model, vals, idx, ax, method, units, output=base, **extra)


def all_importances(
    model: nn.Module, x, *, gradient_method: str = "integrated_gradients", steps: int = 16, **kw
) -> dict[str, SliceImportance]:
    """The three methods at once: ``{"attention", "occlusion", gradient_method}`` -> results with
    ``values`` ``(B, S)``; ``kw`` (baseline, target, score) go to occlusion and gradients."""
    return {
        "attention": attention_importance(model, x),
        "occlusion": occlusion_importance(model, x, **kw),
        gradient_method: gradient_importance(model, x, gradient_method, steps=steps, **kw),
    }


# -----------------------------------------------------------------------------
# profiles, volumes, ground truth


def importance_profile(result, axis: str | int | None = None, normalise=None) -> np.ndarray:
    """Mean importance over the batch along one axis: ``(S_axis,)``, ordered by slice index.

    ``result``: a :class:`SliceImportance`, or a 1-D profile (returned as is, normalised if
    asked); ``axis``: ``"sagittal"``, ``"coronal"``, ``"axial"`` or 0/1/2 (optional for a
    one-axis result); ``normalise``: ``None``, ``"max"`` (peak = 1) or ``"sum"`` (sums to 1).
    """
    if isinstance(result, SliceImportance):
        p = result.profile(axis)
    else:
        p = np.asarray(result, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"A profile must be 1-D (S,), got shape {p.shape}.")
    return _normalise(p, normalise)


def _normalise(p: np.ndarray, how: str | None) -> np.ndarray:
    if how not in (None, "max", "sum"):
        raise ValueError(f"normalise must be None, 'max' or 'sum', got {how!r}.")
    p = np.asarray(p, dtype=np.float64)
    m = 1.0 if how is None else np.max(np.abs(p)) if how == "max" else np.sum(p)
    return p / m if m != 0 else p


def to_volume(result, shape: Sequence[int], axis: str | int | None = None, sample=None):
    """Paint each slice with its importance: a volume ``(X, Y, Z)`` to show over the brain.

    Every voxel of slice i along ``axis`` gets the importance of slice i (for
    :func:`slicelib.plotting.plot_importance_on_brain`). ``result``: a :class:`SliceImportance`
    or a 1-D profile ``(S_axis,)``; ``shape``: the grid ``(X, Y, Z)``, e.g. ``(91, 109, 91)``;
    ``axis``: optional when the result has one axis; ``sample``: paint volume ``sample`` of the
    batch instead of the batch mean. Returns a float numpy array of ``shape``.
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
    view = [shape[a] if i == a else 1 for i in range(3)]
    return np.broadcast_to(p.reshape(view), shape).astype(np.float64).copy()


def ground_truth_profile(effect_map, axis: str | int, normalise: str | None = None) -> np.ndarray:
    """How much of a known effect lies in each slice: ``(S_axis,)`` = sum of ``|effect|``.

    ``effect_map``: ``(X, Y, Z)`` array or nibabel image, e.g. the synthetic cohort's
    ``ad_effect`` (intensity change per voxel); ``axis``: a name or 0/1/2; ``normalise``:
    ``None``, ``"max"`` or ``"sum"`` (see :func:`importance_profile`).
    """
    e = np.abs(np.asarray(getattr(effect_map, "get_fdata", lambda: effect_map)(), np.float64))
    if e.ndim != 3:
        raise ValueError(f"effect_map must be 3-D (X, Y, Z), got shape {e.shape}.")
    a = _axis_id(axis)
    return _normalise(e.sum(axis=tuple(i for i in range(3) if i != a)), normalise)


def profile_correlation(a, b) -> float:
    """Pearson r between two profiles of the same length (nan if one is constant)."""
    r = pearson_r(a, b)
    return float("nan") if r is None else r


def slice_coordinates(affine, axis: str | int, n: int) -> np.ndarray:
    """World coordinate (mm) of each slice along ``axis``: ``(n,)``.

    For slicelib's diagonal RAS affines slice i along X lies at ``affine[0, 0] * i +
    affine[0, 3]`` mm (off-diagonal terms are ignored).
    """
    a = _axis_id(axis)
    A = np.asarray(affine, dtype=np.float64)
    return A[a, a] * np.arange(n) + A[a, 3]


def resample_to_grid(img, affine, shape: Sequence[int], interpolation: str = "continuous"):
    """A map in MNI space (NIfTI path or nibabel image) on the model grid: float ``(X, Y, Z)``.

    ``affine`` ``(4, 4)`` (voxel -> mm), ``shape``: the grid, e.g. ``PreprocessConfig.affine``
    and ``.volume_shape``; ``interpolation``: nilearn's ``"continuous"`` (maps), ``"linear"``
    (masks, then threshold) or ``"nearest"``. 0 outside the map's field of view.
    """
    import nibabel as nib

    img = nib.load(img) if isinstance(img, str | os.PathLike) else img
    out = resample(img, affine, shape, interpolation)
    return np.asarray(out.get_fdata(), dtype=np.float64)


def profile_table(results, references, axis=None, *, band=None, coords=None) -> pd.DataFrame:
    """Compare importance profiles with reference profiles along one axis: one row per method.

    ``results``: ``{method: SliceImportance or 1-D profile (S,)}`` (``axis``: theirs, optional
    for one-axis results); ``references``: ``{name: profile (S,)}``, e.g. a ground-truth effect
    (:func:`ground_truth_profile`) and controls such as the brain extent per slice; ``band``:
    optional bool ``(S,)``, the slices of interest; ``coords``: optional ``(S,)`` mm per slice.
    Returns a DataFrame indexed by ``method``: ``r with <name>`` (Pearson r, NaN if constant),
    ``peak slice``, ``peak (mm)`` (with ``coords``), ``share in band`` (the profile's share of
    its total in ``band``) and then a row ``flat profile (reference)`` with the band's share of
    slices: what a profile without preference gets.
    """
    rows = []
    for name, res in results.items():
        p = importance_profile(res, axis if isinstance(res, SliceImportance) else None)
        row = {"method": name}
        for ref, q in references.items():
            if len(q) != len(p):
                raise ValueError(f"{name!r} has {len(p)} slices but {ref!r} has {len(q)}.")
            row[f"r with {ref}"] = profile_correlation(p, q)
        row["peak slice"] = int(np.argmax(p))
        if coords is not None:
            row["peak (mm)"] = float(np.asarray(coords)[row["peak slice"]])
        if band is not None:
            row["share in band"] = float(np.abs(p)[band].sum() / max(np.abs(p).sum(), 1e-300))
        rows.append(row)
    if band is not None:
        rows.append({"method": "flat profile (reference)", "share in band": np.mean(band)})
    return pd.DataFrame(rows).set_index("method")


# -----------------------------------------------------------------------------
# what the model learned per slice


def per_slice_parameters(model: nn.Module, axis: str | None = None) -> dict[str, np.ndarray]:
    """Every per-slice code of a SliceModel along ``axis`` (default: its first): ``{name: array
    (S_axis, D)}``, rows by slice index. Slice positions show in more than the position code:
    - ``"position"``: the vector added to slice s (the learned table; for ``"sinusoidal"``
      the fixed code at indices ``0..S-1``). Absent for ``position="none"``.
    - ``"norm.weight"``, ``"norm.bias"``: with ``norm="set"`` (the paper's LayerNorm over the
      whole (S, D) set) the LayerNorm has its own affine row per slice: itself a learned
      per-slice code. Absent for ``norm="slice"`` (one row shared by all slices) or ``"none"``.
    """
    axis = axis or model.axes[0]
    if axis not in model.axes:
        raise ValueError(f"The model uses axes {model.axes}, not {axis!r}.")
    n = model.n_slices[axis]
    out = {}
    with torch.no_grad():
        if model.position == "learned":
            out["position"] = model.pos[axis].table
        elif model.position == "sinusoidal":
            out["position"] = model.pos(torch.arange(n, device=_device(model)))
        norm = model.norm
        if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 2:
            start = sum(model.n_slices[a] for a in model.axes[: model.axes.index(axis)])
            for name in ("weight", "bias"):  # (S_total, D) rows in the order of model.axes
                if getattr(norm, name) is not None:
                    out[f"norm.{name}"] = getattr(norm, name)[start : start + n]
    return {k: _numpy(v) for k, v in out.items()}
