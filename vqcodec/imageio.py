"""Images in and out through Pillow: opening one (its pages, frames, tiles, orientation and ICC profile), its
pixels as the planes that are coded and back, and writing it in the format its name or a hint asks for."""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import re
import struct
import threading
import warnings
from io import BytesIO
from pathlib import Path
from typing import Callable

import numpy as np

from . import imagedata
from .errors import ImageReadWarning, VQCodecError, caller_stacklevel
from .format import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from .imagedata import BMP_BITFIELDS, BMP_BI_RGB, PILLOW_READ_ERRORS
from .io import (NETPBM_VARIANTS, image_format_of_suffix, is_image_signature, refuse_format_against_name,
                 refuse_format_of_other_kind)
from .streams import (EmptyInput, PatchedStream, TemporaryFileFailed, TemporaryFileFull, UnreadableStream,
                      check_destination, check_format_name, check_source, copy_whole, flush_written, from_where_it_is,
                      input_name, is_seekable, is_whole, left_where_it_was, native_stderr_captured, output_name,
                      refuse_empty_media, spooled_stream, unwritable_stream, write_file)
from .wording import plural, reason_of, shown_cut, type_of

def unrecognised_image(head: bytes, where) -> VQCodecError | None:
    """The error that reading an image which begins with `head` gives where no format Pillow reads recognises those
    bytes, which bear no signature is_image_signature knows (those that do are left to the reading: the first bytes
    of a TIFF may not hold its directory); None otherwise. `where`: as for unreadable_audio."""
    from PIL import Image, UnidentifiedImageError

    if is_image_signature(head[:16]):
        return None
    logged: list[str] = []
    try:
        with warnings.catch_warnings(), pillow_log_caught(logged):
            warnings.simplefilter("ignore")
            Image.open(BytesIO(head)).close()
    except UnidentifiedImageError as exc:
        return unreadable_image(where, pillow_refusal(BytesIO(head), exc, logged))
    # recognised, and cut short or damaged: the whole input may not be. What Pillow's readers raise of
    # such a header (a DDS of a pixel format it does not read: NotImplementedError, an AVIF of brand mif1, whose
    # signature is_image_signature does not know, libavif's RuntimeError); no other error.
    except (*PILLOW_READ_ERRORS, Image.DecompressionBombError):
        pass
    return None


def read_image_rgb(path) -> np.ndarray:
    """Read an image as the uint8 RGB (height, width, 3) that encoding it codes (open_image and
    image_to_planes: EXIF orientation and an ICC profile applied, 16-bit and float grey scaled to 8 bits, not
    clipped)."""
    check_source(path, "an image", paths=(str, os.PathLike))  # outside the try: not put into "cannot read image"
    try:
        return image_to_planes(open_image(path, max_side=None), path)[0]  # training crops what encoding refuses
    except (EmptyInput, UnreadableStream, TemporaryFileFull, TemporaryFileFailed):  # naming the stream, or the folder
        raise
    except VQCodecError as exc:
        if str(exc).startswith(str(unreadable_image(path, ""))):  # open_image's, which names the input
            raise
        raise unreadable_image(path, exc) from None



# Held wherever this module has Pillow set up a TIFF's tiles (opening, seeking a page, _planes_through_libtiff, which
# sets TiffImagePlugin.READ_LIBTIFF, a global, for that while): no reading of another thread (training's batch workers)
# sees it set, and two threads' settings cannot leave it set. Pillow is used elsewhere in the process unguarded.
TIFF_SETUP_LOCK = threading.RLock()

# Colour modes we restore exactly, with their code in the .vq header.
IMAGE_MODES = {"RGB": 0, "L": 1, "RGBA": 2, "LA": 3, "P": 4, "PA": 5, "I;16": 6, "I": 7,
               "CMYK": 8, "1": 9, "YCbCr": 10, "F": 11, "RGBX": 12, "I;16B": 13, "I;16L": 14,
               "P;transparency": 15}  # a P image with a transparent palette entry
ALPHA_MODES = {"RGBA", "LA", "PA", "P;transparency"}
IMAGE_MODE_NAMES = {code: name for name, code in IMAGE_MODES.items()}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I", "F"}
DEEP_STRIP_PIXELS = 1 << 20  # deep grey is scaled to 8 bits in strips of about this many pixels
GREY_MODES = {"1", "L", "LA", "La", *_SIXTEEN_BIT}
_FULL_SCALE = {"F": 1.0, "I": 65535.0}  # the deep modes whose values may lie beyond what is read as white
MAX_CLIPPED_SHARE = 0.5  # of a float or 32-bit image's pixels, clipped to black or white (a warning): more are refused
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold
# The most pixels a side these formats hold (images go to 65 535): MPO and PDF code through libjpeg,
# libavif, which Pillow reads AVIF with, refuses a side over 32 768, and ICNS holds 1024x1024 alone.
_MAX_SIDE = {"JPEG": 65_500, "MPO": 65_500, "PDF": 65_500, "WEBP": 16_383, "AVIF": 32_768, "ICO": 256,
             "ICNS": 1024}


def check_pixel_count(width: int, height: int) -> None:
    """Refuse an image over MAX_PIXELS (Pillow's decompression-bomb threshold), from its header's size."""
    if width * height > MAX_PIXELS:
        raise VQCodecError(f"image of {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")


LOW_GREY_RAWMODES = {"L;2": 2, "L;4": 4}  # grey of 2 and 4 bits a pixel (PNG), read as 8-bit levels


def low_grey_key_bits(image) -> int | None:
    """Of an image not yet loaded: the bits a pixel of 2- or 4-bit grey with a transparent level (PNG
    tRNS) has, which Pillow reads as 8-bit levels but whose transparent level it leaves in those bits
    (a 4-bit white key, 15, matched no pixel: white is read as 255); None for any other image."""
    if image.mode != "L" or "transparency" not in image.info:
        return None
    return next((LOW_GREY_RAWMODES[tile.args] for tile in getattr(image, "tile", ())
                 if isinstance(getattr(tile, "args", None), str) and tile.args in LOW_GREY_RAWMODES), None)


def with_grey_key_in_8_bits(image, bits: int | None):
    """`image`, or where `bits` (low_grey_key_bits) is given a copy whose transparent level is scaled to 8 bits."""
    if bits is None:
        return image
    scaled = image.copy()
    scaled.info["transparency"] = image.info["transparency"] * 255 // (2 ** bits - 1)
    return scaled


def _check_side(width: int, height: int, max_side: int | None) -> None:
    if max_side is not None and max(width, height) > max_side:
        raise VQCodecError(f"image {width}x{height} exceeds the size limit of {max_side} pixels a side and "
                           f"{MAX_PIXELS} pixels")


def _check_header_size(source, image, max_side: int | None, fits: Callable[[int, int, str], None] | None) -> None:
    """Refuse the image `source`, opened by Pillow as `image` and not yet read, whose header gives more pixels than
    check_pixel_count takes, a side longer than `max_side` (_check_side) or a size `fits` refuses (open_image's),
    naming it as its other read errors do (naming_the_image)."""
    with naming_the_image(source):
        check_pixel_count(image.width, image.height)
        _check_side(image.width, image.height, max_side)
        if fits is not None:
            fits(image.width, image.height, image.mode)


@contextlib.contextmanager
def naming_the_image(source):
    """The refusal (VQCodecError) of the block, of an image read from `source` (a path or stream), naming it as its
    read errors do (unreadable_image), in place of "the image" where it says "cannot read the image: ..."
    (unreadable_unnamed_image); as it is where `source` is None."""
    try:
        yield
    except VQCodecError as exc:
        if source is None:
            raise
        raise unreadable_image(source, str(exc).removeprefix(UNNAMED_IMAGE_UNREADABLE)) from None


def open_image(source, max_side: int | None = MAX_IMAGE_SIDE, fits: Callable[[int, int, str], None] | None = None):
    """Open an image file (path, or binary stream from where it is: from_where_it_is), apply EXIF orientation and an ICC
    profile (to sRGB), and refuse bombs and, unless `max_side` is None, an image with a side longer than that (what a
    .vq file holds), from its header: a PNG of 89 000 000 x 1 pixels took 1.2 GB and 6 s to be refused once read.
    `fits`, given, is called with the width, height and Pillow mode the header gives, before the pixels are read, to
    refuse (VQCodecError) an image that the work to come would not have the memory for. A stream that cannot seek (a
    pipe, a socket), which Pillow reads whole into memory, is copied into a temporary file first."""
    from PIL import Image

    check_source(source, "an image", paths=(str, os.PathLike))
    if not isinstance(source, (str, os.PathLike)) and not is_seekable(source):
        with spooled_stream(source) as copy:
            return open_image(copy, max_side, fits)
    refuse_empty_media(source)
    readable = from_where_it_is(source)
    logged: list[str] = []
    try:
        # a bomb: check_pixel_count says it
        with warnings_recorded(ignore=(Image.DecompressionBombWarning,)) as caught, pillow_log_caught(logged), \
                contextlib.ExitStack() as held:
            with TIFF_SETUP_LOCK:
                opened, cut_short = image_opened(readable, held)
            with opened as image:
                _check_header_size(source, image, max_side, fits)
                opened_at = image.tell()
                unit = "pages" if image.format == "TIFF" else "frames"
                with TIFF_SETUP_LOCK:
                    frames, rest_unreadable = _frame_count(image) if cut_short is None else (1, cut_short)
                    _back_to_frame(image, opened_at)
                # only libtiff writes to stderr itself; fd 2 is the whole process's, so only around it
                native_capture = native_stderr_captured() if image.format == "TIFF" else contextlib.nullcontext([])
                try:
                    with native_capture as native:
                        image = load_pixels(image, source)
                except OSError as exc:
                    if native:  # libtiff's own message, which says more than "decoder error -2"
                        raise unreadable_image(source, native[-1]) from exc
                    raise
                for line in dict.fromkeys(native):
                    warnings.warn(ImageReadWarning(f"{_image_called(source)}: {line}; read past it"),
                                  stacklevel=caller_stacklevel())
                transposed = as_displayed(image, source)  # a copy, so closing the file is safe
            transposed.info.pop("exif", None)  # applied, else kept no more: not parsed again (warning again)
        warn_of_pillow_warnings(caught, source)
        for line in dict.fromkeys(logged):
            warnings.warn(ImageReadWarning(f"{_image_called(source)}: {line}; read past it"),
                          stacklevel=caller_stacklevel())
        transposed = in_srgb(transposed, source)
        transposed.info.pop("icc_profile", None)  # applied, left alone as sRGB, or said to be unusable
        if frames > 1:
            warnings.warn(ImageReadWarning(f"{_image_called(source)} holds {frames} {unit}: only the first is coded"),
                          stacklevel=caller_stacklevel())
        if rest_unreadable is not None:
            why = f": {rest_unreadable}" if rest_unreadable else ""
            warnings.warn(ImageReadWarning(f"{_image_called(source)}: the {unit} after the first cannot be read "
                                           f"(damaged or cut short{why}): only the first is coded"),
                          stacklevel=caller_stacklevel())
        return transposed
    except VQCodecError:
        raise
    except (Image.DecompressionBombError, *PILLOW_READ_ERRORS) as exc:  # a bomb past twice check_pixel_count's limit
        raise unreadable_image(source, pillow_refusal(readable, exc, logged)) from None


# What Pillow's errors that say nothing to the reader of an image mean: a broken TIFF tile, of which libtiff
# says nothing, a WebP file that libwebp cannot read, as one cut short, a reader's read of what its header gives
# past the file's end (ImageFile._safe_read), a reader that found no size (a JPEG that ends before its frame
# header, a PNG 0 pixels wide), one that found no image data (a JPEG that ends before its scan), and a decoder of
# Python's that ran out of data (a QOI or plain PPM cut short, a BMP whose run-length data ends early), and Pillow's
# decoders' words for data they cannot decode (a PNG's damaged zlib stream, a TGA's run longer than its image), and
# a TIFF whose directory's offset is 2**63 or more (a BigTIFF's)
PILLOW_REASONS = {"decoder error -2": "its data cannot be decoded (damaged or cut short)",
                  "could not create decoder object": "its data cannot be decoded (damaged or cut short)",
                  "image file is truncated": "its data ends early (cut short)",
                  "Truncated File Read": "it ends before the data its header gives: cut short or damaged",
                  "not identified by this driver": "its header gives no image size, or a side of 0 pixels: "
                                                   "cut short or damaged",
                  "cannot load this image": "no image data is found in it: cut short or damaged",
                  "not enough image data": "its data ends before its last pixel: cut short or damaged",
                  "broken data stream when reading image file": "its data cannot be decoded (damaged or cut short)",
                  "buffer overrun when reading image file": "its data cannot be decoded (damaged or cut short)",
                  "Unable to seek to frame": "its header places its directory past any file's end: damaged"}
TRUNCATED = re.compile(r"^image file is truncated \(\d+ bytes not processed\)$")  # Pillow's count of what it read past


# Of a reader's seek before the file's start: a stream's ValueError ("negative seek value -38")
SEEK_BEFORE_START = "its header places its data before the file's start: damaged"
# Of a seek the system refuses, OSError EINVAL ("Invalid argument"): a file's seek before its start, or past the largest
# offset its file system takes (a BigTIFF's directory at 2**50, 16 TiB past ext4's), which the error does not tell apart
SEEK_REFUSED = "its header places its data before the file's start or past the largest size a file may have: damaged"


# Pillow's errors in Python's words, or of bytes (b'...'), of a Netpbm file (PPM, PGM, PBM) whose header gives no
# number for its size or levels, or whose plain (text) pixel values are no numbers, and of a reader's seek to a
# place its damaged header gives before the start (an ICO's)
PILLOW_REASON_PATTERNS = (
    (re.compile(r"^(invalid literal for int\(\) with base 10: |b'Token too long in file header: )"),
     "its header gives no number where its size or levels belong: damaged"),
    (re.compile(r"^b'(Invalid token for this mode|Token too long found in data): "),
     "its pixel values are not all numbers: damaged"),
    (re.compile(r"^negative seek value -\d+$"), SEEK_BEFORE_START))


def pillow_reason(exc: Exception) -> str:
    """What Pillow's error `exc` on reading an image means to its reader (PILLOW_REASONS, PILLOW_REASON_PATTERNS),
    or its own words (wording.reason_of: a missing file's, "No such file or directory")."""
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
        return SEEK_REFUSED
    said = TRUNCATED.sub("image file is truncated", str(exc))
    for pattern, reason in PILLOW_REASON_PATTERNS:
        if pattern.match(said):
            return reason
    return PILLOW_REASONS.get(said, reason_of(exc))


def pillow_refusal(source, exc: Exception, logged: list[str]) -> str:
    """Why the image `source` (a path or seekable stream) cannot be read, Pillow having raised `exc` and logged
    `logged` (pillow_log_caught) as it refused it: the last line it logged, which says more than its error, what
    its error means (pillow_reason), or for a file no reader identified, why the reader of its format refuses it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):  # over twice the limit: Pillow refuses before giving the size
        return f"image exceeds the limit of {MAX_PIXELS} pixels"
    if logged:
        return logged[-1]
    if isinstance(exc, UnidentifiedImageError):
        return _refusal_of_its_format(source) or "not an image format Pillow reads"
    return pillow_reason(exc)


def _refusal_of_its_format(source) -> str | None:
    """Why the Pillow reader of the format whose signature `source` (a path or seekable stream) begins with
    refuses it, where one does: Image.open says only that it cannot identify the file, and a TIFF of CMYK and
    alpha was called no image format Pillow reads. A format without a signature (TGA, SPIDER) is tried first where
    the file's name names it: a TGA cut short was called a CUR file, whose signature it begins with."""
    from PIL import Image

    try:
        with (open(source, "rb") if isinstance(source, (str, Path)) else contextlib.nullcontext(source)) as stream:
            stream.seek(0)
            prefix = stream.read(16)
            Image.init()
            named = image_format_of_suffix(Path(str(input_name(source) or "")).suffix.lower())
            readers = sorted(Image.OPEN.items(), key=lambda reader: reader[0] != named)
            for name, (factory, accept) in readers:
                if not (name == named and accept is None or _begins_with_signature(prefix, accept)):
                    continue
                stream.seek(0)
                try:
                    with warnings_recorded() as caught:  # of a file refused for the reason it raises: said there
                        factory(stream, "")
                # What Image.open passes over of a reader: having identified no file, it had each reader these
                # bytes begin with the signature of raise one of them (ImageFile turns an IndexError, TypeError,
                # KeyError, EOFError or struct.error of a reader's _open into SyntaxError); any other is a bug.
                except (SyntaxError, IndexError, TypeError, struct.error) as exc:
                    article = "an" if name[:1] in "AEIOU" else "a"  # an AVIF, an ICNS file
                    return f"{article} {name} file that Pillow does not read ({_reader_reason(exc, caught)})"
    except (OSError, ValueError, AttributeError):  # unreadable again, or a stream that cannot seek
        return None
    return None


# What Pillow warns of, reading a header past the file's end, where it reads on without what it lacks: a TIFF
# directory (IFD) beyond the file's end or cut short, after which the reader refuses it for the tags it lacks
HEADER_READ_PAST_END = re.compile(r"^(Truncated File Read|Corrupt EXIF data\.\s+Expecting to read \d+ bytes but only "
                                  r"got \d+)")


def _reader_reason(exc: Exception, warned: list = ()) -> str:
    """Why a reader refused a file, from the error it raised and what it `warned` of: a struct.error, EOFError or
    IndexError of reading its header past what the file holds (which ImageFile turns into a SyntaxError of the same
    words), or a warning that it did so (HEADER_READ_PAST_END), is said as such, not in Python's words
    ('unpack_from requires a buffer of at least 2 bytes for unpacking 2 bytes at offset 0 ...', 'index out of
    range') nor as what it then lacked ('Missing dimensions', 'unknown data organization': a TIFF cut short). A
    TypeError (Python's words of a value of the wrong type, a TIFF's SamplesPerPixel as text, or the reader's own)
    is said as damage, in its words; so is a KeyError's bare key."""
    if (isinstance(exc, struct.error) or isinstance(exc.__cause__, (struct.error, EOFError, IndexError))
            or any(HEADER_READ_PAST_END.match(str(item.message)) for item in warned)):
        return "its header is cut short or damaged"
    if isinstance(exc.__cause__, KeyError) and str(exc) == str(exc.__cause__):  # the bare key: a value, a tag's number
        return (f"its header lacks an entry Pillow needs, or holds a value it does not know ({exc.__cause__}): "
                "damaged, or a variant it does not read")
    said = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc.__cause__, TypeError):  # Python's words of a value of the wrong type, or the reader's own
        return f"its header is damaged, or of a variant Pillow does not read ({said})"
    return PILLOW_REASONS.get(said, said)


class _PillowLogRouter(logging.Handler):
    """The one handler that pillow_log_caught puts on Pillow's logger while any thread catches its lines: a
    record goes to the list of its thread's innermost catching block, and a record of a thread in none where it
    went without this handler (Python's last resort, on stderr, where the program has no handler that takes it).
    A handler of each block dropped the lines of the threads in none: being a handler, it kept the last resort
    from them. Put on by the first block to begin and taken off by the last to end."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.guard, self.local, self.blocks = threading.Lock(), threading.local(), 0

    def enter(self, lines: list[str]) -> None:
        self.local.__dict__.setdefault("lines", []).append(lines)
        with self.guard:
            if not self.blocks:
                logging.getLogger("PIL").addHandler(self)
            self.blocks += 1

    def leave(self) -> None:
        self.local.lines.pop()
        with self.guard:
            self.blocks -= 1
            if not self.blocks:
                logging.getLogger("PIL").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        caught = getattr(self.local, "lines", None)
        if caught:
            caught[-1].append(" ".join(record.getMessage().split()).rstrip("."))
        elif not self._another_takes(record) and logging.lastResort is not None:
            if record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)

    def _another_takes(self, record: logging.LogRecord) -> bool:
        """Whether a handler besides this one is found for `record`, as Logger.callHandlers looks for them."""
        logger = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return True
            logger = logger.parent if logger.propagate else None
        return False


_PILLOW_LOG_ROUTER = _PillowLogRouter()


@contextlib.contextmanager
def pillow_log_caught(lines: list[str]):
    """Collect into `lines` what Pillow logs at WARNING and above in this thread while an image is read ("More
    samples per pixel than can be decoded: 99", before it refuses a TIFF), for open_image to say in its own error
    or warning. Without a handler of its own, Python's last resort printed it on stderr, a line beside
    vqcodec's; a handler on Pillow's logger for this while stops that alone: records still reach the
    handlers the program has set up, and its logging settings are left as they were."""
    _PILLOW_LOG_ROUTER.enter(lines)
    try:
        yield lines
    finally:
        _PILLOW_LOG_ROUTER.leave()


TIFF_ORIENTATION = 274  # the TIFF (and EXIF) tag of how the stored image is turned for display
SIDE_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # turned by a quarter: width and height trade places
ORIENTATIONS = range(1, 9)  # EXIF's: 1 as stored, 2 to 8 flipped or turned


def readable_exif(image, source=None):
    """image.getexif(), or None where Pillow cannot parse its EXIF block at all (a TIFF header damaged or cut short,
    which a JPEG's Image.open reads past without a word and getexif of a PNG's or WebP's raised), with an
    ImageReadWarning naming `source` (as as_displayed's) that says it is read as stored."""
    try:
        return image.getexif()
    except (SyntaxError, struct.error):
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: its EXIF data cannot be read (damaged): read as "
                                       "stored, not turned"), stacklevel=caller_stacklevel())
        return None


def as_displayed(image, source=None):
    """A copy of `image` (loaded) turned as its EXIF orientation says it is displayed (ImageOps.exif_transpose).
    An orientation that is none of EXIF's eight (damaged), which Pillow passes over without a word, or EXIF data
    that cannot be read (readable_exif) leaves it as stored, with an ImageReadWarning naming `source` (open_image's or
    encode_image's, or None) that says so."""
    from PIL import ImageOps

    exif = readable_exif(image, source)
    if exif is None:
        return image.copy()
    orientation = exif.get(TIFF_ORIENTATION, 1)
    if orientation not in ORIENTATIONS:
        shown = orientation if isinstance(orientation, int) else repr(orientation)
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: its EXIF orientation, {shown}, is none of 1 to 8 "
                                       "(damaged): read as stored, not turned"), stacklevel=caller_stacklevel())
    return ImageOps.exif_transpose(image)


def load_pixels(image, source=None):
    """image.load() of an image Image.open gave, not yet read, and the image to code: Pillow's reading, but
    where that loses or misreads what the file holds, a copy as the file has it (`image` itself is loaded
    and left as Pillow reads it):

    - 16-bit grey with alpha (PNG), which Pillow reads as RGBA, is LA: grey, and grey it comes back;
    - 16-bit RGB (PNG), which Pillow reads as 8 bits (the high bytes), has its transparent colour (tRNS)
      in 8 bits too: Pillow matched its 16 bits against the pixels, and other pixels became transparent;
    - 2- and 4-bit grey with a transparent level has it in 8 bits (with_grey_key_in_8_bits);
    - a BMP whose alpha Pillow does not read has it (_bmp_with_alpha);
    - a TIFF of separate planes is read by libtiff (_planes_through_libtiff);
    - a TIFF channel of unspecified meaning after the colour is alpha, and others are said to be left out
      (_unspecified_channel_as_alpha), in a warning naming `source` (open_image's or encode_image's).

    A TIFF turned by a quarter (orientation 5 to 8) is read rather than memory-mapped: Pillow maps the
    stored pixels at the size they are displayed at, so an uncompressed grey, palette, RGBA, CMYK or
    16-bit TIFF opened from a path came out garbled (from a stream it was right)."""
    imagedata.check_tiff_numbers(image)
    rawmodes = {getattr(tile, "args", None) for tile in getattr(image, "tile", ())}
    grey_with_alpha = image.mode == "RGBA" and "LA;16B" in rawmodes
    deep_colour_key = image.mode == "RGB" and "transparency" in image.info and "RGB;16B" in rawmodes
    grey_key_bits = low_grey_key_bits(image)
    with_alpha = _bmp_with_alpha(image)
    _planes_through_libtiff(image)
    extra_as_alpha, extra_left_out = _unspecified_channel_as_alpha(image)  # before image.load() may close its file
    imagedata.check_png_data(image)
    imagedata.check_jpeg_data(image)
    name = getattr(image, "filename", None)
    if image.format == "TIFF" and image.tag_v2.get(TIFF_ORIENTATION) in SIDE_SWAPPING_ORIENTATIONS:
        image.filename = ""  # ImageFile.load maps a file only when it has a file name
    palette_read = image.mode == "P" and (image.format in imagedata.PALETTE_CHECKED_FORMATS and bool(image.tile)
                                          or image.format == "ICO")  # read as it opens: a palette PNG of its own
    try:
        image.load()
    finally:
        if name is not None:
            image.filename = name
    if palette_read:
        imagedata.check_palette_indices(image)
    imagedata.check_ico_entry(image)
    read = with_alpha or image
    if extra_as_alpha is not None:
        read = _warn_of_extra_alpha(extra_as_alpha, source)
    if extra_left_out:
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: {plural(extra_left_out, 'channel')} of unspecified "
                                       "meaning (TIFF ExtraSamples 0) left out"), stacklevel=caller_stacklevel())
    if grey_with_alpha:
        read = image.convert("LA")
    if deep_colour_key:
        read = image.copy()
        read.info["transparency"] = tuple(value >> 8 for value in image.info["transparency"])
    return with_grey_key_in_8_bits(read, grey_key_bits)


BMP_ALPHA_MASK_AT = 52  # from the start of a BMP's info header (of 56 bytes or more): its alpha mask
BMP_A1R5G5B5 = 0x8000  # the alpha mask of 16-bit pixels of 5 bits each of R, G and B, and 1 of alpha


def _bmp_with_alpha(image):
    """Of a BMP not yet read whose alpha Pillow does not read, the RGBA image it is, read from its file; else
    None. That alpha is in the fourth bytes of 32-bit pixels without bit fields (BI_RGB), which the format leaves
    unused and writers fill with alpha (Pillow's own RGBA BMPs), or in the top bit of 16-bit bit fields whose
    alpha mask names it (A1R5G5B5, as GIMP writes it): Pillow reads both as RGB, and the alpha was dropped.
    Alpha all 0 (the unused bytes, as the format has them) or all 255 is none: None."""
    from PIL import Image

    if image.format not in ("BMP", "DIB") or image.mode != "RGB":
        return None
    try:  # Pillow's reader's own attributes: no public call gives a BMP's bytes of pixels
        tile = image.tile[0] if len(image.tile) == 1 else None
        if tile is None or tile[0] != "raw" or image.fp is None:  # no fp: closed, which load() says
            return None
        (rawmode, stride, direction), offset = tile[3], tile[2]
    except (AttributeError, TypeError, ValueError, IndexError):
        raise _without_pillow_internals("a BMP's alpha", "BmpImageFile.tile and .fp", "PNG") from None
    compression = image.info.get("compression")
    if compression == BMP_BI_RGB and rawmode == "BGRX":
        rawmode = "BGRA"
    elif compression == BMP_BITFIELDS and rawmode == "BGR;15" and _bmp_alpha_mask(image) == BMP_A1R5G5B5:
        rawmode = "BGRA;15"
    else:
        return None
    image.fp.seek(offset)
    data = image.fp.read(stride * image.height)
    if len(data) < stride * image.height:
        return None  # cut short: image.load() says so
    rgba = Image.frombytes("RGBA", image.size, data, "raw", rawmode, stride, direction)
    if rgba.getchannel("A").getextrema() in ((0, 0), (255, 255)):
        return None
    rgba.info = dict(image.info)
    return rgba


def _without_pillow_internals(what: str, internals: str, instead: str) -> ValueError:
    """The error for an image of which reading `what` needs `internals` of Pillow's (attributes of its readers,
    as no public call does it), which this Pillow lacks or has changed: refused, where it would be read wrong."""
    import PIL

    return ValueError(f"reading {what} needs Pillow's {internals}, which Pillow {PIL.__version__} does not have as "
                      f"vqcodec knows them: save it as {instead}")


def _bmp_alpha_mask(image) -> int | None:
    """The alpha mask of a BMP (or DIB, without the file header) image not yet read, None where its info
    header is too short to hold one."""
    header_at = 14 if image.format == "BMP" else 0
    image.fp.seek(header_at)
    header = image.fp.read(BMP_ALPHA_MASK_AT + 4)
    if len(header) < BMP_ALPHA_MASK_AT + 4 or int.from_bytes(header[:4], "little") < BMP_ALPHA_MASK_AT + 4:
        return None
    return int.from_bytes(header[BMP_ALPHA_MASK_AT:], "little")


def _begins_with_signature(prefix: bytes, accept) -> bool:
    """Whether a Pillow format's signature check `accept` (None: the format has none) finds its signature in
    `prefix`; a prefix of a few bytes is too short for some checks (struct.error), and has none."""
    import struct

    try:
        return accept is not None and accept(prefix) is True
    except (IndexError, TypeError, ValueError, struct.error):
        return False


def _frame_count(image) -> tuple[int, str | None]:
    """How many frames (pages) an image opened at its first holds, and why those after the first cannot be read
    ("" where the reader says it in Python's words, 'index out of range' of a GIF's next frame's header cut
    short), or None: a multi-page TIFF cut short points to a page past its end, and counting it failed the whole
    file ("Missing dimensions"), whose first page was intact. A later TIFF page of a compression Pillow does not
    know, or a palette one without its ColorMap, raises the bare KeyError of Pillow's lookup (a traceback). MPO
    (a camera's previews) and PSD (the layers of the composite image read) count as one."""
    import struct

    if image.format in ("MPO", "PSD"):
        return 1, None
    try:
        with warnings_recorded() as caught:  # of the later pages: dropped where they fail
            frames = getattr(image, "n_frames", 1)
    except (IndexError, struct.error):
        return 1, ""
    except KeyError as exc:
        return 1, f"a later page's header lacks an entry Pillow needs, or holds a value it does not know ({exc})"
    except (EOFError, OSError, SyntaxError, TypeError, ValueError) as exc:
        return 1, " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    for item in caught:
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if image.format == "PNG" and frames > 1:
        missing = _apng_frames_missing(image.fp, frames)
        if missing:
            return 1, missing
    if image.format == "GIF" and frames > 1:
        cut_within = _gif_frame_cut_within(image.fp)
        if cut_within:
            return 1, f"it ends within its frame {cut_within}"
    return frames, None


def _gif_frame_cut_within(stream) -> int | None:
    """The number of the frame within which a GIF in `stream` ends, read from its blocks' headers: Pillow counts a
    frame from its image descriptor alone, so a GIF cut short within its third frame's data held 3 frames; else
    None (whole, or cut short between frames, or of blocks Pillow itself refuses)."""
    walked = _gif_blocks_walked(stream)
    return walked[0] if walked is not None and walked[1] else None


def _gif_blocks_walked(stream) -> tuple[int, bool] | None:
    """How many frames a GIF that begins `stream` holds, read from its blocks' headers (the stream is left where
    it was), and whether it ends within the last one's data; None where it cannot be read so."""
    with left_where_it_was(stream):
        try:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            if stream.read(4) != b"GIF8":
                return None
            stream.seek(GIF_SCREEN_DESCRIPTOR_END)
            stream.seek(_gif_colour_table_bytes(stream.read(1)) + 2, os.SEEK_CUR)  # the background colour, aspect ratio
            frame = 0
            while (kind := stream.read(1)) in (b"!", b","):
                if kind == b",":
                    frame += 1
                    descriptor = stream.read(GIF_IMAGE_DESCRIPTOR_BYTES)
                    stream.seek(_gif_colour_table_bytes(descriptor[-1:]) + 1, os.SEEK_CUR)  # and the LZW code size
                else:
                    stream.seek(1, os.SEEK_CUR)  # the extension's label
                while (length := stream.read(1)) not in (b"", b"\0"):  # its data sub-blocks, to the empty one
                    stream.seek(length[0], os.SEEK_CUR)
                if stream.tell() > size or not length:
                    return frame, kind == b","
        except (OSError, ValueError):
            return None  # unreadable here: Pillow says what is wrong
    return frame, False


def warn_of_frames_left_out(image, source=None) -> None:
    """Warn, as open_image does of a file, that a Pillow image given to be coded holds more frames (pages) than the
    one coded, its current one, where their count is cheap to know and leaves the image as it is (frames_known),
    naming `source`, the path or stream it was read from, where it is known."""
    frames = frames_known(image)
    if frames > 1:
        unit = "pages" if image.format == "TIFF" else "frames"
        coded = "the first" if image.tell() == 0 else f"{unit[:-1]} {image.tell() + 1}, the current one,"
        warnings.warn(ImageReadWarning(f"{_image_called(source)} holds {frames} {unit}: only {coded} is coded"),
                      stacklevel=caller_stacklevel())


def frames_known(image) -> int:
    """How many frames (pages) a Pillow image holds where that is known without seeking it: Pillow's count from
    the file's header (APNG, WebP, ...) or one it has made already (a TIFF's n_frames asked), a GIF's from its
    blocks' headers and a TIFF's from its directories' (Pillow's own count seeks it to each frame); 1 otherwise, and
    for MPO and PSD, which _frame_count counts as one."""
    if image.format in ("MPO", "PSD"):
        return 1
    held = vars(image)
    known = held.get("n_frames", held.get("_n_frames"))
    if known is None and getattr(image, "fp", None) is not None:
        known = _frames_walked(image.format, image.fp)
    return known if isinstance(known, int) else 1


def _frames_walked(image_format: str, stream) -> int | None:
    """How many frames a GIF, or pages a TIFF, that begins `stream` holds, read from the headers of its blocks or
    directories (the stream left where it was); None for another format, or where they cannot be read so (a file
    closed under the image, `with open(path, "rb") as f: image = Image.open(f)`: reading its pixels says so)."""
    try:
        stream.tell()
    except (OSError, ValueError):
        return None
    if image_format == "GIF":
        walked = _gif_blocks_walked(stream)
        return walked[0] if walked is not None else None
    return _tiff_pages_walked(stream) if image_format == "TIFF" else None


# A TIFF's layout by the number its header gives after the byte order (42 classic, 43 BigTIFF): the format of a
# directory's count of entries, the bytes of an entry, the format of an offset, and where the header gives the first
# directory's
TIFF_LAYOUTS = {42: ("H", 12, "I", 4), 43: ("Q", 20, "Q", 8)}
MAX_TIFF_PAGES_COUNTED = 1 << 16  # a bound on the directories read to count them: each may be as small as 6 bytes


def _tiff_pages_walked(stream) -> int | None:
    """How many pages a TIFF that begins `stream` holds, as Pillow counts them: the directories along the chain of
    next-directory offsets, to an offset of 0 or of one already read, each read from its count of entries and its
    next offset (the stream left where it was); None where the chain cannot be read so (an offset past the end, a
    directory cut short, more than MAX_TIFF_PAGES_COUNTED directories)."""
    with left_where_it_was(stream):
        try:
            stream.seek(0)
            header = stream.read(16)
            order = {b"II": "<", b"MM": ">"}.get(header[:2])
            version = struct.unpack(order + "H", header[2:4])[0] if order and len(header) >= 4 else None
            layout = TIFF_LAYOUTS.get(version)
            if layout is None:
                return None
            count_format, entry_bytes, offset_format, first_at = layout
            count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
            size = stream.seek(0, os.SEEK_END)
            offset, read = struct.unpack_from(order + offset_format, header, first_at)[0], set()
            while offset and offset not in read:
                if len(read) == MAX_TIFF_PAGES_COUNTED or offset + count_size > size:
                    return None
                read.add(offset)
                stream.seek(offset)
                entries = struct.unpack(order + count_format, stream.read(count_size))[0]
                next_at = offset + count_size + entries * entry_bytes
                if next_at + offset_size > size:  # a BigTIFF's count may be 2**64 - 1: seeking there overflowed
                    return None
                stream.seek(next_at)
                offset = struct.unpack(order + offset_format, stream.read(offset_size))[0]
            return len(read)
        except (OSError, ValueError, struct.error):
            return None  # unreadable here: the coding of the page given says what is wrong


GIF_SCREEN_DESCRIPTOR_END = 10  # the signature, version and logical screen size: the flags byte follows
GIF_IMAGE_DESCRIPTOR_BYTES = 9  # position, size and flags, after its separator (",")


def _gif_colour_table_bytes(flags: bytes) -> int:
    """The bytes of the colour table that a GIF's screen or image descriptor's flags byte says follows it."""
    if not flags or not flags[0] & 0x80:
        return 0
    return 3 << ((flags[0] & 7) + 1)


def _apng_frames_missing(stream, frames: int) -> str | None:
    """Why an APNG whose header (acTL) gives `frames` frames lacks some of them, read from its chunks' headers in
    `stream`: a file cut short after its first frame, which Pillow counts from its header alone; else None.
    The default image (IDAT) is a frame of its own where no frame control chunk (fcTL) comes before it."""
    with left_where_it_was(stream):
        try:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(8)
            found = 0
            while len(head := stream.read(8)) == 8 and head[4:] != b"IEND":
                length, kind = struct.unpack(">I4s", head)
                found += kind == b"fcTL" or (kind == b"IDAT" and not found)
                stream.seek(length + 4, os.SEEK_CUR)  # its data and CRC: past the end where it is cut short
            cut_short = stream.tell() > size
        except (OSError, ValueError):
            return None  # unreadable here: Pillow says what is wrong
    if cut_short or (found < frames and len(head) < 8):  # a chunk cut short, or no IEND chunk
        return f"it ends before the last of its {frames} frames"
    if found < frames:
        return f"it holds {found} of the {frames} frames its header gives"
    return None


def image_opened(source, held: contextlib.ExitStack):
    """Image.open(source) (a path or a stream that can seek, not empty: refuse_empty_media), and None; or where that
    fails for an animated WebP cut short after its first frame, of which libwebp reads no frame ("could not create
    decoder object"), the frames before the cut, opened with its RIFF size set to where they end (the file held open in
    `held`), and why those after the first cannot be read, as _frame_count says it of a GIF or an APNG so cut."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(source), None
    except OSError as exc:
        refused = exc
    if isinstance(refused, UnidentifiedImageError) and _first_tiff_directory_of_planes(source) \
            and (planes := _planes_opened_through_libtiff(source)) is not None:
        return planes, None
    path = source if isinstance(source, (str, os.PathLike)) else None
    if path is not None and not os.path.isfile(path):  # a FIFO's bytes are gone: it is not read twice
        raise refused
    try:
        stream = held.enter_context(open(path, "rb")) if path is not None else source
        cut = _webp_frames_cut(stream)
    except OSError:
        raise refused from None
    if cut is None:
        raise refused
    frames_end, why = cut
    stream.seek(0)
    return Image.open(PatchedStream(stream, {4: struct.pack("<I", frames_end - 8)}), formats=["WEBP"]), why


TIFF_ORDERS = {b"II*\0": "<", b"MM\0*": ">"}  # a classic TIFF's first 4 bytes: its byte order
TIFF_ENTRY_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the types of a whole number a directory entry holds itself
MAX_TIFF_ENTRIES_LOOKED_AT = 1024


def _first_tiff_directory_of_planes(source) -> bool:
    """Whether `source` (a path or a stream that can seek) is a classic TIFF whose first directory gives
    PlanarConfiguration 2 (each channel a plane of its own), from its header; where it is not, or that cannot be
    read, False. A stream is left where it was."""
    try:
        with (open(source, "rb") if isinstance(source, (str, os.PathLike)) else contextlib.nullcontext(source)) \
                as stream:
            with left_where_it_was(stream):
                stream.seek(0)
                head = stream.read(8)
                if (order := TIFF_ORDERS.get(head[:4])) is None:
                    return False
                stream.seek(struct.unpack(order + "I", head[4:])[0])
                count = struct.unpack(order + "H", stream.read(2))[0]
                entries = stream.read(12 * min(count, MAX_TIFF_ENTRIES_LOOKED_AT))
    except (OSError, ValueError, struct.error):
        return False
    for at in range(0, len(entries) - 11, 12):
        tag, kind = struct.unpack_from(order + "HH", entries, at)
        if tag == PLANAR_CONFIGURATION and kind in TIFF_ENTRY_TYPES:
            return struct.unpack_from(order + TIFF_ENTRY_TYPES[kind], entries, at + 8)[0] == 2
    return False


def _planes_opened_through_libtiff(source):
    """A TIFF whose channels are stored as planes that Pillow's own reader refuses, opened to be read by libtiff
    (as _planes_through_libtiff has it read them), or None: one of 8 bits a sample with a channel of unspecified
    meaning (ExtraSamples 0) after its colour, whose planes that reader sets up one past its colour's (an
    IndexError), was refused as a TIFF Pillow does not read ('its header is cut short or damaged')."""
    from PIL import Image, TiffImagePlugin

    if not hasattr(TiffImagePlugin, "READ_LIBTIFF"):
        return None
    with TIFF_SETUP_LOCK:
        saved, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
        try:
            image = Image.open(source, formats=["TIFF"])
        except PILLOW_READ_ERRORS:
            return None
        finally:
            TiffImagePlugin.READ_LIBTIFF = saved
    if image.tag_v2.get(PLANAR_CONFIGURATION) == 2:
        return image
    if isinstance(source, (str, os.PathLike)):
        image.close()  # the file it opened; a stream given is the caller's, and stays open
    return None


WEBP_FRAME = b"ANMF"  # the chunk of one frame of an animated WebP


def _webp_frames_cut(stream) -> tuple[int, str] | None:
    """Of an animated WebP in `stream` that ends before the end its RIFF header gives, after one of its frames
    (ANMF chunks) or more: where its whole chunks end, and where it ends ('it ends within its frame 3', 'it ends
    after its frame 2'), read from its chunks' headers; else None (whole, not an animated WebP, cut short within
    its first frame)."""
    with left_where_it_was(stream):
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        head = stream.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return None
        at, frames = 12, 0
        while len(chunk := stream.read(8)) == 8:
            kind, length = struct.unpack("<4sI", chunk)
            end = at + 8 + length + (length & 1)  # padded to an even length
            if end > size:
                break
            frames += kind == WEBP_FRAME
            at = stream.seek(end)
    if not frames or (at == size and struct.unpack("<I", head[4:8])[0] + 8 <= size):
        return None
    within = at + 8 <= size and chunk[:4] == WEBP_FRAME
    return at, f"it ends within its frame {frames + 1}" if within else f"it ends after its frame {frames}"


def _back_to_frame(image, frame: int) -> None:
    """Seek an image back to the frame Image.open gave, where counting its frames left it elsewhere.
    That frame is the image (Pillow numbers a PSD's composite frame 1, and refused a seek to frame 0:
    "attempt to seek outside sequence"), and a seek where none is needed can fail (SPIDER's refuses a
    file that is not a stack, even to frame 0)."""
    if image.tell() != frame:
        image.seek(frame)


def unreadable_image(source, reason) -> VQCodecError:
    """The error for an image (path or stream) that cannot be read, and why."""
    return VQCodecError(f"cannot read image {input_name(source) or 'from the stream'}: {reason}")


UNNAMED_IMAGE_UNREADABLE = "cannot read the image: "


def unreadable_unnamed_image(reason) -> VQCodecError:
    """The error for a Pillow image whose pixels cannot be read, of no file known, and why; naming_the_image names
    the file where it is known, as unreadable_image does."""
    return VQCodecError(f"{UNNAMED_IMAGE_UNREADABLE}{reason}")


PLANAR_CONFIGURATION = 284  # the TIFF tag; 2: each channel stored as a plane of its own
EXTRA_SAMPLES = 338  # the TIFF tag of what each channel after the colour holds: 0 unspecified, 2 alpha (unassociated)
UNSPECIFIED_SAMPLE, UNASSOCIATED_ALPHA = 0, 2


def _unspecified_channel_as_alpha(image) -> tuple[object, int]:
    """Of a TIFF not yet read that has channels of unspecified meaning (ExtraSamples 0) after its colour, which
    Pillow reads past and drops: the one such channel of grey, palette or RGB (interleaved) read as alpha,
    unassociated (its values and the colour's as stored: nothing is lost, where writers that leave it unspecified
    mean alpha), in an image read from another opening of the file (`image` is left as Pillow reads it), or None;
    and how many such channels are left out otherwise (none: 0)."""
    from PIL import Image

    if image.format != "TIFF" or UNSPECIFIED_SAMPLE not in (extra := tuple(image.tag_v2.get(EXTRA_SAMPLES, ()))):
        return None, 0
    if extra == (UNSPECIFIED_SAMPLE,) and image.tag_v2.get(PLANAR_CONFIGURATION) != 2 and hasattr(image, "_setup") \
            and getattr(image, "fp", None) is not None:  # Pillow's reader's own: no public call reads it so
        image.fp.seek(0)
        with TIFF_SETUP_LOCK:
            twin = Image.open(BytesIO(image.fp.read()))  # not closed: that would drop its pixels
            twin.seek(image.tell())
            twin.tag_v2[EXTRA_SAMPLES] = (UNASSOCIATED_ALPHA,)
            try:
                twin._setup()  # the tile again, from the tags
            except SyntaxError:  # no mode of Pillow's holds it with alpha (16-bit grey, CMYK): left out
                return None, 1
        twin.load()
        return twin, 0
    return None, extra.count(UNSPECIFIED_SAMPLE)


def _warn_of_extra_alpha(image, source):
    """`image`, read with its channel of unspecified meaning as alpha (_unspecified_channel_as_alpha), with a
    warning that says so; where that channel is all 0 or all 255, without it and the warning (no alpha, as BMP's)."""
    if image.getchannel("A").getextrema() in ((0, 0), (255, 255)):
        return image.convert(image.mode[:-1])
    warnings.warn(ImageReadWarning(f"{_image_called(source)}: its last channel, of unspecified meaning (TIFF "
                                   "ExtraSamples 0), is read as alpha"), stacklevel=caller_stacklevel())
    return image


def _planes_through_libtiff(image) -> None:
    """Have libtiff read a TIFF whose channels are stored as separate planes: Pillow's own reader of
    uncompressed ones takes one byte a sample (16-bit RGB came out garbled) and knows no planar YCbCr.
    Grey and alpha planes are refused (ValueError, the reason): Pillow's libtiff reader leaves their alpha 0,
    all transparent."""
    from PIL import TiffImagePlugin

    if image.format != "TIFF" or image.tag_v2.get(PLANAR_CONFIGURATION) != 2:
        return
    if image.mode == "LA":
        raise ValueError("a TIFF of grey and alpha stored as separate planes, whose alpha Pillow does not read: "
                         "save it with the channels interleaved (contiguous)")
    if not all(hasattr(owner, name) for owner, name in ((image, "use_load_libtiff"), (image, "_setup"),
                                                        (TiffImagePlugin, "READ_LIBTIFF"))):
        raise _without_pillow_internals("a TIFF stored as separate planes", "TiffImageFile._setup and "
                                        ".use_load_libtiff and TiffImagePlugin.READ_LIBTIFF",
                                        "a TIFF of interleaved (contiguous) channels")
    if image.use_load_libtiff:
        return
    with TIFF_SETUP_LOCK:
        saved, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
        try:
            image._setup()  # the tile again, for libtiff
        finally:
            TiffImagePlugin.READ_LIBTIFF = saved


ICC_PROBE_LEVELS = 18  # a side of the grid of colours (18^3 = 5832) that tells an sRGB-like profile
LCMS_NO_OPTIMIZE = 0x0100  # cmsFLAGS_NOOPTIMIZE, ImageCms.Flags.NOOPTIMIZE from Pillow 10.3
# The modes whose ICC profile is applied, and the colour spaces of the profiles each takes: grey may
# carry an RGB profile (as R = G = B), 16-bit, 32-bit and float grey a GRAY one only (8-bit grey held
# as 32 bits or floats is L, as image_to_planes reads it)
_PROFILE_SPACES = {"RGB": ("RGB",), "RGBA": ("RGB",), "P": ("RGB",), "PA": ("RGB",), "CMYK": ("CMYK",),
                   "L": ("GRAY", "RGB"), "LA": ("GRAY", "RGB"), "I;16": ("GRAY",), "I;16B": ("GRAY",),
                   "I;16L": ("GRAY",), "I": ("GRAY",), "F": ("GRAY",)}


def in_srgb(image, source=None):
    """An image with an embedded ICC profile, converted to sRGB (relative colorimetric), the colours
    the codec and every viewer without colour management take its pixels for; an Adobe RGB photo
    read as sRGB came out dull. Grey stays grey, in the levels of sRGB's grey; a palette image has
    its palette converted; CMYK is converted to sRGB and kept as the CMYK that Pillow's plain
    formula turns into those sRGB colours. A profile that moves no colour of a small grid (grey: no
    level) by more than a level (sRGB under another name) is left alone: a 3-megapixel conversion
    takes about 0.1 s, the check a few ms. An unusable profile is said in one warning naming
    `source` (open_image's or encode_image's), and the pixels are read as sRGB. `image` itself is never changed; the
    result keeps the profile only where it was left alone or unusable."""
    image = with_standard_sixteen_bit(image)
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in _PROFILE_SPACES:
        return image
    from PIL import ImageCms

    if image.mode in _FULL_SCALE and _holds_eight_bits(image):
        image = image.convert("L")
    image = _transparent_colour_as_alpha(image)  # converted, the colour would no longer be its pixels'
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space not in _PROFILE_SPACES[image.mode]:
            raise ValueError(f"it describes {space} pixels, and the image is {image.mode}")
        in_mode = image.mode if image.mode in ("CMYK", "RGB") else "RGB" if space == "RGB" else \
            "L" if image.mode in ("L", "LA") else "I;16"
        # A ramp of levels or a palette is few colours: converted exactly, where lcms's optimised 8-bit
        # transform put linear grey's level 5 at 31, not 38
        few = image.mode not in ("RGB", "RGBA", "CMYK")
        transform = ImageCms.buildTransform(profile, _srgb_profile(), in_mode, "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                            flags=LCMS_NO_OPTIMIZE if few else 0)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        warnings.warn(ImageReadWarning(f"{_image_called(source)}: its ICC profile cannot be used ({reason}); "
                                       "read as sRGB"), stacklevel=caller_stacklevel())
        return image
    if image.mode in GREY_MODES:
        converted = _grey_in_srgb(image, transform, in_mode)
    elif image.mode == "CMYK":  # no CMYK profile is Pillow's formula: no check
        converted = ImageCms.applyTransform(image, transform).convert("CMYK")
    elif not _moves_colours(transform):
        return image
    elif image.mode in ("P", "PA"):
        converted = _palette_in_srgb(image, transform)
    else:
        converted = ImageCms.applyTransform(image.convert("RGB") if image.mode == "RGBA" else image, transform)
        if image.mode == "RGBA":
            converted.putalpha(image.getchannel("A"))
    if converted is None:
        return image
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


def _moves_colours(transform) -> bool:
    """Whether an RGB-to-sRGB transform moves a colour of _icc_probe's grid by more than a level."""
    from PIL import ImageCms

    probe = _icc_probe()
    moved = np.abs(np.asarray(ImageCms.applyTransform(probe, transform), dtype=np.int16)
                   - np.asarray(probe, dtype=np.int16))
    return bool(moved.max() > 1)


def _palette_in_srgb(image, transform):
    """A palette image with its palette's colours converted (its alpha values kept)."""
    from PIL import Image, ImageCms

    rawmode = image.palette.mode
    entries = np.asarray(image.getpalette(rawmode), dtype=np.uint8).reshape(-1, len(rawmode)).copy()
    colours = Image.fromarray(np.ascontiguousarray(entries[None, :, :3]), "RGB")
    entries[:, :3] = np.asarray(ImageCms.applyTransform(colours, transform))[0]
    converted = image.copy()
    converted.putpalette(entries.tobytes(), rawmode)
    return converted


def _grey_in_srgb(image, transform, in_mode: str):
    """A grey image (L, LA, 16-bit, 32-bit or float) with each level replaced by the sRGB grey its
    profile makes of it (the mean of the three channels, which the profile keeps equal to a level), or
    None where no level moves by more than one of 8 bits. Deeper grey is taken as 16-bit levels and
    gets 8-bit sRGB levels (the codec keeps 8 bits), scaled back to its own; it is converted a strip
    at a time."""
    from PIL import Image, ImageCms

    levels = np.arange(65536 if in_mode == "I;16" else 256)
    ramp = (Image.frombytes("I;16", (len(levels), 1), levels.astype("<u2").tobytes()) if in_mode == "I;16"
            else Image.fromarray(levels.astype(np.uint8)[None], "L").convert(in_mode))
    srgb = np.round(np.asarray(ImageCms.applyTransform(ramp, transform), dtype=np.float64)[0].mean(axis=1))
    if np.abs(srgb - np.round(levels * 255 / levels[-1])).max() <= 1:
        return None
    if in_mode != "I;16":
        table = [int(level) for level in srgb]
        return image.point(table + list(range(256)) if image.mode == "LA" else table)
    if image.mode in _FULL_SCALE:
        return _full_scale_in_srgb(image, srgb)
    table = (srgb * 257).astype(np.uint16)
    order = ">u2" if image.mode == "I;16B" else "<u2"
    converted = Image.new(image.mode, image.size)
    rows = max(1, DEEP_STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        strip = np.asarray(image.crop((0, top, image.width, min(image.height, top + rows))))
        converted.paste(Image.frombytes(image.mode, strip.shape[::-1], table[strip].astype(order).tobytes()), (0, top))
    return converted


def _full_scale_in_srgb(image, srgb: np.ndarray):
    """A 32-bit or float grey image whose values within 0 to _FULL_SCALE, as 16-bit levels, are replaced
    by their `srgb` levels (of 0-255, one for each 16-bit level) at that scale; values beyond it (and
    NaN) are left to be clipped, or refused, as they were (_check_deep_range)."""
    from PIL import Image

    full_scale = _FULL_SCALE[image.mode]
    table = np.round(srgb * 257) if image.mode == "I" else srgb / 255
    converted = np.empty((image.height, image.width), dtype=np.int32 if image.mode == "I" else np.float32)
    for top, values in _deep_grey_values(image):
        within = np.isfinite(values) & ~_beyond_full_scale(values, full_scale)
        level = np.round(np.clip(np.where(within, values, 0), 0, full_scale) / full_scale * 65535).astype(np.int64)
        converted[top:top + len(values)] = np.where(within, table[level], values)
    return Image.fromarray(converted, image.mode)


@functools.cache
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")


@functools.cache
def _icc_probe():
    """An RGB image of ICC_PROBE_LEVELS^3 colours, every level of 0-255 in even steps in each channel."""
    from PIL import Image

    levels = np.round(np.linspace(0, 255, ICC_PROBE_LEVELS)).astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(grid, "RGB")


def _image_called(source) -> str:
    """How a warning names an image: its path, "the image from stdin" or "the image"."""
    name = input_name(source)
    return "the image" if name is None else f"the image {name}" if name == "from stdin" else str(name)


_COLOUR_OF_ALPHA_MODE = {"RGBA": "RGB", "LA": "L", "PA": "P", "P;transparency": "P"}


def warn_of_what_codes_leave_out(header, source) -> None:
    """Where a .vq image's `header` gives it an alpha plane or a colour mode other than RGB (grey, a palette,
    CMYK, 16 bits), an ImageReadWarning that the codes of its image (`source`: the image, or that file) leave
    them out, as `vqcodec pack` of them makes an RGB image (`vqcodec codes`, Codec.media_to_codes)."""
    from .format import FLAG_ALPHA, KIND_IMAGE

    if header.kind != KIND_IMAGE or header.mode not in IMAGE_MODE_NAMES:
        return  # audio, or a mode decoding refuses
    mode = IMAGE_MODE_NAMES[header.mode]
    colour, alpha = _COLOUR_OF_ALPHA_MODE.get(mode, mode), header.flags & FLAG_ALPHA
    if colour == "RGB" and not alpha:
        return
    if colour == "RGB":
        said = "its alpha channel is not in its codes, which hold its colour alone"
    elif alpha:
        said = f"its alpha channel and its colour mode ({colour}) are not in its codes, which hold its colour " \
               "alone, as RGB"
    else:
        said = f"its colour mode ({colour}) is not in its codes, which hold its colour as RGB"
    said += f" (`vqcodec pack` makes an {'opaque ' if alpha else ''}RGB image of them)"
    warnings.warn(ImageReadWarning(f"{_image_called(source)}: {said}"), stacklevel=caller_stacklevel())


class _WarningRouter:
    """The one change to the process's warnings that warnings_recorded makes while any thread records: every
    warning shown ("always"), to the list of its thread's innermost recording block, or to the showwarning there
    was before for a thread in none. Made by the first block to begin and undone by the last to end."""

    def __init__(self):
        self.lock, self.local, self.blocks, self.saved = threading.Lock(), threading.local(), 0, None

    def enter(self, caught: list, ignore: tuple) -> None:
        with self.lock:
            if not self.blocks:
                self.saved = warnings.showwarning, warnings.filters[:]
                warnings.simplefilter("always")
                warnings.showwarning = self.show
            self.blocks += 1
        self.local.__dict__.setdefault("blocks", []).append((caught, ignore))

    def leave(self) -> None:
        self.local.blocks.pop()
        with self.lock:
            self.blocks -= 1
            if not self.blocks:
                show, filters = self.saved
                if warnings.showwarning == self.show:  # else another has replaced it since: theirs stays
                    warnings.showwarning = show
                # and the registries of warnings shown once go stale, as catch_warnings leaves them
                warnings.resetwarnings()
                warnings.filters.extend(filters)

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        blocks = getattr(self.local, "blocks", None)
        if not blocks:
            self.saved[0](message, category, filename, lineno, file, line)
        elif not issubclass(category, blocks[-1][1]):
            blocks[-1][0].append(warnings.WarningMessage(message, category, filename, lineno, file, line))


_WARNING_ROUTER = _WarningRouter()


@contextlib.contextmanager
def warnings_recorded(ignore: tuple = ()):
    """The warnings this thread raises while the block runs (each one, as it comes; none of the categories in
    `ignore`), in the list this yields, where warnings.catch_warnings(record=True) gave every thread's. That
    swaps the process's filters and showwarning for the block's and back, so that two threads at once
    (training's batch workers reading photos) put back what the other had swapped in: a warning printed raw,
    the filters left changed, or every later warning sent to a list no one read."""
    caught: list = []
    _WARNING_ROUTER.enter(caught, ignore)
    try:
        yield caught
    finally:
        _WARNING_ROUTER.leave()


# What Pillow's warnings that say nothing to the reader of an image mean: a directory of EXIF data (or of a TIFF's
# tags) whose entry gives data past the end of what holds it, which Pillow leaves out
PILLOW_WARNING_REASONS = {"Truncated File Read": "its metadata (EXIF or TIFF tags) is cut short or damaged"}


def warn_of_pillow_warnings(caught: list, source) -> None:
    """Issue Pillow's warnings on reading an image from `source` (recorded by warnings_recorded; the same one comes
    from opening and transposing it) as one ImageReadWarning each, naming the image, and any others as they were."""
    where = _image_called(source)
    said = set()
    for item in caught:
        if item.category is not UserWarning:  # Pillow's are plain UserWarnings
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        elif str(item.message) not in said:
            said.add(str(item.message))
            reason = " ".join(str(item.message).split()).rstrip(".")
            reason = PILLOW_WARNING_REASONS.get(reason, reason)
            warnings.warn(ImageReadWarning(f"{where}: {reason}; read past it"), stacklevel=caller_stacklevel())


def image_to_planes(image, source=None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Split a Pillow image into uint8 RGB (h, w, 3), its mode code and a uint8 alpha plane or None. `source`, the
    path or stream it was read from where it was, is named in the refusal or warning of its values
    (_check_deep_range)."""
    image = with_standard_sixteen_bit(image)
    _check_transparency(image)
    if image.mode in ("La", "RGBa"):  # premultiplied alpha, which only images made in memory have
        image = image.convert(image.mode.upper())
    if image.mode in _FULL_SCALE and _holds_eight_bits(image):
        image = image.convert("L")  # 0-255 values are 8-bit grey: scaled from 65535 (or 1.0), white was level 1
    if image.mode in _FULL_SCALE:
        with naming_the_image(source):
            _check_deep_range(image, source)
    mode = image.mode
    if mode == "P" and (with_alpha := _palette_alpha(image)) is not None:
        mode, image = "P;transparency", with_alpha
    elif mode == "PA":
        image = image.convert("RGBA")
    else:
        image = _transparent_colour_as_alpha(image)
        mode = image.mode
    if mode not in IMAGE_MODES:
        raise VQCodecError(f"unsupported image mode {mode}")
    if image.width < 1 or image.height < 1:
        raise VQCodecError("image has zero width or height")
    alpha = None
    if mode in ALPHA_MODES:
        alpha = np.asarray(image.getchannel("A"))
    if mode in _SIXTEEN_BIT:
        rgb = np.empty((image.height, image.width, 3), dtype=np.uint8)
        for top, grey in _deep_grey_strips(image):
            rgb[top:top + grey.shape[0]] = grey[:, :, None]
    elif mode in ("L", "1", "LA"):
        rgb = np.repeat(np.asarray(image.convert("L"))[:, :, None], 3, axis=2)
    else:
        rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb), IMAGE_MODES[mode], alpha


def _palette_alpha(image):
    """A palette image with alpha as RGBA, or None where it has none: alpha from a transparent entry or
    entries (info["transparency"], as files give it), or from a palette of RGBA entries some pixels' alpha
    is below 255 in (what Image.quantize of RGBA and putpalette(..., "RGBA") make; it was dropped)."""
    if "transparency" not in image.info and getattr(image.palette, "mode", None) != "RGBA":
        return None
    rgba = image.convert("RGBA")
    return rgba if "transparency" in image.info or rgba.getchannel("A").getextrema()[0] < 255 else None


def with_standard_sixteen_bit(image):
    """`image`, or where it is 16-bit grey in the machine's byte order (I;16N, which Image.frombytes and
    Image.new make, and no file format holds) an I;16 image of the same values, its info kept: Pillow
    converts I;16N to other modes by clipping at 255, and a byte order is not a mode to restore elsewhere."""
    from PIL import Image

    if image.mode != "I;16N":
        return image
    standard = Image.frombytes("I;16", image.size, np.asarray(image).astype("<u2").tobytes())
    standard.info = dict(image.info)
    return standard


# Bytes a pixel that planes_to_image takes beside the decoded RGB, by mode: peak resident memory measured on
# 9 Mpx of noise with Pillow 13, rounded up. Palette modes are quantised (Pillow's median cut: 40 bytes a pixel).
REBUILT_PIXEL_BYTES = {"RGB": 5, "L": 6, "1": 7, "RGBA": 9, "LA": 10, "CMYK": 9, "YCbCr": 9, "RGBX": 9, "I;16": 9,
                       "I;16B": 9, "I;16L": 9, "I": 11, "F": 11, "P": 41, "PA": 41, "P;transparency": 31}
ALPHA_PIXEL_BYTES = 2  # an alpha plane, as inflated and as a Pillow band


def mode_shown(mode: str) -> str:
    """A Pillow mode as messages name it: '1' is '1-bit' ('the 9x9 1 image' reads as a count)."""
    return "1-bit" if mode == "1" else mode


def rebuilt_image_bytes(mode_code: int, width: int, height: int) -> int:
    """The memory planes_to_image takes for a `width` x `height` image of mode `mode_code` beside its decoded
    RGB, its alpha plane included."""
    mode = IMAGE_MODE_NAMES[mode_code]
    return width * height * (REBUILT_PIXEL_BYTES[mode] + (ALPHA_PIXEL_BYTES if mode in ALPHA_MODES else 0))


def planes_to_image(rgb: np.ndarray, mode_code: int, alpha: np.ndarray | None):
    """Rebuild a Pillow image of the original mode from decoded RGB and the lossless alpha plane."""
    from PIL import Image

    mode = IMAGE_MODE_NAMES[mode_code]
    if mode in _SIXTEEN_BIT:
        return _deep_grey_image(rgb, mode)
    image = Image.fromarray(rgb, "RGB")
    if mode == "1":  # the nearest of black and white, not a dither of the decoded grey (which turned 4 in 10 wrong)
        return image.convert("L").convert("1", dither=Image.Dither.NONE)
    if mode == "L":
        return image.convert(mode)
    if mode == "P;transparency":
        return _palette_with_exact_alpha(rgb, alpha)
    if mode == "PA":
        result = image.quantize(256, method=Image.Quantize.MEDIANCUT).convert("PA")
        result.putalpha(Image.fromarray(alpha, "L"))
        return result
    if mode in ALPHA_MODES:
        result = image.convert("L") if mode == "LA" else image.copy()
        result.putalpha(Image.fromarray(alpha, "L"))
        return result
    if mode == "P":
        return image.quantize(256, method=Image.Quantize.MEDIANCUT)
    return image.convert(mode) if mode != "RGB" else image


# The type a deep grey mode's values are built in (planes_to_image)
_DEEP_VALUE_TYPES = {"F": np.float32, "I": np.int32, "I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2"}


def _deep_grey_image(rgb: np.ndarray, mode: str):
    """The 16-bit, 32-bit or float grey image (`mode`) of decoded RGB: its grey scaled from 255 to 65535
    (F: 1.0), a strip of about DEEP_STRIP_PIXELS at a time, where the whole image's float64 grey took
    28 bytes a pixel (2.5 GB for the largest image) beside the RGB."""
    from PIL import Image

    height, width = rgb.shape[:2]
    values = np.empty((height, width), dtype=_DEEP_VALUE_TYPES[mode])
    rows = max(1, DEEP_STRIP_PIXELS // width)
    for top in range(0, height, rows):
        grey = np.asarray(Image.fromarray(rgb[top:top + rows], "RGB").convert("L"), dtype=np.float64) / 255.0
        values[top:top + rows] = grey if mode == "F" else np.round(grey * 65535.0)
    if mode in ("F", "I"):
        return Image.fromarray(values, mode)
    return Image.frombytes(mode, (width, height), values.tobytes())


def _holds_eight_bits(image) -> bool:
    """Whether a 32-bit grey (I) image's values all lie in 0-255, or a float (F) image's are all whole
    numbers in 0-255, some above 1: 8-bit grey held as 32 bits or as floats (Image.fromarray of int32
    or of float32 levels, convert("I"), a 32-bit TIFF of 8-bit levels), read as the L it is."""
    low, high = image.getextrema()
    if not (0 <= low and high <= 255):
        return False
    return image.mode == "I" or (high > 1 and all(np.array_equal(values, np.round(values))
                                                  for _, values in _deep_grey_values(image)))


def _check_transparency(image) -> None:
    """Refuse an image whose info["transparency"] is not what Pillow's files give its mode (set by hand,
    or copied from an image of another mode): Pillow's conversions raised bare errors on it."""
    if "transparency" not in image.info or image.mode not in {"P", "L", "1", "RGB"} | _SIXTEEN_BIT:
        return
    value = image.info["transparency"]
    if image.mode == "P":
        fits, wanted = (isinstance(value, (bytes, bytearray)) and len(value) <= 256) or (
            is_whole(value) and 0 <= value < 256), "a palette index 0-255 or bytes of alpha per palette entry"
    elif image.mode == "RGB":  # levels above 255 matched no pixel: a 16-bit PNG's colour, read as 8 bits once loaded
        fits, wanted = (isinstance(value, tuple) and len(value) == 3
                        and all(is_whole(v) and 0 <= v < 256 for v in value),
                        "an (r, g, b) tuple of levels 0-255 (a 16-bit PNG's, which Pillow reads as 8 bits: give "
                        "encode the file, or Image.open's image before it is loaded)")
    elif image.mode == "F":
        fits, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif image.mode in ("L", "1"):
        fits, wanted = is_whole(value) and 0 <= value < 256, "a level 0-255"
    else:
        fits, wanted = is_whole(value), "an int"
    if not fits:
        raise VQCodecError(f"the {mode_shown(image.mode)} image's transparency, {shown_cut(value, 40)}, is not "
                           f"{wanted}: set image.info['transparency'] to one, or remove it")


def _transparent_colour_as_alpha(image):
    """A 1-bit, grey or RGB image with a transparent colour or grey value (PNG tRNS) as LA or RGBA,
    that colour's pixels transparent; other images as they are. 16-bit, 32-bit and float grey become
    8-bit LA (the codec keeps 8 bits of grey in any case)."""
    if "transparency" not in image.info:
        return image
    _check_transparency(image)
    if image.mode in ("L", "1", "RGB"):
        return image.convert("RGBA" if image.mode == "RGB" else "LA")
    if image.mode in _SIXTEEN_BIT:
        return _grey_with_transparent_value(image)
    return image


def _grey_with_transparent_value(image):
    """An LA image of 16-bit, 32-bit or float grey whose pixels of the transparent value are transparent."""
    from PIL import Image

    grey = np.empty((image.height, image.width), dtype=np.uint8)
    alpha = np.empty_like(grey)
    for top, strip in _deep_grey_strips(image, alpha):
        grey[top:top + strip.shape[0]] = strip
    return Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))


def _check_deep_range(image, source=None) -> None:
    """Refuse a float or 32-bit grey image of which over MAX_CLIPPED_SHARE of the pixels lie beyond
    its full scale (below 0, above 1.0 or 65535, where scaling to 8 bits would clip them), or any NaN
    or infinity: a float image of 0-255 values would be coded almost white. Fewer pixels beyond (the
    highlights of an HDR image) are clipped, with a warning that says how many, naming `source`, the path or stream the
    image was read from, where it is given, as the other warnings of an image file do (its caller names it in the
    refusal: naming_the_image)."""
    full_scale = _FULL_SCALE[image.mode]
    low, high, beyond, nan = math.inf, -math.inf, 0, False
    for _, values in _deep_grey_values(image):
        nan = nan or bool(np.isnan(values).any())
        low, high = (min(low, float(np.nanmin(values, initial=math.inf))),
                     max(high, float(np.nanmax(values, initial=-math.inf))))
        beyond += int(np.count_nonzero(_beyond_full_scale(values, full_scale)))
    kind = "float" if image.mode == "F" else "32-bit"
    pixels = image.width * image.height
    if nan:
        raise VQCodecError(f"{kind} image holds NaN (not a number) values, which are no grey level")
    if math.isinf(low) or math.isinf(high):
        raise VQCodecError(f"{kind} image holds infinite values, which are no grey level")
    if beyond > MAX_CLIPPED_SHARE * pixels:
        raise VQCodecError(f"{kind} image values span {low:.6g} to {high:.6g}, and {beyond / pixels:.0%} of its pixels "
                           f"lie beyond 0 to {full_scale:g}, the range read as black to white: scale it to that range, "
                           f"or save it as 8 or 16 bits")
    if beyond:
        lie, are = ("lies", "is") if beyond == 1 else ("lie", "are")
        clipped = (f"{kind} image values span {low:.6g} to {high:.6g}: {beyond} of its {pixels} pixels {lie} beyond 0 "
                   f"to {full_scale:g}, the range read as black to white, and {are} clipped to it")
        warnings.warn(ImageReadWarning(clipped if source is None else f"{_image_called(source)}: {clipped}"),
                      stacklevel=caller_stacklevel())


def _beyond_full_scale(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Which values lie beyond 0 to `full_scale` by more than half an 8-bit level (NaN does not)."""
    return (values < -0.5 / 255 * full_scale) | (values > 255.5 / 255 * full_scale)


def _deep_grey_values(image):
    """(top row, float64 values) for strips of a 16-bit, 32-bit or float grey image of about
    DEEP_STRIP_PIXELS each: a strip's values are taken as float64 one strip at a time, never the whole image's."""
    rows = max(1, DEEP_STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        yield top, np.asarray(image.crop((0, top, image.width, min(image.height, top + rows))), dtype=np.float64)


def _deep_grey_strips(image, alpha: np.ndarray | None = None):
    """(top row, uint8 grey) for strips of a 16-bit, 32-bit or float grey image of about
    DEEP_STRIP_PIXELS each (_deep_grey_values), scaled to 8 bits (65535 or, for F, 1.0 to 255). With
    `alpha` (uint8 (height, width)), its rows are filled too: 0 where a pixel has the image's
    transparent value, else 255."""
    scale = 1.0 if image.mode == "F" else 65535.0
    for top, values in _deep_grey_values(image):
        if alpha is not None:
            alpha[top:top + len(values)] = np.where(values == image.info["transparency"], 0, 255)
        yield top, np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)


def _palette_with_exact_alpha(rgb: np.ndarray, alpha: np.ndarray):
    """A palette image of these colours whose palette holds every alpha value exactly (one coded
    from a palette image has at most 256): each alpha value gets its own palette entries, one for
    fully transparent pixels and for the others a share of the 256 in proportion to their pixels."""
    from PIL import Image

    levels, level_of, counts = np.unique(alpha.ravel(), return_inverse=True, return_counts=True)
    if len(levels) > 256:
        raise VQCodecError("a palette image's alpha plane holds more than 256 values")
    visible = counts * (levels > 0)
    spare = 256 - len(levels)
    shares = 1 + (visible * spare // max(1, visible.sum())) * (levels > 0)
    colours = rgb.reshape(-1, 3)
    indices = np.zeros(len(colours), dtype=np.uint8)
    palette = []
    for level, (value, share) in enumerate(zip(levels, shares)):
        where = np.flatnonzero(level_of == level)
        part = Image.fromarray(colours[where][None], "RGB").quantize(int(share), method=Image.Quantize.MEDIANCUT)
        part_indices = np.asarray(part)[0]
        entries = np.asarray(part.getpalette()[:3 * (int(part_indices.max()) + 1)], dtype=np.uint8).reshape(-1, 3)
        indices[where] = part_indices + len(palette)
        palette += [(*colour, value) for colour in entries]
    result = Image.fromarray(indices.reshape(alpha.shape), "P")
    result.putpalette(bytes(np.asarray(palette, dtype=np.uint8).ravel()), rawmode="RGBA")
    return result


def write_image(image, destination, format_hint: str | None = None) -> None:
    """Save a Pillow image to a path or binary stream; the format follows the file name or the hint (a hint
    that contradicts the name's extension is refused: GIF under a .png name).

    When the format cannot hold the image's mode (CMYK or float as PNG, 16-bit as JPEG, ...), the
    nearest mode it can hold is written instead: RGBA, RGB, I;16 or L, deep values scaled to it.
    Alpha is never dropped: a format that cannot hold it is refused. A path is written through a temporary
    file renamed into place (write_file); a stream is flushed (not closed) once written, and its write or flush
    that fails is refused naming it, as decode_audio_file names it (the command line's own streams are left to it:
    save_image). A format's refusal of the image (alpha it cannot hold, colour in a grey format, a side too long)
    names the path or named stream, as the command line names its output: "out.jpg: JPEG cannot hold ...".
    """
    try:
        save_image(image, destination, format_hint, refusals_name=output_name(destination))
    except OSError as exc:  # of a stream: a path's is worded by write_file
        raise unwritable_stream(exc, output_name(destination)) from None


def save_image(image, destination, format_hint: str | None = None, *,
               refusals_name: str | Path | None = None) -> None:
    """write_image, whose stream's errors are the caller's to word; a format's refusal of the image names
    `refusals_name`, the output as write_image names it (output_name), where it is given and not empty (the command
    line names its output itself)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise VQCodecError(f"image is a Pillow image, not {type_of(image)}")
    check_destination(destination, "an image")
    check_format_name("format_hint", format_hint, "PNG")
    if format_hint:
        refuse_format_of_other_kind(format_hint, False, "format_hint", "write_image writes an image")
    named = output_name(destination)
    if format_hint and named is not None:
        refuse_format_against_name(format_hint, named, "format_hint")
    name = format_hint or (Path(named).suffix.lstrip(".") if named is not None else None)
    if not name:
        raise VQCodecError("cannot write image: no format given, and no file name with an extension to take it from")
    try:
        data = _encoded_as(image, name)
    except VQCodecError as exc:
        if not refusals_name:
            raise
        raise VQCodecError(f"{refusals_name}: {exc}") from None
    if hasattr(destination, "write"):
        copy_whole(BytesIO(data), destination)  # a raw stream may take part of a write
        flush_written(destination)
    else:
        write_file(destination, lambda stream: stream.write(data))


def _encoded_as(image, name: str) -> bytes:
    """The bytes of `image` in format `name` (a Pillow format or an extension), converted to what it holds."""
    if name.lower() in NETPBM_VARIANTS:
        image = _as_netpbm_variant(image, name.lower())
    elif _format_name(name) == "SPIDER":
        image = _as_float_grey(image, name)
    if _format_name(name) == "GIF":
        image = _with_gif_alpha(image)
    return _saved(image, _format_name(name), name.upper() if name.lower() in NETPBM_VARIANTS else None)


TRIAL_SIDE = 16  # of the image check_image_output writes: room for each of the 256 alpha levels


def check_image_output(name: str, mode: str, width: int, height: int, alpha: np.ndarray | None = None) -> None:
    """Refuse, before an image is decoded, output that write_image would refuse whatever its colours: a
    format `name` (a Pillow format or an extension) that Pillow cannot write, or not in `mode` nor any
    mode it falls back to (XBM, Palm: black and white only), a side over what the format holds, colour
    in a grey Netpbm variant, or `alpha` (the image's alpha plane, which a .vq file holds losslessly)
    that the format cannot hold. `mode`: the image's mode, as IMAGE_MODES names it."""
    _refuse_colour_in_grey_format(name, mode)
    _check_sides(_format_name(name), width, height)
    # What the format makes of alpha depends on its values alone: each of them, at least once.
    levels = np.unique(alpha) if alpha is not None else np.array([255], dtype=np.uint8)
    size = (height, width) if _format_name(name) == "ICNS" else (TRIAL_SIDE, TRIAL_SIDE)  # ICNS: 1024x1024 alone
    grey = np.full((*size, 3), 128, dtype=np.uint8)
    write_image(planes_to_image(grey, IMAGE_MODES[mode], np.resize(levels, size)), BytesIO(), name)


# What the formats that hold grey alone hold: Netpbm variants, by their names, and SPIDER (electron microscopy)
GREY_ONLY_FORMATS = {"pbm": "black and white", "pgm": "grey", "pfm": "float grey", "spider": "float grey"}


def _refuse_colour_in_grey_format(name: str, mode: str) -> None:
    """Refuse colour (`mode`) in a format (or Netpbm variant) `name` that holds grey alone."""
    key = name.lower() if name.lower() in NETPBM_VARIANTS else (_format_name(name) or "").lower()
    if key in GREY_ONLY_FORMATS and mode not in GREY_MODES:
        instead = ".ppm, .pnm or .png" if key in NETPBM_VARIANTS else ".png or .tif"
        raise VQCodecError(f"{key.upper()} holds {GREY_ONLY_FORMATS[key]} only, and the image is in colour ({mode}): "
                           f"write {instead}")


def _as_float_grey(image, name: str):
    """`image` as float grey, 0.0 to 1.0, for a format `name` that holds nothing else (PFM, SPIDER): colour is
    refused, and visible alpha left for _saved to refuse."""
    _refuse_colour_in_grey_format(name, image.mode)
    return image if _has_visible_alpha(image) else _converted(image, "F")


def _check_sides(format_name: str | None, width: int, height: int) -> None:
    limit = _MAX_SIDE.get(format_name)
    if limit and max(width, height) > limit:  # refused before libjpeg prints its own line on stderr
        raise VQCodecError(f"{format_name} holds at most {limit} pixels a side, and the image is "
                           f"{width}x{height}: write .png or .tif")


def _as_netpbm_variant(image, variant: str):
    """`image` in the mode its Netpbm variant holds (Pillow writes the variant of the image's mode,
    whatever the name: a colour P6 file named .pgm). Grey levels may be reduced, as in GIF and JPEG:
    grey becomes black and white in PBM (the nearest of each, not dithered), 16-bit grey 8-bit in
    PPM. Channels are never dropped: a colour image is refused as PBM, PGM or PFM (Pillow writes
    PFM grey only), and visible alpha is left for _saved to refuse (grey with alpha included)."""
    from PIL import Image

    _refuse_colour_in_grey_format(variant, image.mode)
    if variant == "pfm":
        return _as_float_grey(image, variant)
    if _has_visible_alpha(image) or (variant == "pbm" and image.mode == "1"):
        return image
    if variant in ("ppm", "pnm"):  # PNM is PBM, PGM or PPM (Pillow would write float as PFM)
        return (_converted(image, "RGB") if variant == "ppm"
                else _converted(image, "I;16") if image.mode == "F" else image)
    if variant == "pbm":
        return _converted(image, "L").convert("1", dither=Image.Dither.NONE)
    return _converted(image, "I;16" if image.mode in _SIXTEEN_BIT else "L")


def _with_gif_alpha(image):
    """`image` with the alpha GIF holds, one transparent colour: alpha below 128 transparent, 128 and up
    opaque (Pillow's writer makes alpha 0 alone transparent, the rest opaque, and an image with no
    alpha 0 was refused). An image none of whose alpha is below 128 is opaque, in RGB (or L for grey)."""
    from PIL import Image

    if not _has_visible_alpha(image):
        return image
    grey = image.mode in ("LA", "La")
    rgba = image.convert("RGBA")
    opaque = np.asarray(rgba.getchannel("A")) >= 128
    if opaque.all():
        return rgba.convert("L" if grey else "RGB")
    rgba.putalpha(Image.fromarray(np.where(opaque, 255, 0).astype(np.uint8), "L"))
    return rgba


# Why a format that holds alpha cannot hold it as Pillow writes it (read back, the image has none)
_BMP_ALPHA_UNSEEN = (" as Pillow writes it (in the bytes of 32-bit pixels that the format leaves unused, where "
                     "readers, Pillow's among them, see none)")
_ALPHA_UNSEEN = {"BMP": _BMP_ALPHA_UNSEEN, "DIB": _BMP_ALPHA_UNSEEN}


def _saved(image, format_name: str | None, shown_as: str | None = None) -> bytes:
    """The bytes of `image` in `format_name` (named `shown_as` in errors, if given), in the first of its
    mode and the fallback modes that the format really holds: Pillow converts some modes on its own
    (16-bit to 8-bit by clipping, alpha dropped), so each try is read back and checked."""
    from PIL import Image

    _check_sides(format_name, image.width, image.height)
    wants_alpha, deep = _has_visible_alpha(image), image.mode in _SIXTEEN_BIT
    options = {"sizes": [image.size]} if format_name == "ICO" else {}  # else Pillow writes 16x16..256x256 icons
    error = None
    for mode in dict.fromkeys([image.mode, *_fallback_modes(image, wants_alpha)]):
        candidate = image if mode == image.mode else _converted(image, mode)
        buffer = BytesIO()
        try:
            candidate.save(buffer, format=format_name, **options)
        except (OSError, ValueError) as exc:  # written to memory: the format refused the mode
            # or writes nothing: a stub of Pillow's (HDF5, GRIB, BUFR, WMF), which said alpha was what it could not hold
            if "unknown file extension" in str(exc) or "save handler not installed" in str(exc):
                raise VQCodecError(f"cannot write image: {exc}") from None
            error = error or exc  # the image's own mode's: "cannot write mode LA as MSP", not the last fallback's
            continue
        except KeyError as exc:
            raise VQCodecError(f"cannot write image: unknown format {exc}") from None
        except OverflowError:  # a size field of the format's header (PCX: 16-bit bytes per line)
            raise VQCodecError(f"{format_name} cannot hold a {image.width}x{image.height} image: "
                               "write .png or .tif") from None
        buffer.seek(0)
        try:
            written = Image.open(buffer)
        # a format Pillow writes but cannot read back (PDF, Palm): nothing to check, but
        except (Image.DecompressionBombError, *PILLOW_READ_ERRORS):
            if wants_alpha and candidate.mode == "P" and "transparency" not in candidate.info:
                continue  # alpha in a palette's entries alone, which their writers left out: as a band (RGBA)
            return buffer.getvalue()
        with written:
            if written.size != image.size:  # ICO and ICNS scale to the sizes they hold
                raise VQCodecError(f"{format_name} cannot hold a {image.width}x{image.height} image at its size: "
                                   "write .png or .tif")
            if wants_alpha and not written.has_transparency_data:
                continue
            if deep and candidate.mode in _SIXTEEN_BIT and written.mode not in _SIXTEEN_BIT:
                continue
        return buffer.getvalue()
    if wants_alpha:
        how = _ALPHA_UNSEEN.get(format_name, "")
        raise VQCodecError(f"{shown_as or format_name or 'this format'} cannot hold the image's alpha channel{how}: "
                           f"write .png, .webp or .tif")
    raise VQCodecError(f"cannot write image: {error}")


def _converted(image, mode: str):
    """`image` in `mode`; 16-bit, 32-bit and float grey are scaled to its range, not clipped, and
    grey to float (F) as 0.0 to 1.0."""
    from PIL import Image

    if mode == "F" and image.mode in GREY_MODES:
        return Image.fromarray(_unit_grey(image).astype(np.float32), "F")
    if image.mode not in _SIXTEEN_BIT or mode not in ("L", "I;16", "RGB"):
        return image.convert(mode)
    values = _unit_grey(image)
    if mode in ("L", "RGB"):
        return Image.fromarray(np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8), "L").convert(mode)
    return Image.frombytes("I;16", image.size, np.clip(np.round(values * 65535.0), 0, 65535).astype("<u2").tobytes())


def _unit_grey(image) -> np.ndarray:
    """A grey image's values as float64, 0.0 black to 1.0 white (as planes_to_image scales them)."""
    if image.mode not in _SIXTEEN_BIT:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return np.asarray(image, dtype=np.float64) / (1.0 if image.mode == "F" else 65535.0)


def _format_name(name: str | None) -> str | None:
    if name is None:
        return None
    return image_format_of_suffix("." + name.lower()) or name.upper()


def _has_visible_alpha(image) -> bool:
    """Whether any pixel of the image is not fully opaque."""
    if not image.has_transparency_data:
        return False
    alpha = image.getchannel("A") if "A" in image.getbands() else image.convert("RGBA").getchannel("A")
    return alpha.getextrema()[0] < 255


def _fallback_modes(image, keep_alpha: bool) -> list[str]:
    """Modes to try after the image's own, nearest first. Alpha is never dropped, so images with
    visible alpha only try RGBA; fully opaque alpha may go."""
    if keep_alpha:
        return ["RGBA"]
    if image.mode in ("L", "1", "LA"):
        return ["L", "RGB"]  # RGB for formats without grey (QOI)
    if image.mode in _SIXTEEN_BIT:
        return ["I;16", "L", "RGB"]
    return ["RGB"]


def check_image_size(width: int, height: int) -> None:
    """The container's bounds on a new image file, checked before anything is coded (naming_the_image names the file
    the image was read from)."""
    if min(width, height) < 1:
        raise VQCodecError(f"image {width}x{height} is empty")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise VQCodecError(f"image {width}x{height} exceeds the size limit of {MAX_IMAGE_SIDE} pixels a side and "
                           f"{MAX_IMAGE_PIXELS} pixels")


def edge_padded(rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Rows [top, bottom) and columns [left, right) of an (h, w, 3) image padded past its bottom and
    right edges by repeating its last row and column (top < h, left < w): the tile of the whole image
    padded so, made without padding (so copying) the whole image."""
    h, w = rgb.shape[:2]
    part = rgb[top:min(bottom, h), left:min(right, w)]
    return np.ascontiguousarray(np.pad(part, ((0, max(0, bottom - h)), (0, max(0, right - w)), (0, 0)), mode="edge"))


def image_array_fixes(array: np.ndarray) -> str:
    """What would make `array`, refused as an image, one of the uint8 (height, width[, channels]) arrays taken,
    where it looks like an image in another layout or type (a torch image batch, channels first, floats of 0..1):
    ' (' and the fixes ')', or nothing."""
    fixes = []
    if array.ndim == 4:
        fixes.append("one image at a time, not a batch: image[i]")
    if array.ndim in (3, 4) and array.shape[-3] in (1, 3, 4) and array.shape[-1] not in (3, 4):
        fixes.append("channels last, not first: a tensor's permute(1, 2, 0) or np.moveaxis(image, 0, -1)")
    if np.issubdtype(array.dtype, np.floating):
        fixes.append("uint8 of 0..255, not floats: (image * 255).round() as uint8 for floats of 0..1, as torchvision's")
    elif array.dtype != np.uint8 and np.issubdtype(array.dtype, np.integer):
        fixes.append("uint8 of 0..255: image.astype(np.uint8) or a tensor's to(torch.uint8)")
    return f" ({'; '.join(fixes)})" if fixes else ""


def image_of_array(array: np.ndarray):
    """A uint8 array (height, width), (height, width, 3) or (height, width, 4) as a Pillow image."""
    from PIL import Image

    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise VQCodecError("an image array must be uint8 (height, width), (height, width, 3) or (height, width, 4), "
                           f"not {array.dtype} {array.shape}{image_array_fixes(array)}")
    if min(array.shape[:2]) < 1:
        raise VQCodecError(f"image of {array.shape[1]}x{array.shape[0]} pixels is empty")
    check_image_size(array.shape[1], array.shape[0])  # before Pillow copies it (a broadcast array: gigabytes)
    return Image.fromarray(np.ascontiguousarray(array), {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2
                                                                                    else array.shape[2]])
