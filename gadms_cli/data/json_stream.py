"""Reading a huge top-level JSON object (or list of objects) one entry at a time.

The GA-DMS annotation file maps 5M image paths to their captions; ``json.load`` would hold all of
it in memory. :class:`JsonObjectStream` reads the file in chunks and yields ``(key, value)``
pairs as it goes, with one-line errors that say where the file is damaged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from gadms_cli.errors import GadmsError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_CHUNK_CHARS = 1 << 20


class JsonObjectStream:
    """Reads the top-level ``{key: value, ...}`` of a JSON file one (key, value) pair at a time."""

    def __init__(self, handle, path: Path) -> None:
        self.handle = handle
        self.path = path
        self.buffer = ""
        self.pos = 0
        self.at_eof = False
        self.decoder = json.JSONDecoder()

    def _read_more(self) -> bool:
        chunk = self.handle.read(_CHUNK_CHARS)
        if not chunk:
            self.at_eof = True
            return False
        self.buffer = self.buffer[self.pos:] + chunk
        self.pos = 0
        return True

    def _next_char(self) -> str:
        """The next non-whitespace character (not consumed), or "" at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._read_more():
                return ""

    def _expect(self, allowed: str, where: str) -> str:
        char = self._next_char()
        if not char or char not in allowed:
            found = repr(char) if char else "the end of the file"
            raise GadmsError(
                f"{self.path}: invalid JSON {where}: expected {' or '.join(repr(c) for c in allowed)}, found {found}; "
                f"the file is damaged or truncated"
            )
        self.pos += 1
        return char

    def _value(self, where: str):
        self._next_char()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self._read_more():  # the value may just be cut by the chunk boundary
                    continue
                raise GadmsError(f"{self.path}: invalid JSON {where} ({exc.msg}); the file is damaged or truncated") from None
            if end == len(self.buffer) and not self.at_eof and self._read_more():
                continue  # a number cut at the boundary would parse short: read on and parse again
            self.pos = end
            return value

    def items(self) -> Iterator[tuple[str, object]]:
        """(key, value) pairs of the top-level object, or of every object of a top-level list
        (the public GA-DMS code's layout: ``[{path: {...}}, {path: {...}}, ...]``)."""
        if self._expect("{[", "at the start (GA-DMS annotations are one JSON object or a list of objects)") == "[":
            yield from self._list_items()
            return
        if self._next_char() == "}":
            return
        entry = 0
        while True:
            where = f"at entry {entry}"
            key = self._value(where)
            if not isinstance(key, str):
                raise GadmsError(f"{self.path}: invalid JSON {where}: object keys must be strings")
            self._expect(":", where)
            yield key, self._value(where)
            entry += 1
            if self._expect(",}", f"after entry {entry - 1}") == "}":
                return


    def _list_items(self) -> Iterator[tuple[str, object]]:
        if self._next_char() == "]":
            self.pos += 1
            return
        element = 0
        while True:
            where = f"at list element {element}"
            value = self._value(where)
            if not isinstance(value, dict):
                raise GadmsError(f"{self.path}: {where} is a JSON {type(value).__name__}, not an object of image path -> captions")
            yield from value.items()
            element += 1
            if self._expect(",]", f"after list element {element - 1}") == "]":
                return
