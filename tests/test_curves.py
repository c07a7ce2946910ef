"""slicelib.curves: nested stratified subsets, the same training ids for every arm at a point, the
held-out fold never trained on, the summary against a direct computation (tiny synthetic
features, a few seconds in all), and the shipped curve's tables against its summary.csv."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from slicelib import curves
from slicelib.errors import ConfigError, DataError

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "benchmarks" / "results" / "learning_curve"


class Spy(Ridge):
    """A ridge that logs (arm, the subjects of its feature table) at every fit."""

    log: list = []

    def __init__(self, arm="?", alpha=1.0):
        super().__init__(alpha=alpha)
        self.arm = arm

    def fit(self, X, y):
        Spy.log.append((self.arm, frozenset(X.index)))
        return super().fit(X.to_numpy(), y)

    def predict(self, X):
        return super().predict(X.to_numpy())


def _problem(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i:02d}" for i in range(n)]
    folds = pd.DataFrame({"participant_id": ids, "fold": rng.permutation(np.arange(n) % k)})
    age = rng.uniform(20, 80, n)
    sex = dict(zip(ids, rng.choice(["F", "M"], n)))
    x = pd.DataFrame(np.c_[age + rng.normal(0, 5, n), rng.normal(size=(n, 3))], index=ids)
    arms = {a: (lambda a=a: Spy(a), x + i) for i, a in enumerate(["a", "b", "c"])}
    return folds, dict(zip(ids, age)), sex, arms


def test_subsets_are_nested_sized_and_stratified_by_age_and_sex():
    rng = np.random.default_rng(1)
    ids = [f"t{i:03d}" for i in range(110)]
    age = rng.uniform(20, 86, len(ids))
    sex = rng.choice(["F", "M"], len(ids))
    subsets = curves.nested_subsets(ids, age, FRACTIONS, seed=3, sex=sex)
    sets = [set(subsets[f]) for f in FRACTIONS]
    assert [len(s) for s in sets] == [round(f * 110) for f in FRACTIONS]
    assert all(small < big for small, big in zip(sets, sets[1:]))  # nested, strictly growing
    assert sets[-1] == set(ids)
    edges = np.quantile(age, [0.2, 0.4, 0.6, 0.8])
    stratum = [f"{b}_{s}" for b, s in zip(np.searchsorted(edges, age, side="right"), sex)]
    of = dict(zip(ids, stratum))
    for f in FRACTIONS[:-1]:  # each stratum in proportion to its size, within one subject
        for s in set(stratum):
            want = f * stratum.count(s)
            got = sum(of[i] == s for i in subsets[f])
            assert abs(got - want) <= 1, (f, s, got, want)
    again = curves.nested_subsets(ids, age, FRACTIONS, seed=3, sex=sex)
    other = curves.nested_subsets(ids, age, FRACTIONS, seed=4, sex=sex)
    assert again == subsets and set(other[0.25]) != set(subsets[0.25])


def test_subsets_refuse_bad_fractions_and_missing_ages():
    ids, age = ["a", "b", "c", "d", "e", "f"], [30, 40, 50, 60, 70, 80]
    with pytest.raises(ConfigError, match="fraction 0.25 of 6 training subjects gives 2"):
        curves.nested_subsets(ids, age, [0.25])
    with pytest.raises(ConfigError, match="fraction 1.5"):
        curves.nested_subsets(ids, age, [1.5])
    with pytest.raises(DataError, match=r"\['c'\] have no age"):
        curves.nested_subsets(ids, [30, 40, np.nan, 60, 70, 80], [1.0])


def test_every_arm_at_a_point_is_fitted_on_the_same_ids_never_the_held_out_fold():
    folds, targets, sex, arms = _problem()
    Spy.log = []
    pred, subsets = curves.learning_curve(folds, targets, arms, FRACTIONS, (0, 1), sex)
    # 3 folds x (2 seeds x 3 fractions + the full set once) points, 3 arms each
    assert len(subsets) == 3 * (2 * 3 + 1) and len(Spy.log) == 3 * len(subsets)
    fits = iter(Spy.log)
    for point, ids in subsets.items():  # the arms fit in order, point after point
        fitted = [next(fits) for _ in arms]
        assert [a for a, _ in fitted] == list(arms)
        assert all(s == frozenset(ids) for _, s in fitted)  # identical training ids
        k = int(point.split("/")[0].removeprefix("fold"))
        held_out = set(folds.loc[folds["fold"] == k, "participant_id"])
        assert not held_out & set(ids)
        assert set(ids) <= set(folds.loc[folds["fold"] != k, "participant_id"])
    for (_, k, s, f), g in pred.groupby(["arm", "fold", "subset_seed", "fraction"]):
        # each point predicts its whole held-out fold, with its own training-set size
        assert set(g["participant_id"]) == set(folds.loc[folds["fold"] == k, "participant_id"])
        assert (g["n_train"] == len(subsets[f"fold{k}/seed{s}/{f:g}"])).all()
    assert set(pred.loc[pred["fraction"] == 1.0, "subset_seed"]) == {0}  # fitted once
    assert list(pred.columns) == curves.PREDICTION_COLUMNS


def test_summary_matches_a_direct_computation_and_the_crossing_is_interpolated():
    folds, targets, sex, arms = _problem()
    pred, _ = curves.learning_curve(folds, targets, arms, (0.5, 1.0), (0, 1), sex)
    summary, paired = curves.summarise_curve(pred, reference="a", n_boot=200)
    err = pred.assign(e=(pred["prediction"] - pred["target"]).abs())
    per_subject = err.groupby(["arm", "fraction", "participant_id"])["e"].mean()
    for r in summary.itertuples():
        direct = per_subject.loc[(r.arm, r.fraction)]
        assert r.mae == pytest.approx(direct.mean()) and r.n == len(folds)
        assert r.mae_lo < r.mae < r.mae_hi
        seeds = err[(err["arm"] == r.arm) & (err["fraction"] == r.fraction)]
        assert r.n_seeds == seeds["subset_seed"].nunique()
    for r in paired.itertuples():
        direct = per_subject.loc[(r.arm, r.fraction)] - per_subject.loc[("a", r.fraction)]
        assert r.diff == pytest.approx(direct.mean()) and r.reference == "a"
    # an arm fitted on one subset seed is paired with the reference on that seed's subsets only
    one = pred[(pred["arm"] == "b") & (pred["subset_seed"] == 0)].assign(arm="deep")
    _, paired = curves.summarise_curve(pd.concat([pred, one]), reference="a", n_boot=50)
    seed0 = err[err["subset_seed"] == 0].groupby(["arm", "fraction", "participant_id"])["e"].mean()
    for r in paired[paired["arm"] == "deep"].itertuples():
        direct = seed0.loc[("b", r.fraction)] - seed0.loc[("a", r.fraction)]
        assert r.diff == pytest.approx(direct.mean()) and r.subset_seeds == "0"
    fake = pd.DataFrame(
        dict(arm=["p", "p", "q", "q"], fraction=[0.5, 1.0] * 2, n_train=[20.0, 40.0] * 2,
             mae=[10.0, 6.0, 8.0, 7.0])
    )  # fmt: skip
    cross = curves.crossing(fake, "p", "q")
    assert cross["crosses"] and cross["n_train"] == [pytest.approx(20 + 20 * 2 / 3)]
    assert cross["sign"] == [1, -1]
    apart = curves.crossing(fake.assign(mae=[5.0, 4.0, 8.0, 7.0]), "p", "q")
    assert not apart["crosses"] and "do not cross" in apart["text"]


def test_extra_rows_must_use_the_same_folds_and_points(tmp_path):
    folds, targets, sex, arms = _problem()
    pred, subsets = curves.learning_curve(folds, targets, {"a": arms["a"]}, (0.5, 1.0), (0,))
    good = pred.assign(arm="deep")
    good.to_csv(tmp_path / "good.csv", index=False)
    back = curves.read_extra(tmp_path / "good.csv", folds, subsets)
    assert len(back) == len(good) and set(back["arm"]) == {"deep"}
    good.assign(subset_seed=7).to_csv(tmp_path / "seed.csv", index=False)
    with pytest.raises(DataError, match="not a point of subsets.json"):
        curves.read_extra(tmp_path / "seed.csv", folds, subsets)
    moved = good.copy()
    moved.loc[0, "fold"] = (moved.loc[0, "fold"] + 1) % 3
    moved.to_csv(tmp_path / "fold.csv", index=False)
    with pytest.raises(DataError, match="use the same folds"):
        curves.read_extra(tmp_path / "fold.csv", folds, subsets)


def test_figure_labels_its_axes_marks_the_crossing_and_lists_unmeasured_arms():
    summary = pd.DataFrame(
        dict(arm=["ridge_frozen_imagenet"] * 2 + ["ridge_roi"] * 2, fraction=[0.5, 1.0] * 2,
             n_train=[20.0, 40.0] * 2, mae=[10.0, 6.0, 8.0, 7.0], mae_lo=[9.0, 5.0, 7.0, 6.0],
             mae_hi=[11.0, 7.0, 9.0, 8.0])
    )  # fmt: skip
    cross = curves.crossing(summary, "ridge_frozen_imagenet", "ridge_roi")
    fig = curves.plot_curve(summary, cross, ["sfcn"])
    ax = fig.axes[0]
    assert "years" in ax.get_ylabel() and "training subjects" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert curves.LABELS["ridge_roi"] in legend and "SFCN (3D CNN): not measured" in legend
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [
        pytest.approx(cross["n_train"][0])
    ]
    assert cross["text"] in [" ".join(t.get_text().split()) for t in ax.texts]  # wrapped


def test_rows_of_an_arm_fitted_elsewhere_are_added_without_refitting(tmp_path):
    folds, targets, sex, arms = _problem()
    named = {"ridge_roi": arms["a"], "ridge_frozen_imagenet": arms["b"]}
    pred, subsets = curves.learning_curve(folds, targets, named, (0.5, 1.0), (0,), sex)
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    out.mkdir()
    pred.to_csv(out / "predictions.csv.gz", index=False)
    (out / "subsets.json").write_text(json.dumps(subsets))
    pred[pred["arm"] == "ridge_roi"].assign(arm="sfcn").to_csv(tmp_path / "x.csv", index=False)
    fine = pred[pred["arm"] == "ridge_frozen_imagenet"].assign(arm="finetune_imagenet")
    fine.to_csv(tmp_path / "y.csv", index=False)
    Spy.log = []
    summary, paired = curves.run_curve(
        tmp_path, out, folds=tmp_path / "folds.tsv", extra=[tmp_path / "x.csv", tmp_path / "y.csv"],
        n_boot=100, progress=False, refit=False,
    )  # fmt: skip
    assert Spy.log == []  # nothing refitted
    assert set(summary["arm"]) == {
        "ridge_roi",
        "ridge_frozen_imagenet",
        "sfcn",
        "finetune_imagenet",
    }
    # the crossings with the regional ridge of both ImageNet slice models
    cross = json.loads((out / "crossing.json").read_text())
    assert set(cross) == {"ridge_frozen_imagenet", "finetune_imagenet"}
    assert cross["finetune_imagenet"]["sign"] == cross["ridge_frozen_imagenet"]["sign"]
    assert (paired.loc[paired["arm"] == "sfcn", "diff"] == 0).all()  # the same rows as the ridge
    for name in ("summary.csv", "paired.csv", "crossing.json", "learning_curve.png"):
        assert (out / name).stat().st_size > 0


def test_the_shipped_tables_are_the_shipped_summary():
    """Every MAE [CI] of the learning-curve tables (docs/results.md, the results README) is
    summary.csv's, not typed by hand; a point an arm lacks reads "not measured"."""
    summary = pd.read_csv(SHIPPED / "summary.csv")
    fractions = sorted(set(summary["fraction"]))
    rows = {
        "ridge_frozen_imagenet": "ridge on frozen ImageNet",
        "ridge_roi": "ridge on the log regional volumes",
        "ridge_voxels": "ridge on ",  # 'registered voxels' / 'block-averaged registered voxels'
        "ridge_frozen_random": "ridge on frozen random",
        "finetune_imagenet": "fine-tuned ImageNet slice model",
        "finetune_scratch": "fine-tuned scratch slice model",
    }
    docs = (ROOT / "docs" / "results.md").read_text().split("## Learning curve")[1]
    for text in (docs.split("\n## ")[0], (SHIPPED / "README.md").read_text()):
        lines = [line for line in text.splitlines() if line.startswith(("| ridge on ", "| fine-"))]
        for arm, start in rows.items():
            g = summary[summary["arm"] == arm].set_index("fraction")
            cells = [
                f"{g.at[f, 'mae']:.2f} [{g.at[f, 'mae_lo']:.2f}, {g.at[f, 'mae_hi']:.2f}]"
                if f in g.index
                else "not measured"
                for f in fractions
            ]
            want = " | ".join(cells)
            hits = [line for line in lines if line.startswith(f"| {start}") and want in line]
            assert len(hits) == 1, f"no single row of {arm} with {want}"


def test_the_readme_sentence_on_the_fine_tuned_curve_is_the_shipped_summary():
    summary = pd.read_csv(SHIPPED / "summary.csv").set_index(["arm", "fraction"])
    paired = pd.read_csv(SHIPPED / "paired.csv").set_index(["arm", "fraction"])
    cross = json.loads((SHIPPED / "crossing.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    fine = summary.loc["finetune_imagenet"]
    p = paired.loc[("finetune_imagenet", 0.25)]
    for text in (
        f"{fine.at[0.25, 'mae']:.2f} years with {fine.at[0.25, 'n_train']:.0f} training subjects",
        f"{fine.at[1.0, 'mae']:.2f} with {fine.at[1.0, 'n_train']:.0f}",
        f"+{p['diff']:.2f} years, CI [{p['diff_lo']:+.2f}, {p['diff_hi']:+.2f}]",
        f"until about {round(cross['finetune_imagenet']['n_train'][0], -1):.0f} subjects",
        f"crosses that ridge at about {cross['ridge_frozen_imagenet']['n_train'][0]:.0f}",
    ):
        assert text in readme, text
