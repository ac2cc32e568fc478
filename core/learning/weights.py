"""ImageNet weights for the three backbones of the study, found offline or fetched on purpose.

Yi et al. (Sci Rep 2022) fine-tuned VGG19, ResNet50 and DenseNet121 pretrained on ImageNet.
``keras.applications`` would download those weights on first use, which hangs or fails on a
hospital workstation without internet. So a build never downloads: ``resolve_weights`` looks
for the file in the Keras cache (exactly where ``keras.utils.get_file`` puts it) and fails
fast with instructions when it is missing; ``fetch_all`` downloads all three on a machine that
has internet, to be copied over.

The files are Keras 2 "legacy HDF5" weight files (``.h5``, ``layer_names`` attributes), which
Keras 3 still reads with ``Model.load_weights`` by layer order (layers without weights, such
as our preprocessing layer, are skipped). Keras 3 only *writes* that format through
``Model.save("<name>.h5")``; ``save_weights`` insists on the new ``.weights.h5`` suffix.
A weights path given by the user may be either format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

WEIGHTS_NONE: Final = "none"
WEIGHTS_IMAGENET: Final = "imagenet"

WEIGHT_FILES: Final[dict[str, str]] = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
"""File names of the include_top=False ImageNet weights, as in keras/src/applications/*.py."""

_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
WEIGHT_URLS: Final[dict[str, str]] = {
    "vgg19": f"{_BASE_URL}/vgg19/{WEIGHT_FILES['vgg19']}",
    "resnet50": f"{_BASE_URL}/resnet/{WEIGHT_FILES['resnet50']}",
    "densenet121": f"{_BASE_URL}/densenet/{WEIGHT_FILES['densenet121']}",
}
"""Where Keras itself downloads them from."""

WEIGHT_MD5: Final[dict[str, str]] = {
    "vgg19": "253f8cb515780f3b799900260a226db6",
    "resnet50": "4d473c1dd8becc155b73f8504c6f6626",
    "densenet121": "30ee3e1110167f948a6b9946edeeb738",
}
"""The MD5 hashes Keras checks after a download (same source files)."""

FETCH_COMMAND: Final = "python -m core weights fetch"


class WeightsUnavailableError(RuntimeError):
    """Requested weights are not on this machine; the message says how to put them there."""


def keras_cache_dir() -> Path:
    """The ``models/`` folder of the Keras cache, where ``keras.utils.get_file`` stores weights.

    Same rule as Keras (``keras/src/backend/config.py``): ``$KERAS_HOME`` when set, else
    ``~/.keras``, else ``/tmp/.keras`` when the home folder is not writable. Read at call time
    so that tests and the CLI can point it elsewhere.
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        user_home = Path("~").expanduser()
        base = user_home / ".keras" if os.access(user_home, os.W_OK) else Path("/tmp/.keras")
    return base / "models"


def _check_arch(arch: str) -> None:
    if arch not in WEIGHT_FILES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(WEIGHT_FILES)}.")


def missing_weights_message(arch: str) -> str:
    """Instructions for an offline machine: which file, which folder, which command."""
    _check_arch(arch)
    folder = keras_cache_dir()
    return (
        f"ImageNet weights for {arch} are not on this machine: expected the file "
        f"{WEIGHT_FILES[arch]} in the folder {folder} (full path {folder / WEIGHT_FILES[arch]}). "
        f"On a machine with internet run `{FETCH_COMMAND}` (or download {WEIGHT_URLS[arch]}) "
        f"and copy the file to that folder; set KERAS_HOME to use another cache folder. "
        f"Or choose weights 'none' to train from random initialization."
    )


def resolve_weights(arch: str, weights: str) -> str | None:
    """The weights file to load into ``arch``'s backbone, or None for random initialization.

    ``"none"`` gives None, ``"imagenet"`` the cached notop file, and anything else is taken as
    a path to a weights file that must exist. Never downloads.

    Raises:
        WeightsUnavailableError: ImageNet weights are not in the Keras cache.
        FileNotFoundError: a weights path that does not exist.
        ValueError: an unknown architecture or an empty weights setting.
    """
    _check_arch(arch)
    choice = weights.strip()
    if choice.lower() == WEIGHTS_NONE:
        return None
    if choice.lower() == WEIGHTS_IMAGENET:
        path = keras_cache_dir() / WEIGHT_FILES[arch]
        if not path.is_file():
            raise WeightsUnavailableError(missing_weights_message(arch))
        return str(path)
    if not choice:
        raise ValueError("The weights setting is empty; use 'imagenet', 'none' or a file path.")
    path = Path(choice).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"The weights file {path} does not exist. Give the path of a {arch} notop weights "
            f"file (.h5 or .weights.h5), or use 'imagenet' or 'none'."
        )
    if not path.name.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"The weights file {path} is not an HDF5 weights file (.h5, .hdf5 or .weights.h5)."
        )
    return str(path)


def imagenet_available(arch: str) -> bool:
    """Whether ``arch``'s ImageNet notop file is in the Keras cache (nothing is downloaded)."""
    _check_arch(arch)
    return (keras_cache_dir() / WEIGHT_FILES[arch]).is_file()


def user_weights_dir() -> Path:
    """``<data>/weights/``: where an admin puts weight files of their own to offer them."""
    from core.common import config

    return config.data_dir() / "weights"


def found_weight_files() -> list[Path]:
    """Weight files on this machine other than the ImageNet ones, for a picker.

    HDF5 files in ``user_weights_dir()`` and in the Keras cache (minus the three ImageNet
    notop files, which the "imagenet" choice stands for), sorted by name.
    """
    imagenet = set(WEIGHT_FILES.values())
    found: dict[str, Path] = {}
    for folder in (user_weights_dir(), keras_cache_dir()):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if (
                path.is_file()
                and path.name.endswith((".h5", ".hdf5"))
                and path.name not in imagenet
            ):
                found.setdefault(str(path.resolve()), path.resolve())
    return sorted(found.values(), key=lambda p: (p.name, str(p)))


def default_weights() -> str:
    """What a new run should start from here: ImageNet when all three files are present
    (the study), else random initialization, which always runs."""
    if all(imagenet_available(arch) for arch in WEIGHT_FILES):
        return WEIGHTS_IMAGENET
    return WEIGHTS_NONE


def missing_imagenet_note() -> str | None:
    """One sentence naming the architectures without ImageNet files and the remedy; None
    when all three are present."""
    missing = [arch for arch in WEIGHT_FILES if not imagenet_available(arch)]
    if not missing:
        return None
    return (
        f"ImageNet weights are not on this machine for {', '.join(missing)} (looked in "
        f"{keras_cache_dir()}). Runs with 'ImageNet' for these architectures will be "
        f"refused; choose 'none' (random initialization), or run `{FETCH_COMMAND}` on a "
        f"machine with internet and copy the files to that folder."
    )


def fetch_all(
    dest: Path | None = None, progress: Callable[[str, Path], None] | None = None
) -> list[Path]:
    """Download the three notop ImageNet weight files into ``dest`` (default: the Keras cache).

    For a machine with internet; copy the files to the offline workstation's
    ``keras_cache_dir()`` afterwards. Files already present with the right hash are kept.
    ``progress(arch, path)`` is called after each file.
    """
    import keras

    folder = (dest if dest is not None else keras_cache_dir()).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for arch, fname in WEIGHT_FILES.items():
        got = keras.utils.get_file(
            fname,
            WEIGHT_URLS[arch],
            cache_dir=str(folder),
            cache_subdir=".",
            file_hash=WEIGHT_MD5[arch],
        )
        path = Path(got)
        paths.append(path)
        if progress is not None:
            progress(arch, path)
    return paths
