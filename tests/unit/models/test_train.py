"""Training writes a verifiable artifact; load_model refuses a changed file, a manifest
that does not match the code, and a directory that is not an artifact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from models.features import FEATURE_NAMES
from models.train import SHIPPED_ARTIFACT as SHIPPED
from models.train import ModelArtifactError, bounded_sample, load_model, train_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, small_history, small_features):
    out = tmp_path_factory.mktemp("art")
    manifest = train_artifact(small_history, small_features, out, feedback_delay_days=7, algo="hgb")
    return out, manifest


def test_artifact_manifest_and_load(artifact, small_features):
    out, manifest = artifact
    assert manifest["features"] == list(FEATURE_NAMES)
    assert manifest["training_window"]["to"] == manifest["test_window"]["from"]
    assert 0.5 < manifest["metrics"]["hgb"]["auc"] <= 1.0
    loaded = load_model(out)
    assert loaded.version == manifest["model_version"]
    scores = loaded.score(small_features[:50])
    assert ((scores >= 0) & (scores <= 1)).all()


def test_changed_model_file_refuses_to_load(artifact, tmp_path):
    out, _ = artifact
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    with open(bad / "model.pkl", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ModelArtifactError, match="sha256 .* does not match"):
        load_model(bad)


def test_feature_list_mismatch_refuses_to_load(artifact, tmp_path):
    out, _ = artifact
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["features"] = m["features"][:-1]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelArtifactError, match="retrain"):
        load_model(bad)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ModelArtifactError, match="not a model artifact"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="unreadable"):
        load_model(tmp_path)


def test_shipped_artifact_verifies_and_is_small():
    loaded = load_model(SHIPPED)
    assert loaded.manifest["algo"] in ("hgb", "rf")
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 2_000_000


def test_bounded_sample_keeps_every_positive():
    y = np.zeros(1000, dtype=np.int8)
    y[::50] = 1
    idx = bounded_sample(y, max_rows=100, seed=1)
    assert len(idx) == 100 and y[idx].sum() == 20
    assert (np.diff(idx) > 0).all()
    assert (bounded_sample(y, max_rows=100, seed=1) == idx).all()


def test_shipped_methods_artifact_verifies_and_is_bounded():
    from models.features import METHODS_MODEL_FEATURES
    from models.train import SHIPPED_METHODS_ARTIFACT

    loaded = load_model(SHIPPED_METHODS_ARTIFACT, METHODS_MODEL_FEATURES)
    assert loaded.manifest["design"] in ("shared", "per_method") and loaded.manifest["seed"] == 0
    assert sum(p.stat().st_size for p in SHIPPED_METHODS_ARTIFACT.iterdir()) < 3_000_000
