"""ImageNet weight handling: offline lookup, clear errors, loading into the flat model, fetch.

No network: the "ImageNet" file is written from a randomly initialized VGG19 of the same
shape, in the Keras 2 weights-only HDF5 layout that the real notop files have.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from core.learning.models import ModelSpec, ModelSpecError, build_model
from core.learning.weights import (
    FETCH_COMMAND,
    WEIGHT_FILES,
    WEIGHT_MD5,
    WEIGHT_URLS,
    WeightsUnavailableError,
    fetch_all,
    keras_cache_dir,
    resolve_weights,
)

SIZE = (32, 32)
KERAS_SOURCES = {
    "vgg19": "keras.src.applications.vgg19",
    "resnet50": "keras.src.applications.resnet",
    "densenet121": "keras.src.applications.densenet",
}


@pytest.fixture(scope="module")
def reference() -> keras.Model:
    """A VGG19 notop backbone with its own random weights, standing in for ImageNet."""
    keras.utils.set_random_seed(7)
    return keras.applications.VGG19(include_top=False, weights=None, input_shape=(*SIZE, 3))


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _write_keras2_weights_file(model: keras.Model, path: Path) -> None:
    """Weights-only legacy HDF5 (``layer_names`` at the root), as Keras 2 ``save_weights`` wrote.

    Keras 3 writes legacy HDF5 only inside a whole-model ``.h5``; copy its weights group out.
    """
    full = path.with_name("full_model.h5")
    model.save(full)
    with h5py.File(full, "r") as src, h5py.File(path, "w") as dst:
        weights = src["model_weights"]
        for key, value in weights.attrs.items():
            dst.attrs[key] = value
        for name in weights:
            src.copy(weights[name], dst, name=name)
    full.unlink()


def _assert_backbone_weights_equal(model: keras.Model, reference: keras.Model) -> None:
    checked = 0
    for layer in (layer for layer in reference.layers if layer.weights):
        for want, got in zip(
            layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, want)
            checked += 1
    assert checked == 32  # 16 conv layers × (kernel, bias)


@pytest.mark.parametrize("arch", list(WEIGHT_FILES))
def test_file_names_urls_and_hashes_match_installed_keras(arch):
    source = inspect.getsource(importlib.import_module(KERAS_SOURCES[arch]))
    name = WEIGHT_FILES[arch]
    assert name in source or name.replace(arch, "{weights_name}") in source
    assert WEIGHT_MD5[arch] in source
    assert WEIGHT_URLS[arch].endswith(f"/{name}")
    assert WEIGHT_URLS[arch].rsplit("/", 1)[0] + "/" in source.replace('"\n    "', "")


def test_cache_dir_honours_keras_home(keras_home):
    assert keras_cache_dir() == keras_home / "models"


def test_cache_dir_defaults_to_home_dot_keras(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keras_cache_dir() == tmp_path / ".keras" / "models"


@pytest.mark.parametrize("choice", ["none", "None", " NONE "])
def test_none_means_random_initialization(choice):
    assert resolve_weights("vgg19", choice) is None


@pytest.mark.parametrize("arch", list(WEIGHT_FILES))
def test_missing_imagenet_weights_say_which_file_where_and_how(keras_home, arch):
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(arch, "imagenet")
    message = str(info.value)
    assert WEIGHT_FILES[arch] in message
    assert str(keras_home / "models") in message
    assert FETCH_COMMAND in message
    assert WEIGHT_URLS[arch] in message


def test_build_fails_fast_without_cached_weights(keras_home):
    with pytest.raises(WeightsUnavailableError, match=FETCH_COMMAND):
        build_model(ModelSpec("resnet50", SIZE, weights="imagenet"))


def test_cached_imagenet_file_is_found(keras_home):
    path = keras_home / "models" / WEIGHT_FILES["densenet121"]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"placeholder")
    assert resolve_weights("densenet121", "imagenet") == str(path)


def test_weights_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights("vgg19", str(tmp_path / "missing.h5"))
    text_file = tmp_path / "weights.txt"
    text_file.write_text("not weights")
    with pytest.raises(ValueError, match="HDF5"):
        resolve_weights("vgg19", str(text_file))
    with pytest.raises(ValueError, match="empty"):
        resolve_weights("vgg19", "  ")
    with pytest.raises(ValueError, match="Unknown architecture"):
        resolve_weights("alexnet", "none")


def test_imagenet_weights_load_into_flat_model(reference, keras_home):
    path = keras_home / "models" / WEIGHT_FILES["vgg19"]
    path.parent.mkdir(parents=True)
    _write_keras2_weights_file(reference, path)
    keras.utils.set_random_seed(123)
    model = build_model(ModelSpec("vgg19", SIZE, channels=1, weights="imagenet"))
    _assert_backbone_weights_equal(model, reference)


def test_keras3_weights_file_path_loads(reference, tmp_path):
    path = tmp_path / "backbone.weights.h5"
    reference.save_weights(path)
    keras.utils.set_random_seed(321)
    model = build_model(ModelSpec("vgg19", SIZE, weights=str(path)))
    _assert_backbone_weights_equal(model, reference)


def test_weights_file_of_another_model_is_refused(tmp_path):
    tiny = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c")])
    path = tmp_path / "tiny.h5"
    tiny.save(path)
    with pytest.raises(ModelSpecError, match="does not fit a vgg19 backbone"):
        build_model(ModelSpec("vgg19", SIZE, weights=str(path)))


def test_fetch_all_asks_keras_for_the_three_notop_files(tmp_path, monkeypatch):
    calls = []

    def fake_get_file(fname, origin, *, cache_dir, cache_subdir, file_hash):
        calls.append((fname, origin, file_hash))
        target = Path(cache_dir) / cache_subdir / fname
        target.write_bytes(b"dummy")
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    seen = []
    dest = tmp_path / "download"
    paths = fetch_all(dest, progress=lambda arch, path: seen.append(arch))

    assert calls == [(WEIGHT_FILES[a], WEIGHT_URLS[a], WEIGHT_MD5[a]) for a in WEIGHT_FILES]
    assert [p.name for p in paths] == list(WEIGHT_FILES.values())
    assert all(p.is_file() and p.parent.resolve() == dest.resolve() for p in paths)
    assert seen == list(WEIGHT_FILES)


def test_fetch_all_defaults_to_keras_cache(keras_home, monkeypatch):
    def fake_get_file(fname, origin, *, cache_dir, cache_subdir, file_hash):
        target = Path(cache_dir) / cache_subdir / fname
        target.write_bytes(b"dummy")
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    fetch_all()
    assert resolve_weights("resnet50", "imagenet").startswith(str(keras_home / "models"))
