"""Intensity standardisation of a volume on the model grid, computed when it is read.

The preprocessing (:mod:`slicelib.data`) stores one z-scored volume per scan (mean 0, SD 1
within the brain, the background constant below it); everything here is computed from that
array when a volume is read (:func:`read_time_normalise`), so switching costs no new
preprocessing. A linear z-score keeps what a scanner or a storage did to the contrast (a
gamma, another sequence, FreeSurfer's white-matter scaling); each option trades some of the
image's information for invariance to one such change:

- ``normalise="quantile"`` (:func:`standardise_histogram`): each brain voxel becomes the
  standard-normal quantile of its rank. Every monotonic change of the intensities (a gamma, a
  rescale, uint8 storage) gives the same array; the histogram's shape is given up.
- ``normalise="template"`` (:func:`within_template`): only the brain inside the MNI152 brain
  mask, z-scored there, so the edge of the scan's own brain mask (which moves with the scan's
  resolution and contrast) no longer reaches the model.
- ``normalise="tissue"`` (:func:`standardise_tissues`): the template's region, its
  intensities mapped piecewise-linearly so that the CSF, grey- and white-matter means of a
  3-class Gaussian mixture land at fixed values. A smooth monotonic change barely moves the
  tissues and their extent (atrophy) is kept; the contrast between them, itself an age cue,
  is given up.
- ``smooth_mm`` (:func:`smooth`): an isotropic Gaussian of that FWHM after the above. A model
  reading fine detail on a 4 mm grid can move by years when the same head is registered a
  millimetre differently or stored with thicker slices; smoothing trades that detail for
  steadiness (docs/results.md measures both).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri
from scipy.stats import rankdata

from slicelib.errors import DataError
from slicelib.utils import mni_template

__all__ = ["NORMALISATIONS", "READ_TIME_NORMALISATIONS", "TISSUE_LEVELS", "FWHM_PER_SIGMA"]
__all__ += ["standardise_histogram", "within_template", "tissue_means", "standardise_tissues"]
__all__ += ["smooth", "read_time_normalise", "moments"]

#: The intensity normalisations (``PreprocessConfig.normalise``): "foreground" and "whole" are
#: z-scores computed by the preprocessing; the others are computed here when a volume is read.
NORMALISATIONS = ("foreground", "whole", "quantile", "template", "tissue")
#: The normalisations computed from the stored foreground z-score when a volume is read.
READ_TIME_NORMALISATIONS = ("quantile", "template", "tissue")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # a Gaussian's FWHM / its SD (about 2.355)


def standardise_histogram(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """Quantile (rank) intensity standardisation of a z-scored volume.

    The brain is the voxels above the volume's minimum (the background of a registered or
    skull-stripped brain is one constant below all tissue; for an unstripped head every voxel
    above the darkest counts). Each brain voxel becomes the standard-normal quantile of its
    rank, ``Phi^-1((rank - 0.5) / n)`` (ties share their mean rank); the background becomes the
    lowest of these values. Any strictly increasing change of the intensities (gamma, rescale,
    offset) leaves the result unchanged; the histogram's shape is given up.

    Args:
        volume: array (X, Y, Z), any float dtype (z-scored, unitless).
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z): brain mean ~0 and SD ~1 (unitless), background constant.

    Raises:
        DataError when fewer than 100 voxels lie above the minimum (a constant image).
    """
    v = np.asarray(volume, dtype=np.float32)
    brain = v > v.min()
    n = int(brain.sum())
    if n < 100:
        raise DataError(
            f"{name}: only {n} voxel(s) above the background for the quantile standardisation; "
            "the volume is (nearly) constant. Check the scan, or use normalise='foreground'."
        )
    quantiles = ndtri((rankdata(v[brain], method="average") - 0.5) / n).astype(np.float32)
    out = np.full(v.shape, quantiles.min(), dtype=np.float32)
    out[brain] = quantiles
    return out


def within_template(volume: np.ndarray, affine: np.ndarray, name: str = "volume") -> np.ndarray:
    """The foreground z-score of a brain restricted to the MNI152 brain mask of its grid.

    The brain is the voxels above the volume's minimum (as :func:`standardise_histogram`);
    the region kept is that brain inside the template's brain mask on the grid
    (:func:`slicelib.utils.mni_template`, ``what="mask"``). The region is z-scored again and
    every other voxel gets the value an intensity of 0 maps to, exactly as if the pipeline had
    used (the scan's brain mask AND the template's) as the brain mask. The rim of the scan's own
    mask outside the template's (about 8 % of an IXI brain at 4 mm) changes with the scan's
    brain extraction (a thick-slice scan's deepbet mask is about 4 % larger); it no longer
    reaches the model. Meant for registered brains (method "register", or a brain already in
    MNI space); the volume's own edge is kept where it lies inside the template's mask.

    Args:
        volume: array (X, Y, Z), z-scored (unitless), background constant at its minimum.
        affine: (4, 4) voxel -> MNI mm affine of the grid.
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z): the kept region z-scored (mean 0, SD 1), the rest constant.

    Raises:
        DataError when fewer than 100 brain voxels lie inside the template's mask (the volume
        is not a registered brain, or registration failed).
    """
    v = np.asarray(volume, dtype=np.float32)
    template = mni_template(v.shape, affine, what="mask").get_fdata() > 0.5
    background = float(v.min())
    region = (v > background) & template
    n = int(region.sum())
    if n < 100:
        raise DataError(
            f"{name}: only {n} brain voxel(s) inside the MNI152 brain mask of the grid for "
            "normalise='template'; the volume is not a registered brain (or its registration "
            "failed). Check the scan's QC, or use normalise='foreground'."
        )
    mean, std = moments(v, region, name)
    out = np.full(v.shape, (background - mean) / std, dtype=np.float32)
    out[region] = (v[region] - mean) / std
    return out


#: Where ``normalise="tissue"`` puts the CSF, grey- and white-matter means (unitless): about
#: where they lie in IXI brains z-scored inside the template's mask on the 4 mm grid.
TISSUE_LEVELS = (-1.35, -0.05, 1.0)


def tissue_means(values: np.ndarray, name: str = "volume") -> np.ndarray:
    """The three means of a 3-class Gaussian mixture of brain intensities (CSF, grey and white
    matter in a T1 scan), by scikit-learn's ``GaussianMixture`` (started from the 10th, 50th
    and 90th percentiles; deterministic).

    Args:
        values: 1D array (N,) of brain voxel intensities (any unit; z-scored here).
        name: what the values come from (the scan's file), named in errors.

    Returns:
        float64 array (3,): the means, ascending (the values' unit).

    Raises:
        DataError when the mixture does not converge, two means lie within 0.05 SD of each
        other or a class holds under 2 % of the voxels: fewer than three intensity levels (a
        label image, not a T1 brain).
    """
    from sklearn.exceptions import ConvergenceWarning  # imported here: sklearn is slow to import
    from sklearn.mixture import GaussianMixture

    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)  # (N, 1)
    start = np.percentile(x, [10, 50, 90]).reshape(3, 1)
    with warnings.catch_warnings():  # judged below: a degenerate image warns in k-means
        warnings.simplefilter("ignore", ConvergenceWarning)
        mix = GaussianMixture(3, means_init=start, random_state=0, max_iter=200).fit(x)
    means = np.sort(mix.means_.ravel())
    if (
        not mix.converged_
        or np.min(np.diff(means)) < 0.05 * float(x.std())
        or mix.weights_.min() < 0.02
    ):
        raise DataError(
            f"{name}: the brain's intensities do not show three tissues (mixture means "
            f"{np.round(means, 3).tolist()}, weights {np.round(mix.weights_, 3).tolist()}) for "
            "normalise='tissue'. Check the scan (a T1 "
            "brain is expected) and its QC, or use normalise='template'."
        )
    return means


def standardise_tissues(volume: np.ndarray, affine: np.ndarray, name: str = "volume") -> np.ndarray:
    """Tissue-landmark intensity standardisation of a registered, z-scored brain.

    The region is :func:`within_template`'s (the brain inside the MNI152 brain mask, z-scored
    there). Its CSF, grey- and white-matter means (:func:`tissue_means`) are mapped to
    :data:`TISSUE_LEVELS` by a piecewise-linear, increasing map, continued beyond the outer
    means with the slope of the nearest segment (the background, below every tissue, follows
    the lower one). A smooth monotonic intensity change (a gamma of 0.7-1.4, another scanner's
    grey/white contrast) becomes nearly the identity after it; the histogram's shape between
    the landmarks and the tissues' extent are kept (unlike ``normalise="quantile"``), the
    tissue contrast is not.

    Args:
        volume: array (X, Y, Z), z-scored (unitless), background constant at its minimum.
        affine: (4, 4) voxel -> MNI mm affine of the grid.
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z) (unitless): the tissue means at :data:`TISSUE_LEVELS`.

    Raises:
        DataError as :func:`within_template` and :func:`tissue_means`.
    """
    v = within_template(volume, affine, name)
    background = float(v.min())
    xp = tissue_means(v[v > background], name)
    fp = np.asarray(TISSUE_LEVELS, dtype=np.float64)
    low, high = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[2] - fp[1]) / (xp[2] - xp[1])
    out = np.interp(v, xp, fp)
    out = np.where(v < xp[0], fp[0] + (v - xp[0]) * low, out)
    out = np.where(v > xp[2], fp[2] + (v - xp[2]) * high, out)
    return out.astype(np.float32)


def smooth(volume: np.ndarray, fwhm_mm: float, voxel_size: float) -> np.ndarray:
    """An isotropic Gaussian smoothing of a volume on its grid (``scipy.ndimage``; the edges
    continued by their nearest voxel).

    Args:
        volume: array (X, Y, Z) (unitless).
        fwhm_mm: the Gaussian's full width at half maximum, in mm (0: the volume unchanged).
        voxel_size: the grid's isotropic voxel size, in mm.

    Returns:
        float32 array (X, Y, Z).
    """
    if not fwhm_mm:
        return volume
    sigma = float(fwhm_mm) / FWHM_PER_SIGMA / float(voxel_size)  # in voxels
    return gaussian_filter(np.asarray(volume, np.float32), sigma, mode="nearest")


def read_time_normalise(volume: np.ndarray, config, name: str = "volume") -> np.ndarray:
    """What a :class:`slicelib.data.PreprocessConfig` (``config``) computes from a stored
    foreground z-score when a volume is read: its ``normalise`` ("quantile":
    :func:`standardise_histogram`, "template": :func:`within_template`, "tissue":
    :func:`standardise_tissues`; the volume as stored for the others), then its ``smooth_mm``
    (:func:`smooth`). (X, Y, Z) in, (X, Y, Z) out (float32 when changed)."""
    if config.normalise == "quantile":
        volume = standardise_histogram(volume, name)
    elif config.normalise == "template":
        volume = within_template(volume, config.affine, name)
    elif config.normalise == "tissue":
        volume = standardise_tissues(volume, config.affine, name)
    return smooth(volume, config.smooth_mm, config.voxel_size)


def moments(data: np.ndarray, mask: np.ndarray | None, name: str) -> tuple[float, float]:
    vals = data[mask] if mask is not None else data
    mean = float(vals.mean(dtype=np.float64)) if vals.size else 0.0
    std = float(vals.std(dtype=np.float64)) if vals.size else 0.0
    if not std > 1e-6 * max(1.0, abs(mean)):
        raise DataError(
            f"{name}: intensities are constant inside the brain/foreground on the grid (std "
            f"{std:g}): a binary mask or an empty image? A T1 scan is needed, inside the grid."
        )
    return mean, std
