"""The preprocessed-volume cache: one float16 array and one QC record per scan and config.

``<cache_dir>/<key>.npy`` holds the preprocessed volume (float16 (X, Y, Z), memory-mappable)
and ``<key>.qc.json`` its quality control (status ok / flagged, reasons, the
:mod:`slicelib.qc` measures, the method applied), so QC is computed once, as part of
preprocessing. The key hashes the file's content, the whole :class:`slicelib.data.
PreprocessConfig` (method, pipeline options, grid, ...) and :data:`slicelib.data.CACHE_VERSION`.
Files are written atomically and only after preprocessing succeeded: nothing is cached for a
scan that fails.

:func:`preprocess_many` fills the cache for many scans in parallel (spawned processes, a
progress bar) and returns one QC row per scan; :func:`check_qc` is the input contract that
``train`` and ``predict`` apply to those rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slicelib.data import CACHE_VERSION, DataError, PreprocessConfig, load_nifti, preprocess
from slicelib.qc import QC_MODES
from slicelib.utils import atomic_write, save_npy

__all__ = [
    "default_cache_dir",
    "file_hash",
    "cache_key",
    "load_preprocessed",
    "preprocess_many",
    "check_qc",
    "QC_COLUMNS",
]

#: The QC measures stored per scan (see :mod:`slicelib.qc`).
QC_COLUMNS = ("ncc", "wm_gm", "brain_ml", "inside", "scale", "n_unique")


def default_cache_dir() -> Path:
    """Cache folder: ``$SLICELIB_CACHE`` if set, else ``~/.cache/slicelib``."""
    env = os.environ.get("SLICELIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "slicelib"


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | os.PathLike) -> str:
    """Hex BLAKE2b digest (32 hex chars) of the file's bytes (memoised on path, size and mtime)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"{p}: file not found ({e}); check the path.") from e
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def cache_key(path: str | os.PathLike, config: PreprocessConfig) -> str:
    """Cache key (hex str): hash of the file content, ``config.to_dict()`` and CACHE_VERSION."""
    blob = json.dumps(
        {"file": file_hash(path), "config": config.to_dict(), "version": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _qc_record(path, info: dict) -> dict[str, Any]:
    return {
        "path": str(path),
        "status": info["status"],
        "reasons": "; ".join(info["reasons"]),
        "method": info["method"],
        **{k: info["qc"].get(k) for k in QC_COLUMNS},
    }


def _read(target: Path, shape, mmap: bool):
    """The cached array and its QC record, or None (missing, unreadable, other shape)."""
    try:
        arr = np.load(target, mmap_mode="r" if mmap else None)
        record = json.loads(target.with_suffix(".qc.json").read_text())
    except Exception:  # missing or corrupt: recompute and overwrite
        return None
    if arr.shape != tuple(shape) or arr.dtype != np.float16:
        return None
    return arr, record


def _fill(path, config: PreprocessConfig, cache_dir, mmap: bool = True, threads=None):
    """(array float16 (X, Y, Z), QC record) of one scan, preprocessing it on a cache miss."""
    if not Path(path).is_file():
        load_nifti(path)  # raises the DataError naming the file
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cdir / f"{cache_key(path, config)}.npy"
    hit = _read(target, config.volume_shape, mmap)
    if hit is not None:
        return hit
    vol, _, info = preprocess(path, config, return_info=True, threads=threads)
    if not np.all(np.abs(vol) < 65000):
        raise DataError(f"{path}: preprocessed intensities exceed float16 range; check the image.")
    record = _qc_record(path, info)
    text = json.dumps(record, indent=1) + "\n"
    save_npy(target, vol.astype(np.float16))
    atomic_write(target.with_suffix(".qc.json"), lambda tmp: Path(tmp).write_text(text))
    return (np.load(target, mmap_mode="r") if mmap else np.load(target)), record


def load_preprocessed(
    path: str | os.PathLike,
    config: PreprocessConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    mmap: bool = True,
) -> np.ndarray:
    """Preprocessed volume for a file, from the cache when possible (see the module doc).

    Args:
        path: image file (.nii, .nii.gz, .mgz).
        config: preprocessing parameters (default :class:`slicelib.data.PreprocessConfig`).
        cache_dir: default :func:`default_cache_dir`.
        use_cache: False = always preprocess, never read or write the cache.
        mmap: return the cached array memory-mapped (read-only) instead of loading it.

    Returns:
        array (X, Y, Z), z-scored; float16 (cached; memory-mapped if ``mmap``) or float32
        (``use_cache=False``). Callers wanting float32 use ``np.asarray(a, np.float32)``.
    """
    config = config or PreprocessConfig()
    if not use_cache:
        return preprocess(path, config)[0]
    return _fill(path, config, cache_dir, mmap)[0]


def _cached_row(path: str, config: PreprocessConfig, cache_dir) -> dict[str, Any] | None:
    """The row of :func:`preprocess_many` for a scan already in the cache, else None."""
    if not Path(path).is_file():
        return None
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cdir / f"{cache_key(path, config)}.npy"
    hit = _read(target, config.volume_shape, mmap=True)
    return None if hit is None else {**hit[1], "path": str(path), "cache": str(target)}


def _one(path: str, config: PreprocessConfig, cache_dir, threads) -> dict[str, Any]:
    """One row of :func:`preprocess_many`; never raises."""
    try:
        _, record = _fill(path, config, cache_dir, mmap=True, threads=threads)
        key = cache_key(path, config)
        cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return {**record, "path": str(path), "cache": str(cdir / f"{key}.npy")}
    except Exception as e:  # noqa: BLE001 - one bad scan never stops the batch
        msg = str(e) if isinstance(e, DataError) else f"{path}: {type(e).__name__}: {e}"
        return {"path": str(path), "status": "error", "reasons": msg.replace("\n", " ")}


def preprocess_many(
    paths,
    config: PreprocessConfig | dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Preprocess (and QC) many scans into the cache, in parallel; failures do not stop it.

    Args:
        paths: image files. config: :class:`slicelib.data.PreprocessConfig` or its dict.
        cache_dir: default :func:`default_cache_dir`.
        jobs: worker processes (spawned: a forked child of a process that already ran
            torch/OpenMP can hang); each pipeline uses ``cpu_count // jobs`` threads. A
            ``register`` callable runs in this process (jobs = 1).
        progress: a tqdm progress bar.

    Returns:
        DataFrame, one row per path in the order given: ``path``, ``status`` ("ok" /
        "flagged" / "error"), ``reasons`` (the error message naming the file, or the QC
        reasons), ``method`` (the one applied), the measures :data:`QC_COLUMNS` and ``cache``
        (the .npy file; empty for an error: nothing is cached for a failed scan).
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm.auto import tqdm

    if isinstance(config, dict):
        config = PreprocessConfig.from_dict(config)
    config = config or PreprocessConfig()
    paths = [str(p) for p in paths]
    jobs = 1 if config.register is not None else max(1, min(int(jobs), len(paths) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    bar = tqdm(total=len(paths), desc="preprocess", unit="scan", disable=not progress)
    rows = {i: _cached_row(p, config, cache_dir) for i, p in enumerate(paths)}
    todo = [i for i, r in rows.items() if r is None]  # a warm cache starts no worker pool
    bar.update(len(paths) - len(todo))
    if jobs == 1 or len(todo) < 2:
        for i in todo:
            rows[i] = _one(paths[i], config, cache_dir, None)
            bar.update()
    else:
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {i: pool.submit(_one, paths[i], config, cache_dir, threads) for i in todo}
            for _ in cf.as_completed(futures.values()):
                bar.update()
            rows.update({i: f.result() for i, f in futures.items()})
    bar.close()
    rows = [rows[i] for i in range(len(paths))]
    cols = ["path", "status", "reasons", "method", *QC_COLUMNS, "cache"]
    return pd.DataFrame(rows).reindex(columns=cols).fillna({"reasons": "", "cache": ""})


def check_qc(
    qc: pd.DataFrame, what: str = "training", names=None, flagged: str = "warn"
) -> np.ndarray:
    """The input contract: raise for scans with status "error"; warn about (or drop) flagged ones.

    Args:
        qc: rows of :func:`preprocess_many` (``path``, ``status``, ``reasons``).
        what: what the scans are for (named in the messages).
        names: optional labels of the rows (e.g. participant ids), default the paths.
        flagged: what to do with "flagged" scans: "warn" (a warning listing them), "exclude"
            (listed on stderr and marked False in the result) or "off" (nothing).

    Returns:
        bool array (len(qc),): the rows to use (all True unless ``flagged="exclude"``).

    Raises:
        DataError listing every scan that could not be preprocessed and why.
    """
    import sys

    if flagged not in QC_MODES:
        raise ValueError(f"check_qc(flagged={flagged!r}): use one of {QC_MODES}")
    names = list(qc["path"] if names is None else names)
    status, reasons = list(qc["status"]), list(qc["reasons"].fillna(""))
    bad = [f"  {n}: {r}" for n, s, r in zip(names, status, reasons) if s == "error"]
    if bad:
        raise DataError(
            f"{len(bad)} scan(s) cannot be preprocessed for {what}:\n"
            + "\n".join(bad[:20])
            + "\nFix or replace these files, or drop their rows from the table."
        )
    is_flagged = np.array([s == "flagged" for s in status], dtype=bool)
    odd = [f"  {n}: {r}" for n, r, f in zip(names, reasons, is_flagged) if f]
    if odd and flagged == "exclude":
        print(
            f"{len(odd)} scan(s) left out of {what} (QC flagged: not like a registered T1 "
            "brain):\n" + "\n".join(odd),
            file=sys.stderr,
        )
        return ~is_flagged
    if odd and flagged == "warn":
        warnings.warn(
            f"{len(odd)} scan(s) for {what} do not look like a registered T1 brain (QC flagged):"
            "\n" + "\n".join(odd[:20]) + "\nCheck them (slicelib qc SCAN --out DIR shows each)"
            "; qc='exclude' (--qc exclude) leaves them out.",
            stacklevel=2,
        )
    return np.ones(len(status), dtype=bool)
