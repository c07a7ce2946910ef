"""The preprocessed-volume cache: one float16 array and one QC record per scan and config.

``<cache_dir>/<key>.npy`` holds the preprocessed volume (float16 (X, Y, Z), memory-mappable)
and ``<key>.qc.json`` its quality control (status ok / flagged, reasons, the
:mod:`slicelib.qc` measures, the method applied), so QC is computed once, as part of
preprocessing. The key hashes the *decoded image* (voxel values, dtype, shape, affine and the
header's sform/qform codes: the same voxels stored as .nii or .nii.gz share one entry), the
whole :class:`slicelib.data.PreprocessConfig` (method, pipeline options, grid, ...) and
:data:`slicelib.data.CACHE_VERSION`. Decoding costs about one image load (0.1 s for a 2 mm
head, 0.5 s for a 1 mm one), so each file's image digest is remembered under its byte digest in
``<cache_dir>/content/`` and a warm cache only hashes the file's bytes.

An entry is filled under a per-key lock (``<key>.lock``, ``fcntl.flock``): a second process
asking for the same scan waits, then reads what the first wrote, and every caller returns the
array read back from the cache, so two processes sharing a cache always agree. Files are
written atomically and only after preprocessing succeeded: nothing is cached for a scan that
fails.

:func:`preprocess_many` fills the cache for many scans in parallel
(:func:`slicelib.utils.run_parallel`) and returns one QC row per scan; :func:`check_qc` is the
input contract that ``train`` and ``predict`` apply to those rows; :class:`VolumeDataset` is
the torch Dataset reading the cache; :func:`run_qc` runs the registration pipeline and its QC
on many scans (``slicelib qc``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from slicelib.data import (
    CACHE_VERSION,
    DataError,
    PreprocessConfig,
    load_nifti,
    preprocess,
    read_time_normalise,
)
from slicelib.errors import PipelineError
from slicelib.io import SUFFIXES, grid
from slicelib.pipeline import PipelineConfig, run_pipeline
from slicelib.qc import QC_MODES, n_unique, qc_figure, qc_status
from slicelib.utils import atomic_write, run_parallel, save_npy

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent fills of one key are not serialised
    fcntl = None

__all__ = [
    "default_cache_dir",
    "file_hash",
    "cache_key",
    "content_hash",
    "load_preprocessed",
    "preprocess_many",
    "check_qc",
    "QC_COLUMNS",
    "VolumeDataset",
    "run_qc",
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


def image_hash(path: str | os.PathLike) -> str:
    """Hex BLAKE2b digest (32 hex chars) of the decoded image, independent of the container.

    Hashes the voxel values as stored (dtype, shape, bytes; scaled when the header scales),
    the affine and, for NIfTI, the sform/qform codes (they decide "declares MNI"). The same
    voxels and header saved as ``.nii`` and ``.nii.gz`` give the same digest.

    Raises:
        DataError naming the file when it cannot be read (see :func:`slicelib.data.load_nifti`).
    """
    try:
        img = nib.load(str(path))
        data = np.ascontiguousarray(np.asanyarray(img.dataobj))
    except Exception as e:  # noqa: BLE001 - the loader's message names the problem
        load_nifti(path)  # raises the DataError naming the file and what to do
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}).") from e
    h = hashlib.blake2b(digest_size=16)
    header = img.header
    codes = (
        (int(header["sform_code"]), int(header["qform_code"]))
        if isinstance(header, (nib.Nifti1Header, nib.Nifti2Header))
        else None
    )
    h.update(repr((data.dtype.str, data.shape, codes)).encode())
    h.update(np.asarray(img.affine, dtype=np.float64).tobytes())
    h.update(memoryview(data).cast("B"))
    return h.hexdigest()


_IMAGE_MEMO: dict[str, str] = {}


def content_hash(path, cache_dir=None) -> str:
    """:func:`image_hash` of a file, remembered under its :func:`file_hash`: in this process,
    and in ``<cache_dir>/content/`` (read here; written by :func:`_fill` once the scan's entry
    exists, so a scan that fails leaves nothing behind)."""
    by_bytes = file_hash(path)
    digest = _IMAGE_MEMO.get(by_bytes, "")
    if not digest and cache_dir is not None:
        with contextlib.suppress(OSError):
            digest = (Path(cache_dir) / "content" / by_bytes).read_text().strip()
    if len(digest) != 32:
        digest = image_hash(path)
    _IMAGE_MEMO[by_bytes] = digest
    return digest


def _remember_content(path, cdir: Path) -> None:
    """Write the memo ``<cdir>/content/<file digest>`` of :func:`content_hash` if missing."""
    memo = cdir / "content" / file_hash(path)
    if not memo.exists():
        digest = content_hash(path, cdir)
        with contextlib.suppress(OSError):  # a read-only cache still works, decoding each time
            atomic_write(memo, lambda tmp: Path(tmp).write_text(digest))


def cache_key(
    path: str | os.PathLike, config: PreprocessConfig, cache_dir: str | os.PathLike | None = None
) -> str:
    """Cache key (hex str): hash of :func:`image_hash`, ``config.to_dict()`` and CACHE_VERSION.

    ``cache_dir``, when given, only keeps the memo of image digests (``content/``); the key
    is the same whichever folder is given, or none.
    """
    blob = json.dumps(
        {
            "image": content_hash(path, cache_dir),
            "config": config.to_dict(),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _cdir(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _entry(path, config: PreprocessConfig, cache_dir) -> Path:
    """The cache entry (``<cache_dir>/<key>.npy``) of a scan and config (its stored config:
    :meth:`slicelib.data.PreprocessConfig.stored`)."""
    cdir = _cdir(cache_dir)
    return cdir / f"{cache_key(path, config.stored(), cdir)}.npy"


@contextlib.contextmanager
def _locked(target: Path):
    """Hold an exclusive ``flock`` on ``<key>.lock`` beside the entry (blocks while another
    process holds it). The holder deletes the lock file before releasing it, and a process
    that locked a file deleted meanwhile locks the new one, so no lock file stays behind."""
    lock = target.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(lock, "a+b")  # noqa: SIM115 - closed below
        if fcntl is None:
            break
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino:
                break  # the current lock file: held
        except FileNotFoundError:
            pass
        f.close()  # the file this process locked was deleted by the previous holder
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        f.close()  # releases the flock


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
    """(array float16 (X, Y, Z), QC record) of one scan as stored in the cache, preprocessing
    it on a miss under the entry's lock (see the module doc)."""
    if not Path(path).is_file():
        load_nifti(path)  # raises the DataError naming the file
    config = config.stored()
    target = _entry(path, config, cache_dir)
    hit = _read(target, config.volume_shape, mmap)
    if hit is not None:
        _remember_content(path, target.parent)
        return hit
    with _locked(target):
        hit = _read(target, config.volume_shape, mmap)  # filled while this process waited
        if hit is not None:
            return hit
        vol, _, info = preprocess(path, config, return_info=True, threads=threads)
        if not np.all(np.abs(vol) < 65000):
            raise DataError(
                f"{path}: preprocessed intensities exceed float16 range; check the image."
            )
        text = json.dumps(_qc_record(path, info), indent=1) + "\n"
        save_npy(target, vol.astype(np.float16))
        atomic_write(target.with_suffix(".qc.json"), lambda tmp: Path(tmp).write_text(text))
        hit = _read(target, config.volume_shape, mmap)  # what is in the cache, not `vol`
    if hit is None:
        raise DataError(f"{path}: its cache entry {target} cannot be read back after writing.")
    _remember_content(path, target.parent)
    return hit


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
        (``use_cache=False``, or a read-time normalisation or smoothing: computed from the
        cached z-scored entry when read, :func:`slicelib.data.read_time_normalise`). Callers
        wanting float32 use ``np.asarray(a, np.float32)``.
    """
    config = config or PreprocessConfig()
    if not use_cache:
        return preprocess(path, config)[0]
    arr = _fill(path, config, cache_dir, mmap)[0]
    return read_time_normalise(arr, config, str(path))


def _cached_row(path: str, config: PreprocessConfig, cache_dir) -> dict[str, Any] | None:
    """The row of :func:`preprocess_many` for a scan already in the cache, else None."""
    try:
        target = _entry(path, config, cache_dir)
    except DataError:  # missing or unreadable: _one reports it
        return None
    hit = _read(target, config.volume_shape, mmap=True)
    if hit is None:
        return None
    _remember_content(path, target.parent)
    return {**hit[1], "path": str(path), "cache": str(target)}


def _one(job: tuple) -> dict[str, Any]:
    """One row of :func:`preprocess_many` for ``(path, config, cache_dir, threads)``."""
    path, config, cache_dir, threads = job
    _, record = _fill(path, config, cache_dir, mmap=True, threads=threads)
    return {**record, "path": str(path), "cache": str(_entry(path, config, cache_dir))}


def _error_row(job: tuple, e: BaseException) -> dict[str, Any]:
    """The row of a scan that failed (one bad scan never stops the batch)."""
    path = job[0]
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
        jobs: worker processes (:func:`slicelib.utils.run_parallel`: spawned, they die with
            this process); each pipeline uses ``cpu_count // jobs`` threads. A ``register``
            callable runs in this process (jobs = 1).
        progress: a tqdm progress bar.

    Returns:
        DataFrame, one row per path in the order given: ``path``, ``status`` ("ok" /
        "flagged" / "error"), ``reasons`` (the error message naming the file, or the QC
        reasons), ``method`` (the one applied), the measures :data:`QC_COLUMNS` and ``cache``
        (the .npy file; empty for an error: nothing is cached for a failed scan).
    """
    if isinstance(config, dict):
        config = PreprocessConfig.from_dict(config)
    config = config or PreprocessConfig()
    paths = [str(p) for p in paths]
    rows = {i: _cached_row(p, config, cache_dir) for i, p in enumerate(paths)}
    todo = [i for i, r in rows.items() if r is None]  # a warm cache starts no worker pool
    jobs = 1 if config.register is not None else max(1, min(int(jobs), len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    jobs_in = [(paths[i], config, cache_dir, threads) for i in todo]
    done = run_parallel(
        _one, jobs_in, jobs, on_error=_error_row, desc="preprocess", unit="scan", progress=progress
    )
    rows.update(zip(todo, done))
    rows = [rows[i] for i in range(len(paths))]
    cols = ["path", "status", "reasons", "method", *QC_COLUMNS, "cache"]
    return pd.DataFrame(rows).reindex(columns=cols).fillna({"reasons": "", "cache": ""})


_REPORTED: set = set()  # (mode, flagged rows) already listed by check_qc in this process


def check_qc(
    qc: pd.DataFrame, what: str = "training", names=None, flagged: str = "warn"
) -> np.ndarray:
    """The input contract: raise for scans with status "error"; warn about (or drop) flagged ones.

    Args:
        qc: rows of :func:`preprocess_many` (``path``, ``status``, ``reasons``).
        what: what the scans are for (named in the messages).
        names: optional labels of the rows (e.g. participant ids), default the paths.
        flagged: what to do with "flagged" scans: "warn" (a warning listing them), "exclude"
            (listed on stderr and marked False in the result) or "off" (nothing). The same
            flagged scans are listed once per process (a grid of runs on one table, or train
            then evaluate, reports them once, not once per run).

    Returns:
        bool array (len(qc),): the rows to use (all True unless ``flagged="exclude"``).

    Raises:
        DataError listing every scan that could not be preprocessed and why.
    """
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
    if odd and (flagged, tuple(odd)) in _REPORTED:
        return ~is_flagged if flagged == "exclude" else np.ones(len(status), dtype=bool)
    if odd and flagged != "off":
        _REPORTED.add((flagged, tuple(odd)))
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


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


class VolumeDataset(torch.utils.data.Dataset):
    """Torch Dataset of preprocessed volumes from a table (see :func:`slicelib.datasets.read_table`).

    Args:
        table: DataFrame with ``participant_id``, ``path`` and (unless ``target`` is None)
            the numeric target column.
        target: target column (years or 0/1), or None (items then carry NaN targets).
        preprocess: :class:`slicelib.data.PreprocessConfig` or its dict (default: MNI 2 mm
            grid).
        cache_dir: cache folder (default :func:`default_cache_dir`).
        use_cache: False = preprocess every time, no files written.

    Items: ``(volume, target)``, volume ``torch.float32`` (1, X, Y, Z) z-scored, target
    ``torch.float32`` scalar. ``dataset.ids`` / ``dataset.targets`` give subject ids / targets.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        target: str | None,
        preprocess: PreprocessConfig | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
    ) -> None:
        if isinstance(preprocess, dict):
            preprocess = PreprocessConfig.from_dict(preprocess)
        self.config = preprocess or PreprocessConfig()
        missing = [c for c in ("participant_id", "path") if c not in table.columns]
        if target is not None and target not in table.columns:
            missing.append(target)
        if missing:
            raise DataError(f"VolumeDataset: table lacks columns {missing}; use read_table().")
        self.table = table.reset_index(drop=True)
        self.target = target
        self.ids = self.table["participant_id"].astype(str).tolist()
        self.paths = self.table["path"].astype(str).tolist()
        y = np.full(len(self.ids), np.nan, dtype=np.float32)
        if target is not None:
            y = pd.to_numeric(self.table[target], errors="coerce").to_numpy(dtype=np.float32)
            if np.isnan(y).any():
                i = int(np.flatnonzero(np.isnan(y))[0])
                raise DataError(
                    f"VolumeDataset: target {target!r} is missing/non-numeric for "
                    f"{self.ids[i]!r}; use read_table() to validate the table."
                )
        self.targets = y
        self.cache_dir = cache_dir
        self.use_cache = use_cache

    def __len__(self) -> int:
        return len(self.paths)

    def volume(self, i: int) -> np.ndarray:
        """Preprocessed volume of item ``i``: array (X, Y, Z), float16 (cached) or float32."""
        return load_preprocessed(
            self.paths[i], self.config, self.cache_dir, use_cache=self.use_cache
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.volume(i), dtype=np.float32))[None]  # (1, X, Y, Z)
        return x, torch.tensor(self.targets[i], dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# the registration pipeline and its QC on many scans (slicelib qc)
# --------------------------------------------------------------------------------------------


def _qc_one(job: tuple) -> dict:
    """One row of :func:`run_qc` for ``(path, out_dir, config_dict, shape, affine, figure)``;
    never raises."""
    path, out_dir, config_dict, shape, affine, figure = job
    row: dict[str, Any] = {"path": path}
    try:
        img = load_nifti(path)
        row["n_unique"] = n_unique(np.asarray(img.dataobj))
        result = run_pipeline(img, PipelineConfig.from_dict(config_dict), shape, affine)
        result.source = Path(path).name
        row.update(result.qc)
        row["registration"] = result.registration
        row["seconds"] = result.timings["total"]
    except (DataError, PipelineError) as e:
        row["error"] = str(e).replace("<image>", path)
    except Exception as e:  # noqa: BLE001 - one bad scan never stops the batch
        row["error"] = f"{path}: {type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=3)
    # a header that declares MNI is resampled, not registered: its own thresholds apply
    method = "register" if row.get("registration", "affine") == "affine" else "resample"
    status, reasons = qc_status(row, method)
    row["status"], row["reasons"] = status, "; ".join(reasons)
    if figure and status != "error":
        try:
            qc_figure(result, Path(out_dir) / (_stem(path) + ".png"), status, reasons)
        except Exception as e:  # noqa: BLE001
            row["reasons"] += f"; figure failed: {e}"
    return row


def _qc_crashed(job: tuple, e: BaseException) -> dict:
    """The row of a scan whose worker died (e.g. killed for memory)."""
    row = {"path": job[0], "error": f"{job[0]}: {type(e).__name__}: {e}"}
    row["status"], row["reasons"] = "error", row["error"]
    return row


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):  # ".nii.gz" before ".nii"
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def run_qc(
    paths,
    out_dir,
    config=None,
    jobs: int = 1,
    volume_shape=(91, 109, 91),
    affine=None,
    figures: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the pipeline and QC on every scan; write ``out_dir/qc.csv`` and one PNG per scan.

    Args:
        paths: scan files. config: :class:`slicelib.pipeline.PipelineConfig` (default).
        jobs: worker processes (:func:`slicelib.utils.run_parallel`; each uses
            ``cpu_count // jobs`` threads).
        volume_shape, affine: the grid (default FSL MNI152 2 mm).
    Returns:
        DataFrame with columns path, status ("ok" / "flagged" / "error"), reasons, then the
        measures (ncc, wm_gm, brain_ml, inside, scale, n_unique, seconds, error), one row per
        scan in the order given. A scan that fails gives ``status="error"`` and a reason naming
        the file; the batch always completes.
    """
    config = config or PipelineConfig()
    jobs = max(1, int(jobs))
    if jobs > 1:
        config = PipelineConfig.from_dict(
            {**config.to_dict(), "threads": max(1, (os.cpu_count() or 1) // jobs)}
        )
    affine = grid(2.0)[1] if affine is None else np.asarray(affine, dtype=float)
    cfg = {**config.to_dict(), "threads": config.threads}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in paths]
    args = [(p, str(out_dir), cfg, tuple(volume_shape), affine, figures) for p in paths]
    rows = run_parallel(
        _qc_one, args, jobs, on_error=_qc_crashed, desc="qc", unit="scan", progress=progress
    )
    df = pd.DataFrame(rows)
    first = ["path", "status", "reasons"]
    df = df[first + [c for c in df.columns if c not in first]]
    atomic_write(out_dir / "qc.csv", lambda tmp: df.to_csv(tmp, index=False))
    return df
