"""Run the course notebooks headless: the README's main job and the CI smoke check.

The ``notebooks/*.py`` files (jupytext percent format) are the source of truth. Each one is
converted to a notebook, executed with papermill with its ``PRESET`` parameter injected, and
written, executed, to an output folder as ``.ipynb`` and ``.html``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from slicelib import compare as C
from slicelib.config import PRESETS as TRAIN_PRESETS
from slicelib.config import TrainConfig
from slicelib.datasets import data_home
from slicelib.errors import ConfigError
from slicelib.exercises import check, write_student_notebooks
from slicelib.runs import evaluate_run
from slicelib.splits import split_subjects
from slicelib.synth import GENERATOR_VERSION, make_cohort
from slicelib.train import train
from slicelib.weights import WeightsError, load_backbone

__all__ = [
    "NOTEBOOKS",
    "PRESETS",
    "data_dir",
    "shared_dir",
    "ensure_synthetic_cohort",
    "course_split",
    "imagenet_weights",
    "runs_dir",
    "split_mapping",
    "train_on_split",
    "compare_on_split",
    "arm_names",
    "run_histories",
    "plot_size_sweep",
    "mae_text",
    "versus",
    "notebook_dir",
    "notebook_sources",
    "run_notebooks",
    "repository_url",
    "write_badges",
    "check",
    "write_student_notebooks",
]

NOTEBOOKS = (
    "01_data",
    "02_imagenet_vs_scratch",
    "03_position_embeddings",
    "04_slice_contributions",
)
PRESETS = tuple(TRAIN_PRESETS)  # the notebooks run in every training preset


def data_dir() -> Path:
    """Where the notebooks keep data (generated cohorts, runs): :func:`slicelib.datasets.
    data_home`, i.e. ``$SLICELIB_DATA``, else ``pooch.os_cache("slicelib")``."""
    return data_home().resolve()


def shared_dir() -> Path:
    """The read-only course assets (ImageNet weights, the ixi10 heads): ``$SLICELIB_SHARED``, else
    ``shared/`` beside the repository (``weights/<backbone>_imagenet1k.pth``, ``data/ixi10/``)."""
    if os.environ.get("SLICELIB_SHARED"):
        return Path(os.environ["SLICELIB_SHARED"])
    return Path(__file__).resolve().parents[2] / "shared"


def ensure_synthetic_cohort(n: int, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """Return the folder of a synthetic cohort of ``n`` subjects (seed ``seed``), making it once.

    The cohort lives in ``<root>/synth-n<n>-seed<seed>`` (root: :func:`data_dir`). A marker file
    written last records that it is complete and which generator version made it, so an
    interrupted generation, or one by an older slicelib, is redone, never half-used. Returns the
    cohort folder (holding ``participants.tsv``).
    """
    folder = Path(root or data_dir()) / f"synth-n{n}-seed{seed}"
    marker = folder / ".complete"
    stamp = f"n={n} seed={seed} generator={GENERATOR_VERSION}\n"
    if not marker.is_file() or marker.read_text() != stamp:  # missing, partial or outdated
        marker.unlink(missing_ok=True)
        make_cohort(folder, n=n, seed=seed)
        marker.write_text(stamp)
    return folder


#: The layout of the notebooks' runs (their subject splits); bumped when a notebook's split
#: changes, so a run trained on an older split is never resumed (3: IXI test sets are folds).
COURSE_RUNS_VERSION = 3


def runs_dir(notebook: str, preset: str) -> Path:
    """Folder for one notebook's training runs:
    ``<data_dir>/runs/<notebook>_<preset>_course-v<C>_synth-v<N>``.

    C is :data:`COURSE_RUNS_VERSION` (the notebooks' splits), N the synthetic generator's
    version: runs trained on an older split or cohort are never reused (resuming them would
    stop at the data check).
    """
    name = f"{notebook}_{preset}_course-v{COURSE_RUNS_VERSION}_synth-v{GENERATOR_VERSION}"
    return data_dir() / "runs" / name


def imagenet_weights(
    backbone: str, fallback: str | None = "mobilenet_v2"
) -> tuple[str, str | None, str]:
    """Pick the ImageNet weights a notebook can use, and say which: (backbone, weights, note).

    In order: a local state_dict ``$SLICELIB_WEIGHTS_DIR/<backbone>_imagenet1k.pth`` (default
    folder: ``weights/`` in :func:`shared_dir`); torchvision's download (``"imagenet"``,
    Colab/Binder with internet); offline, the local ``<fallback>_imagenet1k.pth`` in place of
    the requested backbone; else ``None`` (random init; the note says the comparison is void).
    ``weights`` is what :class:`slicelib.model.SliceModel` takes.
    """
    folder = Path(os.environ.get("SLICELIB_WEIGHTS_DIR") or shared_dir() / "weights")
    local = folder / f"{backbone}_imagenet1k.pth"
    if local.is_file():
        return backbone, str(local), f"ImageNet weights for {backbone} from {local}"
    try:
        load_backbone(backbone, "imagenet")  # downloads into torchvision's cache, or fails
        return backbone, "imagenet", f"ImageNet weights for {backbone} from torchvision"
    except WeightsError as err:
        note = str(err).splitlines()[0]
    spare = folder / f"{fallback}_imagenet1k.pth" if fallback else None
    if spare is not None and backbone != fallback and spare.is_file():
        return fallback, str(spare), f"{note}; using {fallback} from {spare} instead"
    return backbone, None, f"NO ImageNet weights ({note}): the encoder starts from random weights"


def course_split(
    participants: pd.DataFrame, fractions: tuple, seed: int = 0
) -> tuple[dict, list[str]]:
    """One split for every run of a notebook, and a training pool whose prefixes are balanced.

    Subjects are split (seeded) into train/val/test, stratified by AD status x age quintile
    (columns ``ad`` 0/1, if present, and ``age`` in years of ``participants``), so both tasks
    get balanced sets. The training subjects are then ordered so that every prefix ``pool[:n]``
    keeps that balance: within each stratum a seeded shuffle, then all subjects sorted by their
    relative position in their stratum. Small training sets are thus nested in the large ones.

    Returns:
        (parts, pool): parts = {"train", "val", "test"} -> lists of participant ids;
        pool = the training ids in that nested order.
    """
    table = participants.copy()
    ad = table["ad"].astype(int) if "ad" in table else 0
    table["stratum"] = ad * 5 + pd.qcut(table["age"], 5, labels=False)
    parts = split_subjects(table, "stratum", fractions=tuple(fractions), seed=seed)
    rng = np.random.default_rng(seed)
    pool = table[table["participant_id"].isin(parts["train"])].copy()
    pool["order"] = rng.permutation(len(pool)).astype(float)
    pool["rank"] = pool.groupby("stratum")["order"].rank()
    pool["position"] = (pool["rank"] - 0.5) / pool.groupby("stratum")["order"].transform("size")
    return parts, pool.sort_values(["position", "order"])["participant_id"].tolist()


def split_mapping(split: dict) -> dict[str, str]:
    """{"train": ids, "val": ids, "test": ids, "unused": ids} as ``TrainConfig.split`` takes it:
    {participant_id: split name}."""
    return {str(pid): name for name, ids in split.items() for pid in ids}


def train_on_split(config, split: dict) -> tuple[dict, pd.DataFrame]:
    """Train one run on a given subject split (or reuse it) and score it on the test subjects.

    Args:
        config: a :class:`slicelib.train.TrainConfig`; ``config.out`` is the run folder.
        split: {"train": ids, "val": ids, "test": ids, "unused": ids (optional)}; given to
            training as ``TrainConfig.split`` (``unused`` subjects take no part).

    Returns:
        (row, history): row = the test metrics of :func:`slicelib.runs.evaluate_run` that are
        numbers (undefined ones, such as r of constant predictions, as NaN), plus ``seconds``
        (wall time of training, s) and ``best_epoch`` (1-based); history = the run's
        ``history.csv`` as a DataFrame (one row per epoch).
    """
    config = dataclasses.replace(config, split=split_mapping(split))
    t0 = time.perf_counter()
    run = train(config, progress=False)
    seconds = time.perf_counter() - t0
    res = evaluate_run(run, split="test", progress=False)
    row = {
        k: float("nan") if v is None else v
        for k, v in res.items()
        if (v is None or isinstance(v, (int, float))) and k != "n"
    }
    row.update(seconds=round(seconds), best_epoch=res["checkpoint_epoch"] + 1, run=str(run))
    return row, pd.read_csv(Path(run) / "history.csv")


def compare_on_split(
    base,
    split: dict,
    grid: dict | None = None,
    lrs: list[float] | None = None,
    seeds: list[int] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`slicelib.compare.compare` on a given subject split (e.g. a nested training subset).

    The split goes into the base config (``TrainConfig.split``), so all arms, seeds and
    learning rates share exactly these subjects.

    Args:
        base: :class:`slicelib.train.TrainConfig` (or its dict); ``base.data`` is a
            participants table (.tsv/.csv) or a BIDS folder (its ``participants.tsv``), with
            ``participant_id`` and ``base.target``.
        split: {"train": ids, "val": ids, "test": ids, "unused": ids (optional)}; together
            they must list every subject of the table (``unused`` ones take no part).
        grid, lrs, seeds, out, progress: as for :func:`slicelib.compare.compare`.

    Returns:
        compare's (results, summary): one row per arm and seed, the per-arm summary.
    """
    base = base if isinstance(base, TrainConfig) else TrainConfig.from_dict(base)
    data = Path(base.data)
    data = data / "participants.tsv" if data.is_dir() else data  # a BIDS folder
    table = pd.read_csv(data, sep="\t" if data.suffix == ".tsv" else ",", dtype=str)
    where = split_mapping(split)
    missing = sorted(set(table["participant_id"]) - set(where))
    if missing:  # (training would refuse too, after the first arm's preprocessing)
        raise ValueError(
            f"split lists no entry for {len(missing)} subject(s) of {base.data} (first: "
            f"{missing[0]}); put the subjects a run should not use under 'unused'."
        )
    base = dataclasses.replace(base, split=where)
    return C.compare(base, grid, lrs or [base.lr], seeds, out or base.out, progress=progress)


def arm_names(results: pd.DataFrame) -> pd.Series:
    """A short readable name per row of compare's results: "ImageNet, fine-tuned",
    "scratch, frozen", or the 3D backbone's name (e.g. "3D CNN (sfcn_3d)")."""

    def name(r) -> str:
        if r["weights"] == "-":  # a 3D CNN has no slice-model settings
            return f"3D CNN ({r['backbone']})"
        init = "scratch" if r["weights"] in ("none", None) else "ImageNet"
        return f"{init}, {'frozen' if r['freeze_encoder'] == 'yes' else 'fine-tuned'}"

    return results.apply(name, axis=1).rename("arm")


def run_histories(results: pd.DataFrame, label: str = "arm") -> pd.DataFrame:
    """The ``history.csv`` (one row per epoch) of every run in ``results`` (column ``run``),
    stacked, with ``label`` = the row's ``label`` value and ``seed``: the input of
    :func:`slicelib.plotting.plot_learning_curves`."""
    parts = []
    for _, r in results.iterrows():
        h = pd.read_csv(Path(r["run"]) / "history.csv")
        parts.append(h.assign(**{label: f"{r[label]} (seed {r['seed']})", "seed": r["seed"]}))
    return pd.concat(parts, ignore_index=True)


def plot_size_sweep(
    table: pd.DataFrame,
    *,
    value: str,
    group: str = "arm",
    size: str = "n_train",
    metric_label: str = "metric",
    references: dict | None = None,
    title: str = "Training-set-size sweep",
    ax=None,
):
    """A metric against the training-set size: mean ± sd over seeds per group, runs as dots.

    Args:
        table: one row per run with ``group``, ``size`` (subjects) and ``value`` columns.
        value: the metric column, e.g. "mae" (years).
        references: extra lines {name: Series indexed by size} (e.g. the ridge baseline).
        metric_label: the y label, with units.
        ax: matplotlib Axes (default: a new figure).

    Returns:
        the matplotlib Figure (x: training subjects, log scale).
    """
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for i, (name, g) in enumerate(table.groupby(group, sort=False)):
        s = g.groupby(size)[value].agg(["mean", "std", "count"]).reset_index()
        seeds = int(s["count"].max())
        kw = dict(
            fmt="-o",
            capsize=4,
            color=f"C{i}",
            label=f"{name} (mean ± sd, {seeds} seed{'s' * (seeds > 1)})",
        )
        ax.errorbar(s[size], s["mean"], yerr=s["std"].fillna(0), **kw)
        ax.plot(g[size], g[value], ".", color=f"C{i}", alpha=0.5)
    for name, line in (references or {}).items():
        ax.plot(line.index, line.to_numpy(), "--", color="0.4", label=name)
    sizes = sorted(table[size].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set(xlabel="training subjects (log scale)", ylabel=metric_label, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def mae_text(table: pd.DataFrame, row: str) -> str:
    """One row of a results table in words: "7.1 years (95 % CI 6.0-8.3; ok)".

    ``table`` is indexed by arm name with columns ``mae``, ``mae_ci95_lo``, ``mae_ci95_hi`` (years)
    and ``status``; a missing MAE (a diverged arm) reads "no result (<status>)"."""
    r = table.loc[row]
    if pd.isna(r["mae"]):
        return f"no result ({r['status']})"
    return f"{r['mae']:.1f} years (95 % CI {r['mae_ci95_lo']:.1f}-{r['mae_ci95_hi']:.1f}; {r['status']})"


def versus(table: pd.DataFrame, a: str, b: str) -> str:
    """Two rows of a results table compared in words (see :func:`mae_text` for ``table``):
    both MAEs, which is better by how many years, and whether their 95 % CIs overlap. An arm
    this run did not train (no ImageNet weights offline, say) reads "not in this run"."""
    absent = [r for r in (a, b) if r not in table.index]
    if absent:
        return f"{' and '.join(absent)} not in this run: no comparison of {a} with {b}"
    ra, rb = table.loc[a], table.loc[b]
    text = f"{a} {mae_text(table, a)} vs {b} {mae_text(table, b)}"
    if pd.isna(ra["mae"]) or pd.isna(rb["mae"]):
        return text
    gap = rb["mae"] - ra["mae"]  # > 0: a is better
    apart = ra["mae_ci95_hi"] < rb["mae_ci95_lo"] or rb["mae_ci95_hi"] < ra["mae_ci95_lo"]
    better = "better" if gap > 0 else "worse" if gap < 0 else "no different"
    return f"{text}: {a} {abs(gap):.1f} years {better}, CIs {'apart' if apart else 'overlap'}"


def notebook_dir() -> Path:
    """The folder holding the course notebooks (``notebooks/`` beside the package)."""
    folder = Path(
        os.environ.get("SLICELIB_NOTEBOOKS", Path(__file__).resolve().parents[1] / "notebooks")
    )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Notebook folder {folder} not found. The notebooks ship with the git repository: "
            "clone it (git clone ...) and install with pip install -e ., or set SLICELIB_NOTEBOOKS."
        )
    return folder


def notebook_sources(names=None) -> list[Path]:
    """Paths of the jupytext sources ``notebooks/<name>.py`` (all four by default)."""
    folder = notebook_dir()
    paths = []
    for name in names or NOTEBOOKS:
        path = folder / f"{Path(name).stem}.py"
        if not path.is_file():
            raise FileNotFoundError(
                f"Notebook source {path} not found; known: {', '.join(NOTEBOOKS)}."
            )
        paths.append(path)
    return paths


def run_notebooks(
    out_dir: str | os.PathLike,
    preset: str = "cpu",
    names=None,
    html: bool = True,
    kernel_name: str = "python3",
    parameters: dict | None = None,
) -> list[dict]:
    """Execute the course notebooks in ``preset`` and write them to ``out_dir``.

    Args:
        out_dir: folder for the executed ``<name>.ipynb`` and ``<name>.html`` files; the
            notebooks also run in this folder, so their own outputs (cohort, runs) land there
            unless ``SLICELIB_DATA`` points elsewhere.
        preset: ``smoke`` (CI, seconds to minutes), ``cpu`` (a laptop, minutes) or ``gpu``.
        names: notebook names (default: all four, in order).
        html: also export each executed notebook to HTML.
        kernel_name: the Jupyter kernel to run them in.
        parameters: extra papermill parameters for every notebook.

    Returns:
        One dict per notebook: ``name``, ``seconds`` (wall time), ``ipynb`` and ``html`` paths.
        Raises ``papermill.PapermillExecutionError`` (naming the cell) when a notebook fails.
    """
    import jupytext
    import nbformat
    import papermill
    from tqdm.auto import tqdm

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}.")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    sources = notebook_sources(names)
    for source in tqdm(sources, desc=f"notebooks ({preset})", unit="notebook"):
        source_nb = out / f"{source.stem}.source.ipynb"
        nb = jupytext.read(source)
        nb.metadata["kernelspec"] = {
            "name": kernel_name,
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, source_nb)
        executed = out / f"{source.stem}.ipynb"
        start = time.perf_counter()
        papermill.execute_notebook(
            str(source_nb),
            str(executed),
            parameters={"PRESET": preset, **(parameters or {})},
            kernel_name=kernel_name,
            cwd=str(out),
            progress_bar=True,
        )
        seconds = time.perf_counter() - start
        source_nb.unlink()
        row = {
            "name": source.stem,
            "seconds": round(seconds, 1),
            "ipynb": str(executed),
            "html": None,
        }
        if html:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
            row["html"] = str(executed.with_suffix(".html"))
            Path(row["html"]).write_text(body, encoding="utf-8")
        results.append(row)
        tqdm.write(f"{source.stem}: {seconds:.0f} s -> {executed}")
    return results


# The Colab and Binder links: owner, repository and branch are rewritten; what follows (the
# notebook's path, Binder's ?labpath=...) is kept.
_BADGE_LINKS = (
    (
        re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/"),
        "https://colab.research.google.com/github/{repo}/blob/{branch}/",
    ),
    (
        re.compile(r"https://mybinder\.org/v2/gh/[^/\s)]+/[^/\s)]+/[^/?\s)]+"),
        "https://mybinder.org/v2/gh/{repo}/{branch}",
    ),
)
BADGE_BRANCH = "main"  # the branch the Colab/Binder badges open


def repository_url(root: str | os.PathLike) -> str:
    """The project's repository, the one value every Colab/Binder badge is written from:
    ``[project.urls] Repository`` in ``<root>/pyproject.toml``, as ``https://github.com/<owner>/
    <name>`` (Colab and Binder open GitHub repositories). Raises ConfigError naming the file and
    the value when it is missing or not such a URL."""
    path = Path(root) / "pyproject.toml"
    urls = tomllib.loads(path.read_text()).get("project", {}).get("urls", {})
    url = str(urls.get("Repository", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ConfigError(
            f"{path}: [project.urls] Repository = {url!r} is not a GitHub repository URL; set it "
            "to https://github.com/<owner>/<name> (Colab and Binder badges need GitHub)."
        )
    return url


def write_badges(root: str | os.PathLike, check: bool = False) -> list[Path]:
    """Rewrite every Colab and Binder link in ``notebooks/0*.py`` and ``.ipynb``, README.md and
    docs/course.md of the checkout ``root`` from :func:`repository_url` (branch
    ``BADGE_BRANCH``). Only the links change, so each .ipynb stays what jupytext makes of its
    .py. With ``check=True`` nothing is written. Returns the files that differed."""
    repo = repository_url(root).removeprefix("https://github.com/")
    root = Path(root)
    paths = [root / "README.md", root / "docs" / "course.md"]
    paths += sorted((root / "notebooks").glob("0*.py")) + sorted(
        (root / "notebooks").glob("0*.ipynb")
    )
    changed = []
    for path in paths:
        text = path.read_text()
        new = text
        for pattern, template in _BADGE_LINKS:
            new = pattern.sub(template.format(repo=repo, branch=BADGE_BRANCH), new)
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed
