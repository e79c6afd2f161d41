//! Python arguments to owned (or immutably borrowed) Rust values, taken while the GIL is held so that the Rust
//! work can run without it: image items, texts and embedding matrices. Wrong Python types are `TypeError`s.

use std::path::PathBuf;

use altclip::processor::image::ImageInput;
use altclip::Error;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use crate::errors::to_py_err;

/// One image item: a path, or the encoded file in an immutable `bytes` object (read in place, not copied).
pub enum Item<'py> {
    /// `str` or `os.PathLike`.
    Path(PathBuf),
    /// `bytes`; `bytearray` and `memoryview` are copied into one (they may change while the GIL is released).
    Bytes(Bound<'py, PyBytes>),
}

/// The items of `items` (any iterable but a single `str` / bytes-like), each a path or encoded image bytes.
pub fn image_items<'py>(items: &Bound<'py, PyAny>) -> PyResult<Vec<Item<'py>>> {
    iterate(items, "items")?
        .enumerate()
        .map(|(i, item)| image_item(&item?, i))
        .collect()
}

fn image_item<'py>(item: &Bound<'py, PyAny>, index: usize) -> PyResult<Item<'py>> {
    if let Ok(bytes) = item.cast::<PyBytes>() {
        return Ok(Item::Bytes(bytes.clone()));
    }
    if item.is_instance_of::<PyByteArray>() || item.is_instance_of::<PyMemoryView>() {
        let copy = item.py().get_type::<PyBytes>().call1((item,))?;
        return Ok(Item::Bytes(copy.cast_into::<PyBytes>()?));
    }
    if item.is_instance_of::<PyString>() || item.hasattr("__fspath__")? {
        return Ok(Item::Path(item.extract::<PathBuf>()?));
    }
    Err(PyTypeError::new_err(format!(
        "items[{index}]: expected a path (str or os.PathLike) or an encoded image (bytes, bytearray or memoryview), \
         got {}",
        type_name(item)
    )))
}

/// The `ImageInput`s borrowing `items` (what `AltClip::embed_images` takes).
pub fn as_inputs<'a>(items: &'a [Item<'_>]) -> Vec<ImageInput<'a>> {
    items
        .iter()
        .map(|item| match item {
            Item::Path(path) => ImageInput::Path(path),
            Item::Bytes(bytes) => ImageInput::Bytes(bytes.as_bytes()),
        })
        .collect()
}

/// The strings of `texts` (any iterable of `str` but a single `str`).
pub fn texts(texts: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    iterate(texts, "texts")?
        .enumerate()
        .map(|(i, text)| {
            let text = text?;
            text.extract::<String>()
                .map_err(|_| PyTypeError::new_err(format!("texts[{i}]: expected str, got {}", type_name(&text))))
        })
        .collect()
}

/// A row-major copy of a 2-D float32 NumPy array of width `dim` (any strides), and its number of rows.
pub fn embedding_matrix(array: &Bound<'_, PyAny>, input: &'static str, dim: usize) -> PyResult<(Vec<f32>, usize)> {
    let array = array.cast::<PyArrayDyn<f32>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{input}: expected a numpy.ndarray of float32 (numpy.asarray(x, dtype=numpy.float32)), got {}",
            describe_array(array)
        ))
    })?;
    let shape = array.shape().to_vec();
    if shape.len() != 2 || shape[1] != dim {
        let reason = format!("expected a 2-D array of shape (N, {dim}), got shape {shape:?}");
        return Err(to_py_err(&Error::BadInput { input, reason }));
    }
    let view = array.try_readonly()?;
    Ok((view.as_array().iter().copied().collect(), shape[0]))
}

/// An iterator over `obj`, refusing a lone `str` or bytes-like object (iterating it would yield characters).
fn iterate<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, pyo3::types::PyIterator>> {
    let scalar = obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyMemoryView>();
    if scalar {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a sequence (e.g. a list) of items, got a single {}",
            type_name(obj)
        )));
    }
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a sequence, got {}", type_name(obj))))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The type, and for NumPy arrays the dtype, for a `TypeError` message.
fn describe_array(obj: &Bound<'_, PyAny>) -> String {
    match obj.getattr("dtype") {
        Ok(dtype) => format!("{} of dtype {dtype}", type_name(obj)),
        Err(_) => type_name(obj),
    }
}
