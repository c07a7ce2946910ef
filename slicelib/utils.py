"""Small helpers used across slicelib: atomic writes, Pearson r, the MNI152 template on a grid.

Each exists once here so that the data cache, the synthetic cohort, checkpoints and the
plots all write files and read the template the same way.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["atomic_write", "save_npy", "pearson_r", "block_mean", "resample", "mni_template"]
__all__ += ["print_tables"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Write a file so that readers never see it half-written.

    ``write(tmp)`` writes to a temporary file in the same folder (created if missing); the file
    is flushed to disk and renamed onto ``path`` with ``os.replace``. If ``write`` raises, the
    temporary file is removed and ``path`` is left as it was.

    Example: ``atomic_write(p, lambda tmp: torch.save(obj, tmp))``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as a ``.npy`` file atomically (see :func:`atomic_write`).

    The name is used as given (``np.save(path)`` would append ".npy" to a name without it).
    """

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, save)


def pearson_r(a, b) -> float | None:
    """Pearson correlation of two 1D arrays of equal length (any units).

    Returns ``None`` (not NaN) when it is undefined: fewer than 2 values or a constant input.
    """
    from scipy.stats import pearsonr

    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"pearson_r needs arrays of equal length, got {a.shape} and {b.shape}.")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(pearsonr(a, b).statistic)


def block_mean(volume: np.ndarray, block: int) -> np.ndarray:
    """``volume`` (X, Y, Z) averaged in ``block``^3 blocks, edges padded by repetition to a
    multiple of ``block``: (ceil(X/b), ceil(Y/b), ceil(Z/b)), same units (``block`` 1: a copy)."""
    a = np.pad(volume, [(0, -n % block) for n in volume.shape], mode="edge")
    X, Y, Z = (n // block for n in a.shape)
    return a.reshape(X, block, Y, block, Z, block).mean(axis=(1, 3, 5))


def resample(img, affine, shape: Sequence[int], interpolation: str = "continuous"):
    """nilearn's ``resample_img`` onto a grid; the one wrapper of it in slicelib.

    Args:
        img: nibabel image (any orientation) or a NIfTI path.
        affine: (4, 4) target voxel -> mm affine; shape: target grid (X, Y, Z) voxels.
        interpolation: "continuous" (3rd-order spline), "linear" or "nearest".
    Returns:
        ``nibabel.Nifti1Image`` of ``shape`` on ``affine``; 0 outside the input's field of view
        (nilearn's warning about interpolating a binary image is silenced: masks are resampled
        linearly on purpose and thresholded by the caller).
    """
    from nilearn import image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return image.resample_img(
            img,
            target_affine=np.asarray(affine, dtype=np.float64),
            target_shape=tuple(int(s) for s in shape),
            interpolation=interpolation,
            fill_value=0.0,
            force_resample=True,
            copy_header=True,
        )


def mni_template(
    shape: Sequence[int] | None = None, affine=None, what: str = "t1", resolution: int = 1
):
    """nilearn's packaged MNI152 template (no download), optionally resampled onto a grid.

    Args:
        shape, affine: target grid ``(X, Y, Z)`` voxels and its 4 x 4 voxel-to-mm affine; both
            ``None`` gives the template at its own ``resolution`` (1 or 2 mm).
        what: ``"t1"`` (T1 template, continuous interpolation), ``"mask"`` (brain mask),
            ``"gm"`` / ``"wm"`` (tissue probability maps); masks and maps are resampled
            linearly (threshold at 0.5 for a boolean mask).
    Returns:
        a ``nibabel.Nifti1Image`` (cached: treat it as read-only).
    """
    key = None
    if shape is not None or affine is not None:
        if shape is None or affine is None:
            raise ValueError("mni_template needs both shape and affine, or neither.")
        key = (tuple(int(s) for s in shape), np.asarray(affine, dtype=float).round(6).tobytes())
    return _mni_template_cached(key, what, int(resolution))


@functools.lru_cache(maxsize=16)
def _mni_template_cached(key, what: str, resolution: int):
    from nilearn import datasets

    loaders = {
        "t1": datasets.load_mni152_template,
        "mask": datasets.load_mni152_brain_mask,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
    }
    if what not in loaders:
        raise ValueError(f"what must be one of {tuple(loaders)}, got {what!r}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = loaders[what](resolution=resolution if key is None else 1)
        if key is None:
            return img
        shape, affine = key[0], np.frombuffer(key[1]).reshape(4, 4)
    # the packaged 1 mm template, resampled once (loading resolution=2 resamples twice)
    return resample(img, affine, shape, "continuous" if what == "t1" else "linear")


# --------------------------------------------------------------------------------------------
# process pool
# --------------------------------------------------------------------------------------------

__all__ += ["die_with_parent", "run_parallel"]

#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _watch_parent(parent_pid: int, interval_s: float) -> None:
    """Poll the parent pid; exit this process at once when the parent has gone."""
    import time

    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os._exit(1)


def die_with_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Make this (worker) process exit when the process ``parent_pid`` dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (via ctypes); everywhere, also a daemon thread
    that polls the parent pid every ``interval_s`` seconds. Exits at once if the parent is
    already gone. Used as the initializer of :func:`run_parallel`'s workers.
    """
    import ctypes
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the thread below still watches
            pass
    if os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid, interval_s), daemon=True, name="watch-parent"
    ).start()


def run_parallel(
    fn: Callable,
    items: Sequence,
    jobs: int = 1,
    on_error: Callable | None = None,
    desc: str = "work",
    unit: str = "item",
    progress: bool = True,
) -> list:
    """``[fn(item) for item in items]`` in spawned worker processes, with a tqdm progress bar.

    The one process-pool driver of slicelib (preprocessing, QC, the synthetic cohort).

    Args:
        fn: a picklable (module-level) function of one item.
        items: the inputs (picklable).
        jobs: worker processes; 1 (or a single item) runs everything in this process.
            Workers are *spawned* (a forked child of a process that already ran torch/OpenMP
            can hang) and die with this process (:func:`die_with_parent`), so a killed
            command leaves no worker behind.
        on_error: ``on_error(item, exc)`` is called here for an item whose call raised (or
            whose worker died), and its return value stands in that item's place. ``None``:
            after every item has run, the first failure (in input order) is raised as a
            RuntimeError naming its index and item.
        desc, unit: progress-bar label; progress: show the bar (tqdm.auto).

    Returns:
        list of results, in the order of ``items`` (not of completion).
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm.auto import tqdm

    items = list(items)
    jobs = max(1, min(int(jobs), len(items) or 1))
    results: list = [None] * len(items)
    errors: dict[int, BaseException] = {}
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    try:
        if jobs == 1:
            for i, item in enumerate(items):
                try:
                    results[i] = fn(item)
                except Exception as e:  # noqa: BLE001 - reported per item below
                    errors[i] = e
                bar.update()
        else:
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(
                jobs, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
                for future in cf.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except Exception as e:  # noqa: BLE001 - incl. BrokenProcessPool
                        errors[i] = e
                    bar.update()
    finally:
        bar.close()
    for i in sorted(errors):
        if on_error is None:
            raise RuntimeError(
                f"item {i} ({items[i]!r:.200}) failed: {type(errors[i]).__name__}: {errors[i]}"
            ) from errors[i]
        results[i] = on_error(items[i], errors[i])
    return results


def print_tables(summary, paired, started: float) -> None:
    """Print a summary table (3 decimals) and its paired differences (4 decimals), both
    pandas DataFrames, wide, then the wall time since ``started`` (``time.perf_counter()``)."""
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.round(3).to_string(index=False))
        print(paired.round(4).to_string(index=False))
    print(f"wall time {time.perf_counter() - started:.0f} s", flush=True)
