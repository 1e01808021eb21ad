"""User-facing errors.

The library raises :class:`GadmsError` for anything a user can fix (bad file,
bad key, missing download). Its message is ONE line that names the file, key
or flag and says what to do. The CLI prints it without a traceback and exits
with code 1. Any other exception is a bug and keeps its traceback.
"""


class GadmsError(Exception):
    """A problem with the user's input, with a one-line message naming the fix."""

    def __init__(self, message: str) -> None:
        if "\n" in message:
            raise ValueError("GadmsError messages must be one line")
        super().__init__(message)


def one_line_reason(error: BaseException, limit: int = 160) -> str:
    """``"TypeName: first line of the message"`` (cut to ``limit`` characters), for wrapping a
    library's exception into a one-line :class:`GadmsError`."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__
