"""``python -m core weights fetch``: ImageNet weights for the three backbones."""

from __future__ import annotations

import argparse


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from core.learning.weights import fetch_all, keras_cache_dir

    paths = fetch_all(progress=lambda arch, path: print(f"{arch}: {path}"))
    print(f"{len(paths)} weight files in {keras_cache_dir()}.")
    return 0


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``weights fetch``."""
    weights = sub.add_parser("weights", help="ImageNet weights for the three backbones")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    fetch = weights_sub.add_parser(
        "fetch", help="download the three notop weight files into the Keras cache (needs internet)"
    )
    fetch.set_defaults(handler=cmd_weights_fetch)
