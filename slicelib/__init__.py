"""slicelib: read 3D brain MRI with 2D ImageNet models, slice by slice (Gupta et al., ISBI 2023).

``model.py`` is the design card's core (slice encoder, position embeddings, normalisation,
pooling, :class:`SliceModel`); read it first. The modules are layered without cycles, bottom to
top: errors, utils, io, qc, centre, pipeline, data, cache, datasets, splits, templates, synth
(from a file on disk to a dataset); weights, encoders, model, cnn3d, build, metrics, config,
frozen, engine, train, runs, cv, explain, plotting, compare, course, cli (models, training,
using a run). docs/architecture.md says what each holds; tests/test_layering.py checks that the
imports follow it. The names below are the entry points a notebook or script needs; everything
else is importable from its module.
"""

from slicelib.cache import VolumeDataset
from slicelib.cnn3d import VolumeCNN
from slicelib.data import PreprocessConfig, load_nifti, preprocess
from slicelib.datasets import fetch_ixi, ixi_table, read_table
from slicelib.model import ModelConfig, SliceModel
from slicelib.runs import evaluate_run, load_run, predict_files
from slicelib.splits import split_subjects
from slicelib.synth import make_cohort
from slicelib.train import TrainConfig, train

__all__ = [
    "SliceModel",
    "ModelConfig",
    "VolumeCNN",
    "PreprocessConfig",
    "preprocess",
    "load_nifti",
    "VolumeDataset",
    "read_table",
    "split_subjects",
    "ixi_table",
    "fetch_ixi",
    "make_cohort",
    "TrainConfig",
    "train",
    "load_run",
    "evaluate_run",
    "predict_files",
]
__version__ = "0.2.0"
