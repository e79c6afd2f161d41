//! Rust errors to Python exceptions: the one `match` over `altclip::Error` that picks the class, and the message
//! (Display with its sources). The classes are defined in `altclip/_errors.py` (multiple bases, docstrings).

use std::io::ErrorKind;
use std::path::Path;

use altclip::Error;
use pyo3::prelude::*;

pyo3::import_exception!(altclip._errors, AltClipError);
pyo3::import_exception!(altclip._errors, InvalidInputError);
pyo3::import_exception!(altclip._errors, AltClipIOError);
pyo3::import_exception!(altclip._errors, AltClipFileNotFoundError);
pyo3::import_exception!(altclip._errors, AltClipPermissionError);

/// The Python exception for `e`: bad input is `InvalidInputError` (a `ValueError`), file problems are
/// `AltClipIOError` (an `OSError`; `FileNotFoundError` / `PermissionError` subclasses where the kind says so),
/// a broken model, hub, device or tensor library error is `AltClipError`.
pub fn to_py_err(e: &Error) -> PyErr {
    let msg = message(e);
    match e {
        Error::Io { path, source } => io_error(source.kind(), source.raw_os_error(), msg, path),
        Error::NoWeights { dir } => io_error(ErrorKind::NotFound, None, msg, dir),
        Error::OfflineMissing { cache_dir, .. } => io_error(ErrorKind::NotFound, None, msg, cache_dir),
        // A path that is not a directory falls through to the hub, which rejects it as a model id.
        Error::Hub { repo, file: None, .. } if looks_like_path(repo) => {
            io_error(ErrorKind::NotFound, None, msg, Path::new(repo))
        }
        Error::BadInput { .. }
        | Error::ImageSize { .. }
        | Error::TokenOutOfRange { .. }
        | Error::ImageDecode { .. }
        | Error::InvalidImage { .. }
        | Error::InvalidArgument { .. } => InvalidInputError::new_err(msg),
        Error::Json { .. }
        | Error::InvalidConfig { .. }
        | Error::WeightFile { .. }
        | Error::MissingTensor { .. }
        | Error::TensorShape { .. }
        | Error::TensorDType { .. }
        | Error::Tokenizer { .. }
        | Error::Hub { .. }
        | Error::Device { .. }
        | Error::TowerLoad { .. }
        | Error::Candle(_) => AltClipError::new_err(msg),
        // `Error` is non-exhaustive: a variant added later is the base class until mapped here.
        _ => AltClipError::new_err(msg),
    }
}

/// `e`'s Display followed by each source's that it does not already contain (most variants print their source).
pub fn message(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// An `OSError` subclass with `errno`, `strerror` (the full message) and `filename` set where the errno is known.
fn io_error(kind: ErrorKind, raw_errno: Option<i32>, msg: String, path: &Path) -> PyErr {
    let filename = path.as_os_str().to_os_string();
    match (kind, raw_errno) {
        (ErrorKind::NotFound, errno) => AltClipFileNotFoundError::new_err((errno.unwrap_or(ENOENT), msg, filename)),
        (ErrorKind::PermissionDenied, errno) => {
            AltClipPermissionError::new_err((errno.unwrap_or(EACCES), msg, filename))
        }
        (_, Some(errno)) => AltClipIOError::new_err((errno, msg, filename)),
        (_, None) => AltClipIOError::new_err(msg),
    }
}

/// POSIX `ENOENT` and `EACCES` (the same numbers on Linux, macOS and Windows' CRT).
const ENOENT: i32 = 2;
const EACCES: i32 = 13;

/// Absolute, `./`/`../`/`~` relative, or with a backslash: never a hub id (`NAME` or `ORG/NAME`).
fn looks_like_path(s: &str) -> bool {
    let relative = matches!(s, "." | "..") || ["./", "../", "~"].iter().any(|p| s.starts_with(p));
    relative || Path::new(s).is_absolute() || s.contains('\\')
}
