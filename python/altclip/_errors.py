"""The exceptions ``altclip`` raises; the native module maps each Rust error variant to one of them."""


class AltClipError(Exception):
    """Base class of every altclip error; raised as such for a broken model, a hub or device failure."""


class InvalidInputError(AltClipError, ValueError):
    """Bad input: undecodable image data, wrong shapes, unknown device/dtype/quantize strings, empty lists."""


class AltClipIOError(AltClipError, OSError):
    """A file or directory could not be read (``errno``, ``strerror`` and ``filename`` set where known)."""


class AltClipFileNotFoundError(AltClipIOError, FileNotFoundError):
    """A file or the model directory does not exist (or is not in the offline hub cache)."""


class AltClipPermissionError(AltClipIOError, PermissionError):
    """A file or directory could not be read for lack of permission."""


for _cls in (AltClipError, InvalidInputError, AltClipIOError, AltClipFileNotFoundError, AltClipPermissionError):
    _cls.__module__ = "altclip"
del _cls
