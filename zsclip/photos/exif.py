"""The EXIF facts search filters on: when a photo was taken, with which camera, and whether it holds a position.
Read from the header Pillow parses (JPEG, TIFF, PNG eXIf, WebP, HEIC with pillow-heif, a RAW's preview)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

# EXIF tag numbers (the standard's, as PIL.ExifTags names them)
MAKE, MODEL, DATETIME, EXIF_IFD, GPS_IFD = 0x010F, 0x0110, 0x0132, 0x8769, 0x8825
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004  # CreateDate
GPS_LATITUDE = 2


@dataclass(frozen=True)
class Capture:
    taken: str | None = None  # ISO 8601 local time as the camera wrote it: "2024-06-01T14:03:22"
    make: str | None = None
    model: str | None = None
    gps: bool = False

    @property
    def camera(self) -> str | None:
        """'Canon EOS R5': the model, with the make in front unless the model already starts with it."""
        if not self.model:
            return self.make
        if self.make and not self.model.lower().startswith(self.make.split()[0].lower()):
            return f"{self.make} {self.model}"
        return self.model


def capture_of(im: Image.Image) -> Capture:
    """The capture facts of an opened image (its header only; nothing is decoded)."""
    try:
        exif = im.getexif()
    except Exception:  # a broken EXIF block costs the facts, never the photo
        return Capture()
    if not exif:
        return Capture()
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:
        sub = {}
    # When it was taken: DateTimeOriginal, else CreateDate; never ModifyDate (IFD0 DateTime), which an edit moves.
    taken = next(filter(None, (iso_time(sub.get(tag)) for tag in (DATETIME_ORIGINAL, DATETIME_DIGITIZED))), None)
    try:
        gps = bool(exif.get_ifd(GPS_IFD).get(GPS_LATITUDE))
    except Exception:
        gps = False
    return Capture(taken, _text(exif.get(MAKE)), _text(exif.get(MODEL)), gps)


def iso_time(value) -> str | None:
    """EXIF's 'YYYY:MM:DD HH:MM:SS' (or 'YYYY-MM-DD ...', which some writers use) as ISO 8601, or None for a
    blank or malformed one ('0000:00:00 00:00:00', '    :  :     :  :  ')."""
    text = _text(value)
    if not text or len(text) < 10:
        return None
    date, _, time = text.replace("T", " ", 1).partition(" ")
    parts = date.replace("-", ":").split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[0] == "0000":
        return None
    iso = "-".join(parts)
    time = time.strip()[:8]
    return f"{iso}T{time}" if len(time) == 8 and time.replace(":", "").isdigit() else iso


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None
