"""Checks that an image file holds the pixels its header gives, where Pillow would read damage without a word:
image data that ends before the last row (PNG, baseline or progressive JPEG, a PNG inside an ICO), a palette pixel
whose index lies beyond its palette, a TIFF's offsets damaged to another type. Each raises an OSError of the file's
fault (one of PILLOW_READ_ERRORS, which imageio.open_image turns into a refusal that names the file)."""
from __future__ import annotations

import os
import struct
import zlib
from io import BytesIO

import numpy as np

from .streams import left_where_it_was
from .wording import plural

# What Pillow raises of a file it cannot read, opened or loaded (ImageFile.load turns a tile's IndexError and
# struct.error into OSError; a PNG's broken chunk is a SyntaxError, a file of an unknown raw mode a ValueError, one
# that ends early an EOFError, a damaged AVIF libavif's RuntimeError as it opens or loads, "Failed to decode image:
# Missing or empty image item", a DDS of a pixel format it does not read a NotImplementedError, which is one): any
# other error (a NameError, TypeError or AttributeError) is a bug, not the file's
PILLOW_READ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, RuntimeError, struct.error)

# BMP compressions: pixels of fixed layout (32-bit: B, G, R, a byte left unused), or of masks
BMP_BI_RGB, BMP_BITFIELDS = 0, 3


# The TIFF tags whose values Pillow uses as whole numbers of 0 or more without a check
TIFF_WHOLE_NUMBER_TAGS = {273: "StripOffsets", 324: "TileOffsets", 320: "ColorMap"}
TIFF_OFFSET_TAGS = (273, 324)  # of them, those Pillow seeks to
FILE_OFFSETS = 2**63  # the places a seek takes (0 to 2**63 - 1)


def check_tiff_numbers(image) -> None:
    """Refuse a TIFF not yet read whose strip or tile offsets, or colour map, are not whole numbers of 0 or more
    (a tag damaged to another type: fractions, text, signed numbers): Pillow read them as they came, and raised
    TypeError ("'IFDRational' object cannot be interpreted as an integer") or OverflowError, a traceback; or whose
    offsets (of type LONG8) lie past any file's end, 2**63 or more, which a seek in a file refuses in Python's words
    and one in memory (imageio's reading of a channel of unspecified meaning as alpha) with an OverflowError."""
    if image.format != "TIFF" or not image.tile:
        return
    for tag, name in TIFF_WHOLE_NUMBER_TAGS.items():
        values = image.tag_v2.get(tag, ())
        values = values if isinstance(values, tuple) else (values,)
        if not all(isinstance(value, int) and value >= 0 for value in values):
            raise OSError(f"its {name} tag holds values other than whole numbers of 0 or more: damaged")
        if tag in TIFF_OFFSET_TAGS and any(value >= FILE_OFFSETS for value in values):
            raise OSError(f"its {name} tag places its data past any file's end: damaged")


PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples a pixel of each PNG colour type: grey, RGB, palette, LA, RGBA
PNG_PASSES = {0: ((0, 0, 1, 1),),  # (first column, first row, column step, row step) of each pass, by interlace
              1: ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))}


def _png_data_bytes(width: int, height: int, bits: int, colour_type: int, interlace: int) -> int:
    """The bytes a PNG's image data inflates to: each row of each pass, a filter byte and its packed samples."""
    total = 0
    for x0, y0, dx, dy in PNG_PASSES[interlace]:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + -(-columns * bits * PNG_SAMPLES[colour_type] // 8))
    return total


def check_png_data(image) -> None:
    """Refuse a PNG whose image data (its one zlib stream, over its IDAT chunks) ends before the rows its
    header gives: Pillow, and so encoding and training, filled the rows it lacks with black, without a word
    (a header edited or damaged to a greater height). A file cut short is left to Pillow, which says so."""
    stream = getattr(image, "fp", None)
    if image.format != "PNG" or not image.tile or stream is None or getattr(stream, "closed", False):
        return  # loaded already, or closed: load() says so
    with left_where_it_was(stream):
        try:
            stream.seek(8)
            ihdr = stream.read(25)
            width, height, bits, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[8:21])
            if colour_type not in PNG_SAMPLES or interlace not in PNG_PASSES:
                return  # Pillow refuses it
            needed, inflated = _png_data_bytes(width, height, bits, colour_type, interlace), 0
            inflate = zlib.decompressobj()
            stream.seek(image.tile[0][2] - 8)  # the offset of its data (a tuple before Pillow 11)
            while inflated < needed and not inflate.eof:
                head = stream.read(8)
                if len(head) < 8:
                    return  # cut short
                length, kind = struct.unpack(">I4s", head)
                if kind != b"IDAT":
                    if not inflated:
                        return  # not the default image's data: an APNG frame after it, of a size of its own
                    break
                left = length
                while left and inflated < needed and not inflate.eof:
                    piece = stream.read(min(left, 1 << 20))
                    if not piece:
                        return
                    left -= len(piece)
                    while piece and inflated < needed:
                        inflated += len(inflate.decompress(piece, 1 << 20))
                        piece = inflate.unconsumed_tail
                stream.seek(left + 4, os.SEEK_CUR)  # the rest of the chunk, and its CRC
        except (OSError, ValueError, struct.error, zlib.error):
            return  # Pillow says what is wrong
    if inflated < needed:
        raise _ends_before_last_row(width, height)


# The formats whose palette Pillow reads with the entries the file gives, no more: a pixel's index beyond is damage
PALETTE_CHECKED_FORMATS = {"PNG", "BMP", "DIB", "GIF", "TIFF", "TGA"}


def check_palette_indices(image) -> None:
    """Refuse a palette image, just read (PALETTE_CHECKED_FORMATS), without a palette (a PNG without its PLTE
    chunk), or with a pixel whose index lies beyond its palette's entries: errors, says the PNG standard, and
    undefined in a BMP, a GIF's colour table, a TIFF's ColorMap (whose entries are 2**bits a sample, no fewer) or
    a TGA's colour map; Pillow read those pixels as black, without a word. A GIF's transparent index may lie beyond
    its colour table: its pixels have no colour. A palette of RGBA entries (a TGA's of 32 or 16 bits) has 4 bytes
    an entry, once read."""
    palette = image.palette.palette if image.palette is not None else b""
    transparent = image.info.get("transparency") if image.format == "GIF" else None
    entries = len(palette) // len(image.palette.mode) if palette else 0
    largest = max((index for index, count in enumerate(image.histogram()) if count and index != transparent),
                  default=0)
    if not entries:
        raise OSError(f"it has no palette{' (PLTE chunk)' if image.format == 'PNG' else ''} for its palette pixels: "
                      "damaged")
    _check_largest_index(largest, entries)


def _check_largest_index(largest: int, entries: int) -> None:
    """Refuse a palette image whose largest pixel index, `largest`, lies beyond its palette of `entries` colours."""
    if largest >= entries:
        raise OSError(f"a pixel's palette index, {largest}, lies beyond its palette of {plural(entries, 'colour')}: "
                      "damaged")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_ico_entry(image) -> None:
    """Refuse an ICO whose image read is damaged as its own PNG or BMP would be refused (Pillow read the ICO as it
    opened it, without those checks): a PNG whose data ends before its last row (check_png_data), and a BMP of 1, 4
    or 8 bits a pixel with a pixel whose index lies beyond its colours (check_palette_indices), whose pixels
    Pillow read as black, without a word."""
    data = _ico_entry_read(image)
    if data is None:
        return
    if data.startswith(PNG_SIGNATURE):
        _check_ico_png_data(data)
        return
    if len(data) < 40:
        return
    size, width, height, _, bits, compression, _, _, _, colours, _ = struct.unpack("<IiiHHIIiiII", data[:40])
    if bits not in (1, 4, 8) or compression != BMP_BI_RGB or not 0 < colours < 2 ** bits or width <= 0:
        return
    rows, stride = abs(height) // 2, (width * bits + 31) // 32 * 4  # the colour half, then the mask
    pixels = data[size + 4 * colours:size + 4 * colours + stride * rows]
    if len(pixels) < stride * rows:
        return
    packed = np.frombuffer(pixels, np.uint8).reshape(rows, stride)
    indices = np.unpackbits(packed, axis=1) if bits == 1 else (
        np.stack([packed >> 4, packed & 15], axis=-1).reshape(rows, -1) if bits == 4 else packed)
    _check_largest_index(int(indices[:, :width].max(initial=0)), colours)


def _ico_entry_read(image) -> bytes | None:
    """The bytes of the entry of an ICO that Pillow read as its image, found through IcoImageFile.ico, which no
    public call stands for; None for another format, or where a Pillow has it no more as vqcodec knows it (the
    checks are left out)."""
    if image.format != "ICO":
        return None
    try:
        icons = image.ico
        entry = icons.entry[icons.getentryindex(image.size)]
        with left_where_it_was(icons.buf):
            icons.buf.seek(entry.offset)
            return icons.buf.read(entry.size)
    except (AttributeError, IndexError, TypeError, ValueError, OSError):
        return None


def _check_ico_png_data(data: bytes) -> None:
    """check_png_data of the PNG `data` an ICO's entry read holds, which Pillow read as it opened the ICO: one whose
    image data ends before the rows its header gives was read with those rows black."""
    from PIL import Image

    try:
        png = Image.open(BytesIO(data), formats=["PNG"])
    except PILLOW_READ_ERRORS:
        return  # Pillow read it from the ICO: unreadable here only where its entry's size is damaged
    with png:
        check_png_data(png)


def _ends_before_last_row(width: int, height: int) -> OSError:
    """The error of an image whose data ends before the last row its header gives (open_image and encode_image
    name the file)."""
    return OSError(f"its image data ends before its last row ({width}x{height} pixels): damaged")


JPEG_SEQUENTIAL_FRAMES = {0xC0, 0xC1}  # SOF0, SOF1: baseline and extended sequential, Huffman coded
JPEG_PROGRESSIVE_FRAME = 0xC2  # SOF2: progressive, Huffman coded
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9
JPEG_NOT_FRAMES = {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC: markers among the SOFs' that are none
# 64 one bits (0xFF stuffed), which begin no Huffman code: the decoder's look-ahead, no data
JPEG_ONES = b"\xff\x00" * 8
# Bits after a scan's data that a decoder reads only where the scan lacks blocks, and most Huffman tables read
# otherwise than one another: a scan decoded alike after each holds all its blocks
JPEG_LOOK_AHEADS = (JPEG_ONES, b"\x00" * 8, b"\x55" * 8)
JPEG_CHECK_SCALE = 8  # the check decodes at 1/8 of the size (DCT scaling): its rows are whole blocks, as the scan's


def _jpeg_first_scan(data: bytes) -> tuple[int | None, int, int, int] | None:
    """Of a JPEG's `data`: where its frame's SOF marker begins (None if none comes before its first scan), where that
    scan's data begin and end, and the marker that ends it; None where they cannot be found (cut short)."""
    at, frame_at = 2, None
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in JPEG_NOT_FRAMES:
            frame_at = at
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if marker == JPEG_SOS:
            scan_at = at
            while (at := data.find(b"\xff", at)) >= 0 and at + 1 < len(data):
                if data[at + 1] == 0 or 0xD0 <= data[at + 1] <= 0xD7 or data[at + 1] == 0xFF:  # stuffed, RSTn, fill
                    at += 1
                    continue
                return frame_at, scan_at, at, data[at + 1]
            return None
    return None


def _jpeg_one_mcu_wide(data: bytes, frame_at: int) -> bool:
    """Whether the JPEG whose SOF marker begins at `frame_at` of its `data` is one MCU wide: 8 pixels a block, and
    of a colour image, as many blocks as its most sampled component's horizontal factor (a grey one's MCU is one
    block, whatever its factor)."""
    frame = data[frame_at + 4:frame_at + 2 + int.from_bytes(data[frame_at + 2:frame_at + 4], "big")]
    if len(frame) < 6:
        return False
    width, components = int.from_bytes(frame[3:5], "big"), frame[5]
    factors = [frame[7 + 3 * index] >> 4 for index in range(components) if 7 + 3 * index < len(frame)]
    return width <= 8 * (max(factors, default=1) if components > 1 else 1)


class _ScanReadPast(Exception):
    """The decoder of check_jpeg_data asked for more than the scan's data: its image lacks rows."""


class _ScanData(BytesIO):
    """A JPEG's bytes up to the end of its scan, a read past which raises _ScanReadPast (whatever Pillow's
    ImageFile.LOAD_TRUNCATED_IMAGES, under which a read of nothing would end decoding without a word)."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            raise _ScanReadPast
        return data


def check_jpeg_data(image) -> None:
    """Refuse a JPEG whose data end before the rows its frame header gives: libjpeg decodes the blocks it lacks as
    zeros, a grey band, and Pillow hides libjpeg's warning (a header edited or damaged to a greater height). Its first
    scan is decoded again through Pillow's public calls (Image.open, Image.draft, load):
    - a sequential JPEG of one scan, at 1/8 of its size, up to its EOI with no marker after: a decoder that reads
      past that data lacks the rows. One MCU wide, whose look-ahead bits (JPEG_ONES) can complete the one MCU it
      lacks, it is decoded again at its full size with each of JPEG_LOOK_AHEADS after its data (_jpeg_reads_look_ahead);
    - a progressive JPEG, its first scan alone at 1/8 of its size with each of JPEG_LOOK_AHEADS after its data
      (_jpeg_reads_look_ahead).
    A scan that holds all its blocks reads none of those bits, and is decoded alike after each. Not told: a sequential
    scan that lacks no more than a block or two, which JPEG_ONES complete (one MCU wide: a flat grey block, of one AC
    code, read alike after each); a progressive first scan that lacks a single block, which is often decoded alike
    after each (the block as mid-grey), or whose DC tables hold one code (an optimised table of an image whose blocks
    all average mid-grey), which reads every block it lacks as a difference of 0, whatever follows (README Limits)."""
    stream = getattr(image, "fp", None)
    if image.format != "JPEG" or len(image.tile) != 1 or stream is None or getattr(stream, "closed", False):
        return
    with left_where_it_was(stream):
        try:
            stream.seek(0)
            data = stream.read()
        except (OSError, ValueError):
            return
    scan = _jpeg_first_scan(data)
    if scan is None or scan[0] is None:
        return  # cut short: Pillow says so
    frame_at, scan_at, end, marker = scan
    try:
        if data[frame_at + 1] == JPEG_PROGRESSIVE_FRAME:
            lacks = _jpeg_reads_look_ahead(image, data, scan_at, end, JPEG_CHECK_SCALE)
        elif data[frame_at + 1] in JPEG_SEQUENTIAL_FRAMES and marker == JPEG_EOI:
            _jpeg_decoded(image, data[:end] + JPEG_ONES, JPEG_CHECK_SCALE)
            lacks = _jpeg_one_mcu_wide(data, frame_at) and _jpeg_reads_look_ahead(image, data, scan_at, end, 1)
        else:
            return  # several sequential scans, arithmetic coded: libjpeg reads them otherwise
    except _ScanReadPast:
        lacks = True
    except PILLOW_READ_ERRORS:
        return  # damaged otherwise: reading the image says so
    if lacks:
        raise _ends_before_last_row(image.width, image.height)


def _jpeg_next_restart(scan: bytes) -> bytes:
    """The restart marker that comes next after the data of `scan` (RST0 to RST7 in turn, from RST0)."""
    last = max((scan.rfind(bytes((0xFF, 0xD0 + number))) for number in range(8)), default=-1)
    return bytes((0xFF, 0xD0 if last < 0 else 0xD0 + (scan[last + 1] - 0xD0 + 1) % 8))


def _jpeg_reads_look_ahead(image, data: bytes, scan_at: int, end: int, scale: int) -> bool:
    """Whether the first scan of JPEG `image`, whose `data` begin at `scan_at` and end at `end`, decodes otherwise (at
    1/`scale` of its size) with each of JPEG_LOOK_AHEADS after them, then its next restart marker, the same bits
    again and an EOI: a scan that lacks blocks reads them from those bits, and where it lacks whole restart
    intervals, libjpeg passes over the first bits as it seeks the marker, and reads the next interval from the
    second; a scan that holds all its blocks reads none of them (RSTn after it is a marker without data)."""
    restart = _jpeg_next_restart(data[scan_at:end])
    return len({_jpeg_decoded(image, data[:end] + bits + restart + bits + bytes((0xFF, JPEG_EOI)), scale)
                for bits in JPEG_LOOK_AHEADS}) > 1


def _jpeg_decoded(image, data: bytes, scale: int) -> bytes:
    """The pixels of `data`, JPEG `image`'s bytes cut and completed otherwise, decoded at 1/`scale` of its size
    (Image.draft's DCT scaling); raises _ScanReadPast where its decoder reads past `data`."""
    from PIL import Image

    from .imageio import warnings_recorded  # imageio imports this module

    # what opening it warns of (corrupt EXIF data) was said when the image was opened
    with warnings_recorded(), Image.open(_ScanData(data), formats=["JPEG"]) as scaled:
        if scale > 1:
            scaled.draft(scaled.mode, (max(1, image.width // scale), max(1, image.height // scale)))
        scaled.load()
        return scaled.tobytes()
