"""``python -m core swe-preset list|set|delete``: SWE bar ranges per scanner preset.

For a server without the app open: the same range an admin enters on the Review page when
a patient's scale labels could not be read (``core.services.swe_presets``).
"""

from __future__ import annotations

import argparse

from core.services.database import open_database
from db.swe_presets import PresetKey


def _key(args: argparse.Namespace) -> PresetKey:
    from core.services.swe_presets import swe_preset_key

    return swe_preset_key(open_database(), args.patient)


def cmd_list(args: argparse.Namespace) -> int:
    from core.services.swe_presets import list_scale_presets

    presets = list_scale_presets(open_database())
    for preset in presets:
        who = preset.updated_by or "command line"
        print(
            f"{preset.key.describe()}: {preset.low:g}–{preset.high:g} {preset.units} "
            f"(set by {who}, {preset.updated_at:%Y-%m-%d %H:%M})"
        )
    if not presets:
        print("No SWE scale presets: every SWE image uses its printed labels, or relative units.")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from core.services.swe_presets import save_scale_preset

    preset = save_scale_preset(open_database(), _key(args), args.low, args.high, args.units, None)
    print(f"{preset.key.describe()}: {preset.low:g}–{preset.high:g} {preset.units}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from core.services.swe_presets import delete_scale_preset

    key = _key(args)
    removed = delete_scale_preset(open_database(), key, None)
    print(f"{key.describe()}: {'removed' if removed else 'had no preset'}")
    return 0


def add_swe_preset_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``swe-preset list``, ``swe-preset set`` and ``swe-preset delete``."""
    group = sub.add_parser(
        "swe-preset", help="SWE color-bar ranges per scanner preset, for unreadable labels"
    )
    actions = group.add_subparsers(dest="swe_preset_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="every stored preset").set_defaults(handler=cmd_list)
    patient_help = "a patient whose SWE image shows the scanner preset (its code)"
    set_ = actions.add_parser(
        "set", help="the range printed at the bottom and top of the bar, for that scanner preset"
    )
    set_.add_argument("--patient", required=True, help=patient_help)
    set_.add_argument("--low", type=float, required=True, help="value at the bottom of the bar")
    set_.add_argument("--high", type=float, required=True, help="value at the top of the bar")
    set_.add_argument("--units", choices=("kPa", "m/s"), default="kPa")
    set_.set_defaults(handler=cmd_set)
    delete = actions.add_parser("delete", help="forget the preset of that patient's scanner")
    delete.add_argument("--patient", required=True, help=patient_help)
    delete.set_defaults(handler=cmd_delete)
