"""Tests of slicelib.explain: exactness of embedding occlusion, gradients, helpers, and the
check that a model trained on a planted AD effect puts its occlusion importance on that effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from slicelib import explain as E
from slicelib.model import AXES, SliceModel

torch.set_num_threads(1)

SMALL = (18, 20, 18)  # smallest grid the paper's slice_cnn (5 max-pools) accepts


def _volumes(n=2, shape=SMALL, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, *shape, generator=g)
    x[:, :, :2] = x.min()  # some background, as in real volumes
    return x


def _brute_force_occlusion(model, x, baseline, target=None, score="logit"):
    """Blank each slice in the volume itself and re-run the whole model: (B, S)."""
    (axis_name,) = model.axes
    a = AXES[axis_name]
    model.eval()
    with torch.no_grad():
        raw = model(x)
        tgt = E._targets(model, raw, target)
        base = E._score(model, raw, tgt, score)
        fill = E.baseline_values(x, baseline)  # (B,)
        cols = []
        for s in range(x.shape[2 + a]):
            xo = x.clone()
            index = [slice(None)] * 5
            index[2 + a] = s
            xo[tuple(index)] = fill[:, None, None, None]
            cols.append(base - E._score(model, model(xo), tgt, score))
    return torch.stack(cols, 1).numpy()


CASES = [
    # backbone, position, pooling, axes, task
    ("slice_cnn", "learned", "attention", "sagittal", "regression"),
    ("slice_cnn", "sinusoidal", "mean", "axial", "binary"),
    ("slice_cnn", "none", "max", "coronal", "multiclass"),
    ("resnet18", "learned", "gated_attention", "axial", "binary"),
]


@pytest.mark.parametrize("backbone,position,pooling,axes,task", CASES)
def test_occlusion_on_embeddings_equals_brute_force(backbone, position, pooling, axes, task):
    model = SliceModel(
        backbone,
        embed_dim=8,
        position=position,
        pooling=pooling,
        axes=axes,
        task=task,
        num_classes=3 if task == "multiclass" else None,
        volume_shape=SMALL,
        target_mean=50.0 if task == "regression" else None,
        seed=0,
    )
    model.train()  # the functions switch to eval themselves and restore this
    x = _volumes()
    for baseline, score in [("background", "logit"), (0.5, "probability")]:
        if (task == "regression" and score == "probability") or (
            backbone != "slice_cnn" and score == "probability"
        ):
            continue  # regression has no probability; one pass is enough for the slow resnet18
        fast = E.occlusion_importance(model, x, baseline, signed=True, score=score, batch_size=7)
        assert model.training
        slow = _brute_force_occlusion(model, x, baseline, score=score)
        if task == "regression":  # the intact output is the model's prediction, in its units
            with torch.no_grad():
                np.testing.assert_allclose(fast.output, model(x).numpy(), rtol=1e-5)
        model.train()
        assert fast.values.shape == (2, SMALL[AXES[axes]])
        np.testing.assert_allclose(fast.values, slow, atol=2e-5, rtol=1e-4)
        assert fast.method == "occlusion" and fast.axes == (axes,)
        np.testing.assert_array_equal(fast.slice_index, np.arange(SMALL[AXES[axes]]))
        unsigned = E.occlusion_importance(model, x, baseline, score=score)
        np.testing.assert_allclose(unsigned.values, np.abs(fast.values), atol=1e-6)


def test_occlusion_explains_a_given_class():
    model = SliceModel(
        "slice_cnn", embed_dim=8, position="none", task="binary", volume_shape=SMALL, seed=0
    )
    x = _volumes()
    r1 = E.occlusion_importance(model, x, signed=True, target=1)
    r0 = E.occlusion_importance(model, x, signed=True, target=[0, 0])
    np.testing.assert_allclose(r0.values, -r1.values, atol=1e-6)  # class 0 has logit -z
    np.testing.assert_array_equal(r1.target, [1, 1])


def test_attention_weights_are_the_models_and_sum_to_one():
    model = SliceModel(
        "slice_cnn",
        embed_dim=8,
        position="learned",
        pooling="attention",
        axes=("sagittal", "axial"),
        volume_shape=SMALL,
        seed=0,
    )
    x = _volumes()
    r = E.attention_importance(model, x)
    assert model.training  # restored
    assert r.values.shape == (2, SMALL[0] + SMALL[2])
    np.testing.assert_allclose(r.values.sum(1), 1.0, atol=1e-5)
    assert r.axes == ("sagittal", "axial")
    assert r.for_axis("axial").shape == (2, SMALL[2])
    assert r.profile("sagittal").shape == (SMALL[0],)
    with pytest.raises(ValueError, match="several axes"):
        r.profile()
    model.eval()
    with torch.no_grad():
        d = model(x, return_details=True)
    np.testing.assert_allclose(r.values, d["slice_weights"].numpy(), atol=1e-6)
    # one volume without batch or channel dimensions is accepted
    assert E.attention_importance(model, x[0, 0]).values.shape == (1, SMALL[0] + SMALL[2])


class _IgnoreSlice(nn.Module):
    """Pooling wrapper that makes slice ``k`` invisible to the model (its embedding is zeroed)."""

    def __init__(self, pool: nn.Module, k: int):
        super().__init__()
        self.pool, self.k = pool, k

    def forward(self, h):
        mask = torch.ones(h.shape[1], 1, device=h.device)
        mask[self.k] = 0
        return self.pool(h * mask)


@pytest.mark.parametrize("method", ["grad_x_input", "integrated_gradients"])
def test_gradient_importance_shapes_and_zero_for_an_unseen_slice(method):
    model = SliceModel(
        "slice_cnn",
        embed_dim=8,
        position="sinusoidal",
        norm="slice",  # slices stay independent up to the pooling ("set" mixes them)
        axes="sagittal",
        volume_shape=SMALL,
        seed=0,
    )
    k = 7
    model.pool = _IgnoreSlice(model.pool, k)
    x = _volumes()
    r = E.gradient_importance(model, x, method, steps=4, return_map=True)
    assert r.values.shape == (2, SMALL[0]) and r.method == method
    assert r.extra["map"].shape == (2, *SMALL)
    assert r.values[:, k].max() == 0.0  # the model cannot see slice k
    assert r.values[:, :2].max() == 0.0  # background slices equal the baseline: x - x0 = 0
    assert (r.values[:, 2:k] > 0).all() and (r.values[:, k + 1 :] > 0).all()
    occ = E.occlusion_importance(model, x)
    assert occ.values[:, k].max() < 1e-6
    # the voxel map summed per slice is the per-slice value
    np.testing.assert_allclose(np.abs(r.extra["map"].sum((2, 3))), r.values, rtol=1e-6)
    assert model.training


def test_grad_x_input_matches_autograd():
    model = SliceModel(
        "slice_cnn", embed_dim=8, position="none", task="regression", volume_shape=SMALL, seed=0
    ).eval()
    x = _volumes(1)
    vox, out = E.gradient_map(model, x, "grad_x_input", baseline=0.0)
    assert all(p.grad is None for p in model.parameters())  # parameters' grads untouched
    xi = x.clone().requires_grad_(True)
    model(xi).sum().backward()
    np.testing.assert_allclose(vox, (xi.grad * x)[:, 0].numpy(), rtol=1e-5, atol=1e-8)
    assert out.shape == (1,)


def test_integrated_gradients_single_step_is_midpoint_gradient():
    model = SliceModel("slice_cnn", embed_dim=8, position="none", volume_shape=SMALL, seed=0).eval()
    x = _volumes(1)
    x0 = x.min()
    vox, _ = E.gradient_map(model, x, "integrated_gradients", steps=1)
    xm = (x0 + 0.5 * (x - x0)).requires_grad_(True)
    model(xm).sum().backward()
    np.testing.assert_allclose(vox, ((x - x0) * xm.grad)[:, 0].numpy(), rtol=1e-5, atol=1e-8)


def test_all_importances_returns_the_three_methods():
    model = SliceModel("slice_cnn", embed_dim=8, position="none", volume_shape=SMALL, seed=0)
    res = E.all_importances(model, _volumes(), steps=2)
    assert set(res) == {"attention", "occlusion", "integrated_gradients"}
    assert all(r.values.shape == (2, SMALL[0]) for r in res.values())


# --- helpers ------------------------------------------------------------------------------


def _result(values, axes=("sagittal",), sizes=None):
    sizes = sizes or [np.asarray(values).shape[1]]
    idx = np.concatenate([np.arange(n) for n in sizes])
    ax = np.concatenate([np.full(n, AXES[a]) for a, n in zip(axes, sizes)])
    return E.SliceImportance(np.asarray(values, float), idx, ax, tuple(axes), "test")


def test_to_volume_paints_the_right_slices():
    r = _result([[0.0, 1.0, 3.0], [0.0, 3.0, 1.0]], axes=("coronal",))
    vol = E.to_volume(r, (2, 3, 4))
    assert vol.shape == (2, 3, 4)
    np.testing.assert_allclose(vol[:, 0], 0.0)
    np.testing.assert_allclose(vol[:, 1], 2.0)  # batch mean
    np.testing.assert_allclose(vol[:, 2], 2.0)
    np.testing.assert_allclose(E.to_volume(r, (2, 3, 4), sample=1)[:, 1], 3.0)
    axial = E.to_volume(np.array([1.0, 2.0, 5.0, 0.0]), (2, 3, 4), axis="axial")
    np.testing.assert_allclose(axial[1, 2], [1.0, 2.0, 5.0, 0.0])
    with pytest.raises(ValueError, match="3 coronal slices"):
        E.to_volume(np.zeros(3), (2, 4, 4), axis="coronal")


def test_profiles_of_a_multi_axis_result_follow_slice_index():
    vals = np.array([[1.0, 2.0, 10.0, 20.0, 30.0]])
    r = _result(vals, axes=("sagittal", "axial"), sizes=[2, 3])
    r.slice_index = np.array([1, 0, 2, 1, 0])  # stored out of order
    np.testing.assert_allclose(E.importance_profile(r, "sagittal"), [2.0, 1.0])
    np.testing.assert_allclose(E.importance_profile(r, "axial", normalise="max"), [1, 2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="not 'coronal'"):
        E.importance_profile(r, "coronal")


def test_ground_truth_profile_and_correlation():
    eff = np.zeros((4, 5, 6))
    eff[2, 1, 3] = -2.0
    eff[3, 0, 0] = 1.0
    np.testing.assert_allclose(E.ground_truth_profile(eff, "sagittal"), [0, 0, 2, 1])
    np.testing.assert_allclose(
        E.ground_truth_profile(eff, 2, normalise="sum"), [1 / 3, 0, 0, 2 / 3, 0, 0]
    )
    a = np.array([0.0, 1.0, 3.0, 2.0])
    assert E.profile_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert E.profile_correlation(a, -a) == pytest.approx(-1.0)
    assert E.profile_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert np.isnan(E.profile_correlation(a, np.ones(4)))
    with pytest.raises(ValueError, match="length"):
        E.profile_correlation(a, a[:3])


@pytest.mark.parametrize(
    "position,norm,names",
    [
        ("learned", "set", {"position", "norm.weight", "norm.bias"}),
        ("sinusoidal", "slice", {"position"}),
        ("none", "set", {"norm.weight", "norm.bias"}),
        ("none", "none", set()),
    ],
)
def test_per_slice_parameters_are_the_models_rows_per_axis(position, norm, names):
    axes = ("sagittal", "axial")
    model = SliceModel(
        "slice_cnn", embed_dim=8, position=position, norm=norm, axes=axes, volume_shape=SMALL
    )
    with torch.no_grad():
        for p in model.norm.parameters():
            p.copy_(torch.randn_like(p))  # LayerNorm starts at weight 1, bias 0: make rows differ
    for axis in axes:
        params = E.per_slice_parameters(model, axis)
        assert set(params) == names
        assert all(v.shape == (SMALL[AXES[axis]], 8) for v in params.values())
    axial = E.per_slice_parameters(model, "axial")
    if "norm.weight" in names:  # the set's rows: sagittal slices first, then axial
        np.testing.assert_array_equal(axial["norm.bias"], model.norm.bias[SMALL[0] :].detach())
    if position == "learned":
        np.testing.assert_array_equal(axial["position"], model.pos["axial"].table.detach())
    with pytest.raises(ValueError, match="coronal"):
        E.per_slice_parameters(model, "coronal")


def test_slice_coordinates_on_the_mni_grid():
    from slicelib.data import MNI_2MM_AFFINE

    np.testing.assert_allclose(
        E.slice_coordinates(MNI_2MM_AFFINE, "sagittal", 91)[[0, 45]], [-90, 0]
    )
    np.testing.assert_allclose(E.slice_coordinates(MNI_2MM_AFFINE, "axial", 91)[36], 0.0)


def test_resample_to_grid_keeps_a_blob_at_its_mm_position(tmp_path):
    """A blob at (x, y, z) mm on a 2 mm grid lands at the same mm position on a 4 mm grid."""
    import nibabel as nib

    from slicelib.data import MNI_2MM_AFFINE, target_affine

    data = np.zeros((91, 109, 91))
    data[60:64, 40:44, 20:24] = 1.0  # 8 mm cube
    centre_mm = (MNI_2MM_AFFINE @ [61.5, 41.5, 21.5, 1])[:3]
    nib.save(nib.Nifti1Image(data, MNI_2MM_AFFINE), tmp_path / "blob.nii.gz")
    shape, affine = (45, 54, 45), target_affine((45, 54, 45), 4.0)
    for img in (tmp_path / "blob.nii.gz", str(tmp_path / "blob.nii.gz")):
        out = E.resample_to_grid(img, affine, shape, "linear")
        assert out.shape == shape and out.max() > 0.5
        peak_mm = (affine @ [*np.argwhere(out > 0.5).mean(axis=0), 1])[:3]
        np.testing.assert_allclose(peak_mm, centre_mm, atol=2.0)
    same = E.resample_to_grid(nib.load(tmp_path / "blob.nii.gz"), MNI_2MM_AFFINE, (91, 109, 91))
    np.testing.assert_allclose(same, data, atol=1e-6)


def test_profile_table_compares_methods_with_references():
    truth = np.array([0.0, 1.0, 4.0, 2.0, 0.0, 0.0])
    brain = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])
    band = truth > 0.05 * truth.max()  # slices 1-3
    occ = E.SliceImportance(
        np.stack([2 * truth, 2 * truth + 2]), np.arange(6), np.full(6, 2), ("axial",), "occlusion"
    )  # mean over the batch: 2 * truth + 1
    results = {"occlusion": occ, "flat": np.ones(6), "brain-like": brain}
    coords = E.slice_coordinates(np.diag([4.0, 4.0, 4.0, 1.0]), "axial", 6) - 10
    t = E.profile_table(results, {"AD": truth, "brain": brain}, band=band, coords=coords)
    assert list(t.index) == ["occlusion", "flat", "brain-like", "flat profile (reference)"]
    assert t.loc["occlusion", "r with AD"] == pytest.approx(1.0)
    assert t.loc["brain-like", "r with brain"] == pytest.approx(1.0)
    assert np.isnan(t.loc["flat", "r with AD"])  # a constant profile has no correlation
    assert t.loc["occlusion", "peak slice"] == 2 and t.loc["occlusion", "peak (mm)"] == -2.0
    p = 2 * truth + 1
    assert t.loc["occlusion", "share in band"] == pytest.approx(p[band].sum() / p.sum())
    assert t.loc["flat", "share in band"] == pytest.approx(0.5)
    assert t.loc["flat profile (reference)", "share in band"] == pytest.approx(0.5)
    plain = E.profile_table({"occlusion": occ}, {"AD": truth})
    assert list(plain.columns) == ["r with AD", "peak slice"]
    with pytest.raises(ValueError, match="5"):
        E.profile_table({"occlusion": occ}, {"short": truth[:5]})


# --- the key test: occlusion finds a planted AD effect ------------------------------------

# An exaggerated, age-matched version of the synthetic cohort's AD effect (medial temporal
# atrophy: grey-matter loss + widened temporal horn), so a tiny model learns it in seconds.
STRONG_AD = dict(ad_loss=(0.8, 0.9), ad_horn_mm=8.0, age_range=(65.0, 75.0), ad_prevalence=0.5)


def _synth_cohort(n: int, seed: int):
    """``n`` subjects of ``slicelib.synth`` (STRONG_AD), made in memory and reduced to 8 mm.

    Returns volumes (n, 1, 23, 27, 23) z-scored per subject and labels (n,) (1 = AD).
    """
    from slicelib import synth

    params = synth.SynthParams(**STRONG_AD)
    vols, labels = [], []
    for i in range(n):
        v, info = synth.synth_subject(seed, i, params)  # (91, 109, 91), 2 mm
        v = ndi.zoom(v, 0.25, order=1)  # 8 mm: (23, 27, 23)
        vols.append((v - v.mean()) / v.std())
        labels.append(info["ad"])
    x = torch.tensor(np.stack(vols), dtype=torch.float32)[:, None]
    return x, torch.tensor(labels, dtype=torch.float32)


def _tiny_slice_model(shape, axes, seed=0, pooling="mean"):
    """A SliceModel whose 2D encoder is swapped for a 2-layer CNN, so training takes seconds.

    Everything the explanation methods touch (slicing, projection, position, pooling, head) is
    the real SliceModel; only the ImageNet-sized encoder is replaced to fit a unit test.
    """
    model = SliceModel(
        "slice_cnn",
        embed_dim=16,
        position="none",
        norm="none",
        pooling=pooling,
        axes=axes,
        task="binary",
        volume_shape=shape,
        seed=seed,
    )
    torch.manual_seed(seed)
    model.encoder = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 32, 3, padding=1),  # 32 features: what model.project expects
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    )
    return model


def _fit(model, x, y, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):  # full batch: deterministic and quick
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_occlusion_peaks_in_the_planted_ad_band():
    """Train on the synthetic AD task; occlusion importance must peak where AD was planted."""
    from sklearn.metrics import roc_auc_score

    from slicelib import synth

    x, y = _synth_cohort(32, seed=0)
    x_test, y_test = _synth_cohort(12, seed=1)
    model = _tiny_slice_model(tuple(x.shape[2:]), "axial")
    loss = _fit(model, x, y, steps=40, lr=1e-2)
    model.eval()
    with torch.no_grad():
        auc = roc_auc_score(y_test.numpy(), model(x_test).numpy())
    assert auc >= 0.8, f"the model did not learn the AD task (train loss {loss:.3f}, AUC {auc})"

    effect = ndi.zoom(synth.effect_maps(synth.SynthParams(**STRONG_AD))["ad_effect"], 0.25, order=1)
    truth = E.ground_truth_profile(effect, "axial")
    band = np.flatnonzero(truth > 0.05 * truth.max())  # axial slices holding the AD effect
    assert 1 <= len(band) <= 5 and band.max() < len(truth) // 2  # a narrow, inferior band

    ad = x_test[y_test == 1]
    profile = E.occlusion_importance(model, ad).profile("axial")
    peak = int(profile.argmax())
    assert band.min() <= peak <= band.max(), f"peak at slice {peak}, band {band}, {profile}"
    inside, outside = profile[band].mean(), np.delete(profile, band).mean()
    assert inside > 1.5 * outside, (inside, outside)
    assert E.profile_correlation(profile, truth) > 0.5
