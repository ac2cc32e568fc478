"""Pixels in, facts out: reading scanner exports, de-identification, ROI proposals, SWE decoding.

Reading (``imageio``, ``images``), header and burned-in-text de-identification (``deid``,
``pixel_deid``), proposals of the boxes a reader draws (``regions``, ``roi_detect``,
``sector``), shear-wave color decoding (``swe_decode``), and the steps from a crop box to a
model input (``crop``, ``normalize``), plus display-only transforms (``display``,
``canvas_boxes``).
"""

from core.imaging.crop import choose_box, crop_and_resize
from core.imaging.deid import deidentify
from core.imaging.imageio import DecodedImage, ImageReadError, decode_image
from core.imaging.normalize import normalize
from core.imaging.pixel_deid import clean_pixels
from core.imaging.regions import propose_regions
from core.imaging.swe_decode import decode_swe, stiffness_stats

__all__ = [
    "DecodedImage",
    "ImageReadError",
    "choose_box",
    "clean_pixels",
    "crop_and_resize",
    "decode_image",
    "decode_swe",
    "deidentify",
    "normalize",
    "propose_regions",
    "stiffness_stats",
]
