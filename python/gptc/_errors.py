"""Exceptions: one class per gptc_status, all under gptc.Error.

Each also derives from the built-in exception a Python caller would expect,
so `except ValueError` or `except OSError` work as well as `except gptc.Error`.
The message is the library's one-line gptc_last_error(), which names the
file, field or argument at fault.
"""


class Error(Exception):
    """A failure reported by libgptc (or a bad argument found before calling it).

    `status` is the gptc_status code (None when the Python layer raised it).
    """
    status = None

    @property
    def message(self):
        return self.args[0] if self.args else ""


class ArgumentError(Error, ValueError):
    """GPTC_ERR_ARG: a caller-supplied argument is invalid."""
    status = 1


class FileError(Error, OSError):
    """GPTC_ERR_IO: a file is missing or cannot be read."""
    status = 2


class FormatError(Error, ValueError):
    """GPTC_ERR_FORMAT: a file is malformed or disagrees with itself."""
    status = 3


class OutOfMemoryError(Error, MemoryError):
    """GPTC_ERR_NOMEM: an allocation failed."""
    status = 4


class RangeError(Error, ValueError):
    """GPTC_ERR_RANGE: a length or token id is out of the model's range."""
    status = 5


class UnsupportedError(Error, NotImplementedError):
    """GPTC_ERR_UNSUPPORTED: valid input that gptc does not handle (yet)."""
    status = 6


class ClosedError(Error, RuntimeError):
    """The Model or Tokenizer was used after close()."""


_BY_STATUS = {c.status: c for c in (ArgumentError, FileError, FormatError, OutOfMemoryError, RangeError,
                                    UnsupportedError)}


def check_status(status, message):
    """Raises the exception class of `status` with `message`."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        err = Error("%s (status %d)" % (message or "libgptc failed", status))
        err.status = status
        raise err
    raise cls(message or "libgptc failed with status %d" % status)
