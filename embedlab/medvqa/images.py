"""Medical images as float arrays: PNG/JPEG (and anything else Pillow reads) and DICOM (through pydicom).

``load_image(path, size=..., grey=True)`` returns a float32 array of shape (C, H, W), values in [0, 1], C = 1 (grey)
or 3 (RGB); ``load_image_tensor`` is the same as a torch tensor. DICOM pixel data goes through the modality LUT
(rescale slope/intercept: CT values become Hounsfield units) and then the VOI LUT or the window stored in the file
(``window=(center, width)`` overrides it, e.g. ``(40, 400)`` for soft tissue on CT); MONOCHROME1 images are inverted
so that bright is always dense; palette-colour images are looked up to RGB; multi-frame files give one frame
(``frame``, default the middle one). The windowed values are scaled to [0, 1] by the window's output range (by the
image's own min and max when it has no window).

RGB to grey uses the ITU-R 601 luma weights (as Pillow's "L" mode); resizing is bilinear on the float values
(Pillow's "F" mode), to ``size`` = an int (square) or (height, width). A missing, unreadable or truncated file is a
``DataError`` naming the file. It does no augmentation, caching or normalisation to a dataset mean (models do).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")
Size = int | tuple[int, int] | None


def is_dicom(path: str | Path) -> bool:
    """By suffix, else by the ``DICM`` magic at byte 128 (DICOM files often have no suffix)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def load_image(path: str | Path, size: Size = None, *, grey: bool = True, window: tuple[float, float] | None = None,
               frame: int | None = None) -> np.ndarray:
    """The image at ``path`` as float32 (C, H, W) in [0, 1] (module docstring). ``window`` and ``frame`` apply to
    DICOM only."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image file not found" if not path.exists() else "image path is not a regular file", path)
    pixels = _read_dicom(path, window, frame) if is_dicom(path) else _read_pillow(path)  # (H, W) or (H, W, 3)
    if pixels.ndim == 3 and grey:
        pixels = pixels @ LUMA
    elif pixels.ndim == 2 and not grey:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if size is not None:
        pixels = resize(pixels, size)
    pixels = np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False)
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_image_tensor(path: str | Path, size: Size = None, **options: Any):
    """``load_image`` as a torch float tensor (C, H, W)."""
    import torch

    return torch.from_numpy(load_image(path, size, **options))


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return int(h), int(w)


def resize(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float (H, W) or (H, W, C) pixels to ``size`` (int or (height, width))."""
    from PIL import Image

    h, w = _size(size)
    if pixels.shape[:2] == (h, w):
        return pixels
    if pixels.ndim == 2:
        return np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return np.stack([resize(pixels[:, :, c], (h, w)) for c in range(pixels.shape[2])], axis=2)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                return (arr / peak).astype(np.float32)
            if img.mode == "F":
                return _minmax(np.asarray(img, dtype=np.float32))
            converted = img.convert("L" if img.mode in ("1", "L", "LA", "P") and _is_grey(img) else "RGB")
            return np.asarray(converted, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise DataError("cannot read image: not an image format Pillow recognises", path) from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise DataError(f"cannot read image: {exc}", path) from None


def _is_grey(img) -> bool:
    if img.mode != "P":
        return True
    palette = img.convert("RGB")
    arr = np.asarray(palette)
    return bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return np.zeros_like(arr, dtype=np.float32) if hi <= lo else ((arr - lo) / (hi - lo)).astype(np.float32)


def _read_dicom(path: Path, window: tuple[float, float] | None, frame: int | None) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DataError(f"cannot read DICOM: {exc}", path) from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read DICOM: {exc}", path) from None
    if "PixelData" not in ds:
        raise DataError("DICOM file has no pixel data (PixelData)", path)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing decoders / corrupt data
        raise DataError(f"cannot decode DICOM pixel data ({ds.file_meta.get('TransferSyntaxUID', '?')}): {exc}",
                        path) from None
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        index = frames // 2 if frame is None else frame
        if not -frames <= index < frames:
            raise DataError(f"DICOM has {frames} frames, asked for frame {index}", path)
        arr = arr[index]
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":  # indices into a colour palette: look the colours up
        try:
            rgb = apply_color_lut(arr, ds).astype(np.float64)
        except Exception as exc:
            raise DataError(f"cannot apply the DICOM colour palette: {exc}", path) from None
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds else 16
        return (rgb / float(2 ** bits - 1)).clip(0.0, 1.0).astype(np.float32)
    if samples == 3:  # colour (pydicom returns RGB): no LUTs apply
        peak = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return (arr.astype(np.float32) / peak).clip(0.0, 1.0)
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if window is not None:
        center, width = float(window[0]), float(window[1])
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        lo, hi = center - width / 2.0, center + width / 2.0
        out = (np.clip(values, lo, hi) - lo) / (hi - lo)
    elif "WindowCenter" in ds or "VOILUTSequence" in ds:
        windowed = apply_voi_lut(values, ds)
        lo, hi = _voi_range(ds, windowed)
        out = np.zeros_like(windowed) if hi <= lo else (np.clip(windowed, lo, hi) - lo) / (hi - lo)
    else:
        out = _minmax(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.asarray(out, dtype=np.float32)


def _voi_range(ds, windowed: np.ndarray) -> tuple[float, float]:
    """The output range of pydicom's VOI step, from the header (the observed min and max would stretch images that
    do not fill the window): a VOI LUT sequence maps into [0, 2**bits - 1] of its LUT descriptor; a window maps into
    the stored pixel range after the modality LUT (as pydicom's ``apply_windowing`` computes it)."""
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        return 0.0, float(2 ** bits - 1)
    if "WindowCenter" in ds:
        bits = int(ds.get("BitsStored", 16))
        if ds.get("ModalityLUTSequence"):
            y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        elif int(ds.get("PixelRepresentation", 0)) == 0:
            y_min, y_max = 0.0, float(2 ** bits - 1)
        else:
            y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None:
            y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
        return y_min, y_max
    return float(windowed.min()), float(windowed.max())


def _first(value) -> float:
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)
