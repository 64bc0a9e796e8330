"""The one exception type that means "the user gave us bad input".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong flag, a model that does not fit.

    ``path`` (when known) is put in front of the message so the line names the file at fault.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


@contextlib.contextmanager
def reading(path: str | Path, what: str, catch: tuple[type[BaseException], ...] = (Exception,)) -> Iterator[None]:
    """Turn a library's error on a file the user gave into one UserError line: ``what (first line)``.

    transformers and tokenizers raise many types (tokenizers a bare Exception) for a broken file, so by
    default anything but a UserError is caught; a caller that knows the failure types passes ``catch``.
    """
    try:
        yield
    except UserError:
        raise
    except catch as exc:
        raise UserError(f"{what} ({str(exc).splitlines()[0]})", path) from exc
