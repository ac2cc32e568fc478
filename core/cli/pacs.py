"""``python -m core pacs``: check the PACS connection, write reports back, copy the link."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.common import config
from core.common.errors import UserError
from core.common.store import ImageStore
from core.services.database import open_database
from core.services.pacs.client import PacsClient, PacsError
from core.services.pacs.endpoints import endpoint
from core.services.pacs.link import PseudonymLink, copy_link
from core.services.pacs.writeback import send_report


def cmd_check(args: argparse.Namespace) -> int:
    target = endpoint(args.endpoint)
    PacsClient(target).check()
    print(f"Connected: {target.describe()}.")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """One line per patient: a refused patient does not stop the others; a PACS that fails
    (down, wrong credentials) stops the run with its message."""
    client = PacsClient(endpoint(args.endpoint))
    link = PseudonymLink()
    codes = args.patients or sorted(link.pseudonyms().values())
    db = open_database()
    store = ImageStore(config.images_dir())
    failed = 0
    try:
        for code in codes:
            try:
                result = send_report(
                    client,
                    db,
                    store,
                    code,
                    run_ids=args.runs,
                    link=link,
                    again=args.again,
                    gradcam_images=args.gradcam,
                )
            except PacsError:
                raise
            except UserError as exc:
                failed += 1
                print(f"{code}: not sent. {exc}")
            else:
                print(f"{code}: sent (SR {result.sop_instance_uid}).")
    finally:
        db.dispose()
    return 1 if failed else 0


def cmd_copy_link(args: argparse.Namespace) -> int:
    dest = copy_link(Path(args.dest))
    print(f"Copied the pseudonym link to {dest} (readable by this account only); keep it apart.")
    return 0


def add_pacs_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pacs check|send|copy-link``."""
    parser = sub.add_parser(
        "pacs",
        help="hospital PACS over DICOMweb: check, write reports back, copy the pseudonym link",
        description="Endpoints and secrets come from the environment or "
        ".streamlit/secrets.toml (docs/deployment.md). Studies are imported on the PACS page.",
    )
    parser.add_argument("--endpoint", help="endpoint name (default: the first one set up)")
    group = parser.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")
    check = group.add_parser("check", help="prove the address and credentials work")
    check.set_defaults(handler=cmd_check)
    send = group.add_parser(
        "send", help="write each patient's results back as a DICOM SR (one line per patient)"
    )
    send.add_argument("patients", nargs="*", help="pseudonyms (default: every PACS patient)")
    send.add_argument("--runs", type=int, nargs="*", default=[], help="training run ids to include")
    send.add_argument("--again", action="store_true", help="send a new version if one was sent")
    send.add_argument(
        "--gradcam", action="store_true", help="also send each model's Grad-CAM image"
    )
    send.set_defaults(handler=cmd_send)
    copy = group.add_parser(
        "copy-link", help="copy the pseudonym link file (research backups leave it out)"
    )
    copy.add_argument("dest", help="file to write, e.g. /secure/pseudonym-link.db")
    copy.set_defaults(handler=cmd_copy_link)
