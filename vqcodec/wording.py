"""Wording shared by messages: counted nouns ("1 file", "2 files"), and the names of settings, which
are the command line's options (--device) while one of its commands runs and the Python API's
arguments (device=) otherwise."""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import math
import os
import re
import shlex
import sys

# A context variable, so that another thread using the API while a command runs keeps the API's wording;
# the command's own worker threads run in a copy of its context (data.Batches).
_command_line_running = contextvars.ContextVar("vqcodec_command_line_running", default=False)


# What begins each warning line on stderr: a file's (the command line's warnings) and training's own alike
WARNING_PREFIX = "vqcodec: warning: "

# What an input that may be a file or a folder says where it is not there: encode's, decode's, codes' and eval's
# (evaluate.files_of's); info's and pack's, a file alone, say "no such file"
FILE_OR_FOLDER_MISSING = "no such file or directory"


def kind_coded(kind: str) -> str:
    """What a model of media `kind` ("audio", "image") codes, in words: "audio", "images"."""
    return "audio" if kind == "audio" else "images"


def kind_held(kind: str) -> str:
    """One input of media `kind` in words: "audio", "an image"."""
    return "audio" if kind == "audio" else "an image"


def type_of(value) -> str:
    """What `value` is, as a message names it after "not": "None", "bytes", "an int", "a list", "an ndarray" (its
    type's name with its article: "a int", "a bytes" and "a NoneType" were said)."""
    if value is None:
        return "None"
    name = type(value).__name__
    if name == "bytes":
        return name
    return f"an {name}" if name[0].lower() in "aeiou" or name in _SAID_WITH_A_VOWEL else f"a {name}"


_SAID_WITH_A_VOWEL = {"ndarray"}  # "en-dee-array", as NumPy's documentation says it


def rate_unit(kind: str) -> str:
    """The unit a rate target of media `kind` ("audio", "image") is given in, in words: "kbps", "bits per pixel"."""
    return "kbps" if kind == "audio" else "bits per pixel"


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an "s" unless count is 1."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def capped_list(items, limit: int = 3) -> str:
    """`items` (text) joined by commas, no more than `limit` of them: the rest counted, "a, b, c and 4 more", so that
    a line listing what a folder holds stays one readable line however many it holds."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} and {len(items) - limit} more"


def decimals_for(value: float, decimals: int, significant: int = 3) -> int:
    """How many decimals show `value`: `decimals`, or more where those would keep fewer than `significant` digits of
    it (a duration of 7 samples at 16 kHz, 0.0004375 s, was shown as 0.000)."""
    if not value or not math.isfinite(value):
        return decimals
    return max(decimals, significant - 1 - math.floor(math.log10(abs(value))))


def one_line(message: str) -> str:
    """A message as one line: a file name may hold a line break, which split it (shown as \\n, as ls shows it)."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def shown(value) -> str:
    """`value` as a message quotes it, its repr, but a path as its name (not PosixPath('a.wav')) and a NumPy
    scalar as the Python number or flag it holds (not np.int64(9)). A 0-d array or tensor keeps its repr
    (tensor(16000)): the checks of numbers take the number it holds first (streams.scalar_of). While a command of the
    command line runs, text holding a byte that is not UTF-8 is quoted as a shell takes it back, $'a\\xffb'
    (shell_quoted; its repr, 'a\\udcffb', names no file there)."""
    numpy = sys.modules.get("numpy")  # a NumPy scalar exists only once NumPy is imported
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    elif numpy is not None and isinstance(value, numpy.generic):
        value = value.item()
    if isinstance(value, str) and _command_line_running.get() and any("\udc80" <= c <= "\udcff" for c in value):
        return shell_quoted(value)
    return repr(value)


def shown_cut(value, limit: int = 60) -> str:
    """`value` shown (shown), no longer than about `limit` characters, '...' after it where cut. Text and a path
    are cut before they are quoted (a quote cut after quoting could be left open, $'a\\x); another value's repr
    is cut, the '...' telling that the rest is left out."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return shown(value[:limit]) + ("..." if len(value) > limit else "")
    text = shown(value)
    return text if len(text) <= limit else text[:limit] + "..."


def shell_quoted(text: str) -> str:
    """`text` in the shell's ANSI-C quotes (bash, zsh, ksh): $'a\\xffb' for a name holding byte 0xff, which Python
    holds as the lone surrogate U+DCFF; a quote, a backslash and a character that cannot be printed escaped (one
    beyond ASCII as the bytes of the name: the shell reads \\xa0 as byte 0xa0, where U+00A0 is c2 a0)."""
    def escaped(char: str) -> str:
        if char in "\\'":
            return "\\" + char
        if char.isprintable():
            return char
        if char >= "\x80":
            with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate that stands for no byte is not one
                return "".join(f"\\x{byte:02x}" for byte in os.fsencode(char))
        return char.encode("unicode_escape").decode("ascii")  # \n, \x01

    return "$'" + "".join(escaped(char) for char in text) + "'"


def shell_word(text) -> str:
    """`text` (or a path) as one word of a command line for the user to paste: shlex.quote where it is printable,
    else in ANSI-C quotes (shell_quoted): a byte that is not UTF-8 (a lone surrogate, which is not printable) or a
    line break in shlex.quote's quotes names no file once the message is written out."""
    text = os.fspath(text)
    if text.isprintable():
        return shlex.quote(text)
    return shell_quoted(text)


def valid_text(text: str) -> str:
    """`text` as valid Unicode, which JSON readers other than Python's take: a byte of a file name that is not
    UTF-8, which Python holds as a lone surrogate (U+DCFF for 0xff), becomes U+FFFD, as any other lone surrogate."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def name_fields(key: str, name) -> dict:
    """A file name in JSON, as valid Unicode: {KEY: name}; a name that is not UTF-8 (Linux takes any bytes but / and
    NUL) is shown there with U+FFFD for each byte that is not, and KEY_hex holds its bytes exactly, in hex
    (tokens.listed_name reads it back)."""
    name = os.fspath(name)
    shown = valid_text(name)
    try:
        return {key: shown} if shown == name else {key: shown, f"{key}_hex": os.fsencode(name).hex()}
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte: the name of no file
        return {key: shown}


def json_names(value):
    """`value` (what a command prints as JSON) with name_fields' rule throughout: a text KEY that is not valid
    Unicode is shown with U+FFFD and given exactly in KEY_hex; a list (or tuple) of them under KEY, of lists too,
    gets KEY_hex, a list of the same shape of the hex of each such name (null for the others); text elsewhere is
    made valid (valid_text)."""
    if isinstance(value, dict):
        ready = {}
        for key, item in value.items():
            key = valid_text(key) if isinstance(key, str) else key
            if isinstance(item, str):
                ready.update(name_fields(key, item))
                continue
            ready[key] = json_names(item)
            if isinstance(item, (list, tuple)) and (exact := _names_hex(item)) is not None:
                ready[f"{key}_hex"] = exact
        return ready
    if isinstance(value, (list, tuple)):
        return [json_names(item) for item in value]
    return valid_text(value) if isinstance(value, str) else value


def _names_hex(items) -> list | None:
    """The hex of each text of `items` (a list or tuple, of them too) that is not valid Unicode, as name_fields
    gives it, null for the others (a list for a list); None where there is none."""
    found = [_names_hex(item) if isinstance(item, (list, tuple))
             else name_fields("", item).get("_hex") if isinstance(item, str) else None for item in items]
    return found if any(exact is not None for exact in found) else None


def names_of_json(value):
    """`value` as json_names had it before: each KEY beside which KEY_hex gives a name's bytes (a list of them, null
    for a name that is valid text, for a list) holds that name again, as this process names files, and KEY_hex
    goes; hex that is not hex, or not of the shape of KEY's value, leaves KEY as it reads."""
    if isinstance(value, list):
        return [names_of_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    ready = {key: names_of_json(item) for key, item in value.items()
             if not (isinstance(key, str) and key.endswith("_hex") and key[:-4] in value)}
    for key in ready:
        if isinstance(key, str) and f"{key}_hex" in value:
            ready[key] = _exact_names(ready[key], value[f"{key}_hex"])
    return ready


def _exact_names(shown, exact):
    """The names whose bytes `exact` gives in hex (as _names_hex or name_fields wrote them), `shown` where it gives
    none, or none that fits."""
    if isinstance(shown, list) and isinstance(exact, list) and len(shown) == len(exact):
        return [item if hex_ is None else _exact_names(item, hex_) for item, hex_ in zip(shown, exact)]
    if isinstance(shown, str) and isinstance(exact, str):
        try:
            return os.fsdecode(bytes.fromhex(exact))
        except ValueError:
            return shown
    return shown


NAME_BYTES = "vqcodec-name-bytes"  # the error handler the command line writes its stdout and stderr with


def _name_bytes(error: UnicodeEncodeError) -> tuple[str | bytes, int]:
    """A character the stream's encoding cannot write: a byte of a file name that is not UTF-8, which Python holds
    as a lone surrogate (U+DCFF for 0xff), as that byte, the name a shell takes back (as ls writes it to a pipe);
    any other character as Python's stderr writes it, escaped (\\u4e2d)."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if "\udc80" <= char <= "\udcff":
        return bytes([ord(char) - 0xdc00]), error.start + 1
    return char.encode("ascii", "backslashreplace").decode("ascii"), error.start + 1


codecs.register_error(NAME_BYTES, _name_bytes)


def reason_of(exc: Exception) -> str:
    """Why `exc` was raised, for a message that names the file itself: an OSError of the system's, its strerror
    ("No such file or directory"; its str, "[Errno 2] No such file or directory: '/x.png'", names the file
    again), another error its own words."""
    return getattr(exc, "strerror", None) or str(exc)


def skipping(path, reason: str) -> str:
    """A folder command's line (training's and fit-prior's too) for a file it leaves out, "skipping PATH: WHY", its
    path once, whether or not `reason` names it ("cannot read audio x.wav: Format not recognised." gives "skipping
    x.wav: cannot read audio: Format not recognised."), as one line (one_line), its summary's and a stop's alike."""
    named = str(path)
    if reason.startswith(f"{named}: "):
        return one_line(f"skipping {reason}")
    unnamed = re.sub(rf" {re.escape(named)}(?=[:\s)]|$)", "", reason, count=1)
    return one_line(f"skipping {reason}" if named in unnamed else f"skipping {path}: {unnamed}")


def not_its_codes(whose: str, codes_id: bytes | None, codec, made: str, advice: str) -> str:
    """The refusal of codes that `codec` does not make (Codec.makes_codes_of), by the Codec API and by pack alike.
    `whose` says whose they are ("these codes were made by model M"), `made` the word it puts before the model
    ("by", "of"), `codes_id` the codes id of the model that made them where they record it, and `advice` what to do
    with them ("decode them with the model that made them")."""
    advice = f"{advice} (or a decoder-only fine-tune of it)"
    if codes_id is not None:
        return (f"{whose}, whose encoder and codebooks (codes id {codes_id.hex()}) are not those of model "
                f"{codec.name} ({codec.model_id.hex()}, codes id {codec.codes_id.hex()}): {advice}")
    return (f"{whose}, not {made} model {codec.name} ({codec.model_id.hex()}) nor {made} a model it knows to make "
            f"the same codes: {advice}")


@contextlib.contextmanager
def command_line_wording():
    """Messages raised while the block runs (a command of the command line) name its options."""
    token = _command_line_running.set(True)
    try:
        yield
    finally:
        _command_line_running.reset(token)


def setting(option: str, argument: str) -> str:
    """How a message names a setting: `option` (such as "--device cuda") on the command line, `argument`
    (such as "device='cuda'") from Python."""
    return option if _command_line_running.get() else argument
