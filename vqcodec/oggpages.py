"""Ogg output the same byte for byte each time: libsndfile gives each Ogg stream it writes a random serial number,
so two decodings of one file differed in the serial and in the CRC of each page, which covers it. OggPages follows
the pages as they are written, checking each, and once the end-of-stream page is whole, gives what to write over each
page for its serial to be one derived from the pages' content. On anything unexpected it gives up following, and
libsndfile's bytes stay as they are (soundio.SoundSink)."""
from __future__ import annotations

import struct
import zlib

# capture pattern, version, header type flags, granule position, serial, page sequence number, CRC, segment count
PAGE_HEADER = struct.Struct("<4sBBqIIIB")
SERIAL_AT, CRC_AT = 14, 22
PATCHED_BYTES = 12  # serial, sequence number and CRC: bytes 14 to 25 of a page
FIRST_PAGE, LAST_PAGE = 0x02, 0x04  # header type flags: beginning and end of stream
_BITS_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 of `data`: polynomial 0x04C11DB7, not reflected, from 0, not inverted at the end. zlib's CRC-32
    has that polynomial reflected: of the bytes bit-reversed, from 0 and not inverted, it is Ogg's bit-reversed."""
    reflected = zlib.crc32(data.translate(_BITS_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int.from_bytes(reflected.to_bytes(4, "little").translate(_BITS_REVERSED), "big")


class OggPages:
    """The pages of one Ogg logical stream written from `start` (a stream offset) on, followed through wrote(data)
    and moved_to(position) as they are written; `finished` once its last page is whole. Anything but well-formed
    pages of one stream, numbered in order, each with its CRC right, written one after the other, stops the
    following for good (`given_up`): output that is not Ogg too."""

    def __init__(self, start: int):
        self.end = start  # where the next byte is written
        self.page = bytearray()  # the page being written
        self.pages: list[tuple[int, int, bytes]] = []  # offset, length and bytes 14 to 25 as written, of each page
        self.content = 0  # a CRC-32 of the pages, their serial and CRC left out
        self.given_up = self.finished = False

    def wrote(self, data: bytes) -> None:
        """`data` was written where the last write ended."""
        self.end += len(data)
        if self.given_up or self.finished:
            self.given_up = self.given_up or bool(data)  # libsndfile writes nothing after the last page
            return
        self.page += data
        while not self.given_up and not self.finished:
            if self.page[:4] != b"OggS"[:len(self.page)]:  # not Ogg, or not where a page begins
                self.given_up = True
            elif length := self._page_length():
                self._follow(bytes(self.page[:length]))
                del self.page[:length]
            else:
                break
        if self.finished and self.page:  # bytes after the last page
            self.given_up = True
        if self.given_up:
            self.page.clear()

    def moved_to(self, position: int) -> None:
        """A seek that `position` is where it went: anywhere but the end is unexpected."""
        if position != self.end:
            self.given_up = True

    def _page_length(self) -> int | None:
        """The length of the page being written, once all of it has been; None before."""
        if len(self.page) < PAGE_HEADER.size:
            return None
        segments = self.page[PAGE_HEADER.size - 1]
        table_end = PAGE_HEADER.size + segments
        if len(self.page) < table_end:
            return None
        length = table_end + sum(self.page[PAGE_HEADER.size:table_end])
        return length if len(self.page) >= length else None

    def _follow(self, page: bytes) -> None:
        _, version, flags, _, serial, sequence, crc, _ = PAGE_HEADER.unpack_from(page)
        first = not self.pages
        if (version != 0 or sequence != len(self.pages) or bool(flags & FIRST_PAGE) != first
                or not first and serial != self._serial() or ogg_crc(_as_its_crc_covers(page, serial)) != crc):
            self.given_up = True
            return
        self.pages.append((self.end - len(self.page), len(page), page[SERIAL_AT:SERIAL_AT + PATCHED_BYTES]))
        self.content = zlib.crc32(_as_its_crc_covers(page, 0), self.content)
        self.finished = bool(flags & LAST_PAGE)

    def _serial(self) -> int:
        return int.from_bytes(self.pages[0][2][:4], "little")

    def patches(self) -> list[tuple[int, bytes]]:
        """(offset, bytes) to write over each page, once the last one is whole, for the serial to be the pages'
        content CRC, with each page's CRC set to match."""
        old, new = self._serial(), self.content
        patches = []
        for offset, length, written in self.pages:
            # the CRC is linear: the change of serial changes it by the CRC of that change alone, from byte 14 on
            change = (old ^ new).to_bytes(4, "little") + bytes(length - SERIAL_AT - 4)
            crc = int.from_bytes(written[8:], "little") ^ ogg_crc(change)
            patches.append((offset + SERIAL_AT, new.to_bytes(4, "little") + written[4:8] + crc.to_bytes(4, "little")))
        return patches


def _as_its_crc_covers(page: bytes, serial: int) -> bytes:
    """The page with its serial `serial` and its CRC field 0, as its CRC is computed over it."""
    return page[:SERIAL_AT] + serial.to_bytes(4, "little") + page[SERIAL_AT + 4:CRC_AT] + bytes(4) + page[CRC_AT + 4:]
