"""Which media an input or output is: audio or an image, by its name, its first bytes or the format asked for."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import VQCodecError
from .imagedata import PILLOW_READ_ERRORS
from .soundio import AUDIO_EXTENSIONS, audio_format_named, open_sound
from .streams import StreamFromHere, input_name, is_seekable, left_where_it_was
from .wording import shown_cut

# The Netpbm variants, whose extension says what they hold: PBM black and white, PGM grey, PPM colour,
# PNM any of these three, PFM float
NETPBM_VARIANTS = {"pbm", "pgm", "ppm", "pnm", "pfm"}
# Raster formats Pillow reads (soundfile claims none of these extensions)
IMAGE_EXTENSIONS = {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
                    ".gif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".qoi", ".jp2", ".j2k", ".jpx",
                    ".tga", ".spi", ".spider"}


def format_kind(format_name: str) -> str | None:
    """"audio" or "image": the media kind a format name writes; None for a name neither knows."""
    from PIL import Image

    if audio_format_named(format_name) is not None:
        return "audio"
    Image.init()
    if format_name.upper() in Image.SAVE or image_format_of_suffix("." + format_name.lower()) in Image.SAVE:
        return "image"
    return None


def refuse_format_of_other_kind(format_name: str, audio: bool, given: str, holds: str) -> None:
    """Refuse a format (given as `given`: --format, format_hint) of the other media kind than what is written,
    audio or not (an image format for audio, or an audio format for an image), before anything is decoded;
    `holds` says what is written ("talk.vq holds audio")."""
    kind = format_kind(format_name)
    if audio and kind == "image":
        raise VQCodecError(f"{given} {format_name} is an image format, and {holds}: "
                           "use an audio format (WAV, FLAC, OGG, OPUS, MP3)")
    if not audio and kind == "audio":
        raise VQCodecError(f"{given} {format_name} is an audio format, and {holds}: "
                           "use an image format (PNG, WEBP, JPEG, ...)")


# Extensions that name a container more than one format writes into: Ogg Opus in .ogg, any Netpbm in .pnm
FORMATS_OF_EXTENSION = {"OGG": {"OPUS"}, "PNM": {"PBM", "PGM", "PPM"}}


def _written_format(name: str) -> str | None:
    """The format that a format name or an extension (without its dot) writes: soundfile's (OPUS for Ogg
    Opus), a Netpbm variant's or Pillow's; None for a name of neither."""
    if name.lower() in NETPBM_VARIANTS:
        return name.upper()
    if format_kind(name) == "image":
        return image_format_of_suffix("." + name.lower()) or name.upper()
    return audio_format_named(name)


def refuse_format_against_name(format_name: str, output_path, given: str) -> None:
    """Refuse a format (given as `given`: --format, format_hint) other than the one the output's extension
    names (GIF data under a .png name), before anything is decoded; an extension that names no format is
    left to the format given."""
    named, asked = _written_format(Path(output_path).suffix.lstrip(".")), _written_format(format_name)
    if named is not None and asked is not None and asked != named and asked not in FORMATS_OF_EXTENSION.get(named, ()):
        raise VQCodecError(f"{output_path}: its extension names {named}, and {given} {format_name} asks for {asked}: "
                           f"leave {given} out, or give the output a name of that format")


def media_kind_of(path: Path) -> str | None:
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


MEDIA_KINDS = ("audio", "image")
SIGNATURE_BYTES = 16  # the first bytes of a file that is_image_signature reads


def media_kind(name, head: bytes | None = None, forced: str | None = None) -> str:
    """The media kind, "audio" or "image", of one input, as `vqcodec encode` and `codes` choose it: `forced` where
    given, else its name's (kind_by_name), else "image" where its first bytes, `head`, are an image format's
    signature (is_image_signature), else "audio". `name`: the input's path, or None for one without a name (stdin);
    `head` None: read from the regular file `name` (nothing read from anything else, a FIFO's bytes being gone once
    read)."""
    if forced not in (None, *MEDIA_KINDS):
        raise VQCodecError(f"forced is 'audio', 'image' or None, not {shown_cut(forced)}")
    if forced:
        return forced
    by_name = kind_by_name(name) if name is not None else None
    if by_name:
        return by_name
    if head is None:
        head = _first_bytes(name)
    return "image" if is_image_signature(head) else "audio"


def _first_bytes(name) -> bytes:
    """The SIGNATURE_BYTES a regular file `name` begins with; none for no name, or a file that is none or cannot be
    read (its reading then says why)."""
    if name is None or not os.path.isfile(name):
        return b""
    try:
        with open(name, "rb") as file:
            return file.read(SIGNATURE_BYTES)
    except OSError:
        return b""


def kind_by_name(path) -> str | None:
    """The media kind a file's extension gives (media_kind_of), or "image" for one of another image format Pillow
    reads that soundfile cannot open (an .ico: image_by_its_name); None for neither."""
    return media_kind_of(Path(path)) or ("image" if image_by_its_name(path) else None)


def audio_for_want_of_an_image(name, kind: str, forced: str | None = None) -> bool:
    """Whether media_kind took an input (`name`, None for stdin) for audio, `kind`, only for want of an image's name
    or signature (stdin, or a .heic photo where no plugin gives Pillow that format, or a FIFO under an image's name,
    which image_by_its_name does not read), not as audio soundfile opens under an image's name (a file named .ico)."""
    return kind == "audio" and not forced and (name is None or media_kind_of(Path(name)) is None
                                               and not (named_as_an_image(name) and os.path.isfile(name)))


def is_image_signature(head: bytes) -> bool:
    """Whether a file's first 16 bytes are those of an image format of IMAGE_EXTENSIONS (all but TGA and
    SPIDER, which have none): how input without a known extension, such as stdin, is told apart."""
    return (head[:4] in (b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"qoif") or head[:2] in (b"\xff\xd8", b"BM")
            or head[8:12] == b"WEBP" or head[4:12] in (b"ftypavif", b"ftypavis")
            or head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51"
            or (head[:1] == b"P" and head[1:2] in b"1234567fF" and head[2:3] in (b" ", b"\t", b"\n", b"\r")))


def named_as_an_image(name) -> bool:
    """Whether a file name (a str or Path; anything else is none) ends in the extension of an image format Pillow reads
    the pixels of: one of IMAGE_EXTENSIONS, or another of Pillow's registry (ICO, PCX, PSD; HEIC where a plugin adds
    it) that soundfile claims none of, but not MPEG's (a video, of which Pillow reads the size) nor a stub's (BUFR,
    GRIB, HDF5, WMF off Windows, which read nothing without a handler a program installs)."""
    from PIL import Image, ImageFile

    suffix = Path(name).suffix.lower() if isinstance(name, (str, Path)) else ""
    if suffix in IMAGE_EXTENSIONS or suffix in AUDIO_EXTENSIONS or not suffix:
        return suffix in IMAGE_EXTENSIONS
    named = image_format_of_suffix(suffix)  # which loads Pillow's registry
    reader = Image.OPEN.get(named)
    return reader is not None and named != "MPEG" and not (
        isinstance(reader[0], type) and issubclass(reader[0], ImageFile.StubImageFile))


def image_by_its_name(source, start: int = 0) -> bool:
    """Whether media given as a path or a stream that can seek (read from `start`, and left where it was) is an image
    by its name: named_as_an_image, and neither empty nor audio that soundfile opens (a file soundfile reads is audio
    whatever its name). A FIFO is not read: its bytes would be gone."""
    if not named_as_an_image(input_name(source)):
        return False
    if isinstance(source, (str, Path)):
        return os.path.isfile(source) and os.path.getsize(source) > 0 and not _opens_as_audio(source)
    if not is_seekable(source):
        return False
    try:
        with left_where_it_was(source):
            source.seek(start)
            if not source.read(1):
                return False
            source.seek(start)
            return not _opens_as_audio(source)
    except (OSError, ValueError):  # closed, or no longer readable: the reading's error stands
        return False


def identified_as_an_image(source, start: int = 0) -> bool:
    """Whether Pillow opens media given as a path or a stream that can seek (read from `start`, and left where it was)
    from its header: an image of a format without a signature is_image_signature knows (ICO, TGA, PCX) and without a
    name to tell it by (a stream of its bytes). Its pixels are not read."""
    import warnings

    from PIL import Image

    is_path = isinstance(source, (str, Path))
    with contextlib.nullcontext() if is_path else left_where_it_was(source):
        try:
            if not is_path:
                source.seek(start)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Image.open(source if is_path else StreamFromHere(source)).close()  # which leaves the stream open
            return True
        except Image.DecompressionBombError:  # an image, and too large to code: its reading says so
            return True
        except PILLOW_READ_ERRORS:  # UnidentifiedImageError among them
            return False


def _opens_as_audio(source) -> bool:
    """Whether open_sound opens `source` (a path, or a stream from where it is); what the MP3 decoder says of it is
    dropped."""
    try:
        open_sound(source, said=[]).close()
    except VQCodecError:
        return False
    return True


# Suffixes of a format Pillow writes but knows no extension of (SPIDER's writer registers the one of the
# name it saves to, as it saves)
IMAGE_SUFFIX_FORMATS = {".spi": "SPIDER", ".spider": "SPIDER"}


def image_format_of_suffix(suffix: str) -> str | None:
    """The Pillow format a file name's suffix (".png", lower case) names, or None."""
    from PIL import Image

    Image.init()
    return Image.EXTENSION.get(suffix) or IMAGE_SUFFIX_FORMATS.get(suffix)
