//! `altclip._altclip`, the native half of the Python package `altclip`: the `Embedder` class over
//! `altclip::AltClip`. A binding only: every number comes from the Rust crate. Inputs are converted while the GIL
//! is held ([`inputs`]), the work runs with it released (rayon does the parallelism), errors map in [`errors`].

mod errors;
mod inputs;

use altclip::options::{parse_device, parse_dtype, parse_quantization};
use altclip::{AltClip, LoadOptions, Result};
use candle_core::{DeviceLocation, Tensor};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use errors::{message, to_py_err};

/// AltCLIP embeddings of images and texts, computed by the Rust crate `altclip`.
///
/// ``model`` is a Hugging Face Hub id (downloaded, or taken from the hub cache; ``HF_HUB_OFFLINE``, ``HF_HOME``,
/// ``HF_TOKEN`` apply) or a local model directory. ``device``: ``cpu``, ``cuda``, ``cuda:N``, ``metal``,
/// ``metal:N`` or ``auto``. ``dtype``: ``f32``, ``f16`` or ``bf16``. ``revision``: hub branch, tag or commit.
/// ``quantize``: ``int8`` (dynamic int8, CPU) or a GGML format ``q8_0``, ``q6k``, ``q5k``, ``q4k``, ``q4_0``
/// (``None``: none); a format slower than f32 on this CPU raises ``InvalidInputError``.
///
/// Thread-safe: one ``Embedder`` may be used from several Python threads at once; the GIL is released while it
/// works.
#[pyclass(frozen, module = "altclip")]
struct Embedder {
    clip: AltClip,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model, *, device = "cpu", dtype = "f32", revision = None, quantize = None))]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        device: &str,
        dtype: &str,
        revision: Option<String>,
        quantize: Option<&str>,
    ) -> PyResult<Self> {
        let model: String = py.import("os")?.call_method1("fspath", (model,))?.extract()?;
        let load = || -> Result<AltClip> {
            let mut options = LoadOptions::default()
                .with_device(parse_device(device)?)
                .with_dtype(parse_dtype(dtype)?)
                .with_quantization(quantize.map(parse_quantization).transpose()?.flatten());
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            AltClip::from_pretrained(&model, &options)
        };
        let clip = py.detach(load).map_err(|e| to_py_err(&e))?;
        Ok(Self { clip })
    }

    /// L2-normalised image embeddings, a float32 array of shape (len(items), dim), in input order.
    ///
    /// ``items``: paths (``str`` / ``os.PathLike``) and encoded image files (``bytes``, ``bytearray``,
    /// ``memoryview``; JPEG, PNG, WebP, GIF, BMP, TIFF), mixed freely. The first item that cannot be read raises
    /// (``OSError`` subclass for files, ``InvalidInputError`` for undecodable data); see ``embed_images_partial``.
    fn embed_images<'py>(&self, py: Python<'py>, items: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let items = inputs::image_items(items)?;
        let images = inputs::as_inputs(&items);
        let rows = py.detach(|| self.clip.embed_images(&images).and_then(|t| rows_of(&t)));
        to_array(py, rows)
    }

    /// Like ``embed_images``, but an item that cannot be read costs only its own row.
    ///
    /// Returns ``(embeddings, errors)``: a float32 array of shape (len(items), dim) whose row i is item i's
    /// embedding, or all NaN if item i failed, and a list with ``None`` for each embedded item and the error
    /// message for each failed one. An empty ``items`` gives a (0, dim) array and an empty list.
    #[allow(clippy::type_complexity)]
    fn embed_images_partial<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<Option<String>>)> {
        let items = inputs::image_items(items)?;
        let images = inputs::as_inputs(&items);
        let (rows, errors) = py.detach(|| self.partial(&images)).map_err(|e| to_py_err(&e))?;
        Ok((to_array(py, Ok(rows))?, errors))
    }

    /// L2-normalised text embeddings, a float32 array of shape (len(texts), dim), in input order.
    fn embed_texts<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let texts = inputs::texts(texts)?;
        let rows = py.detach(|| {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            self.clip.embed_texts(&texts).and_then(|t| rows_of(&t))
        });
        to_array(py, rows)
    }

    /// ``exp(logit_scale) · image_embeds @ text_embeds.T``, a float32 array of shape (N_img, N_txt).
    ///
    /// Both arguments are 2-D float32 arrays of width ``dim`` (any memory layout), e.g. from ``embed_images`` and
    /// ``embed_texts``; another rank or width raises ``InvalidInputError``, another type ``TypeError``.
    fn logits<'py>(
        &self,
        py: Python<'py>,
        image_embeds: &Bound<'py, PyAny>,
        text_embeds: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let dim = self.clip.embedding_dim();
        let (a, n) = inputs::embedding_matrix(image_embeds, "image_embeds", dim)?;
        let (b, m) = inputs::embedding_matrix(text_embeds, "text_embeds", dim)?;
        let rows = py.detach(|| {
            let cpu = candle_core::Device::Cpu;
            let a = Tensor::from_vec(a, (n, dim), &cpu)?;
            let b = Tensor::from_vec(b, (m, dim), &cpu)?;
            rows_of(&self.clip.logits(&a, &b)?)
        });
        to_array(py, rows)
    }

    /// Loads both towers now. Each otherwise loads on its first use (the first images load the vision tower, the
    /// first texts the text tower), so a worker that embeds only images never loads the text tower; call this to
    /// have a bad checkpoint raise, and the loading time spent, before the first batch.
    fn load_towers(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.clip.model().load_towers()).map_err(|e| to_py_err(&e))
    }

    /// Width of the embeddings (the model's ``projection_dim``).
    #[getter]
    fn dim(&self) -> usize {
        self.clip.embedding_dim()
    }

    /// The hub id or directory the model was loaded from.
    #[getter]
    fn name(&self) -> &str {
        self.clip.name()
    }

    /// ``Embedder("<model>", device="cpu", dtype="f32", dim=768)``.
    fn __repr__(&self) -> String {
        let model = self.clip.model();
        format!(
            "Embedder({:?}, device={:?}, dtype={:?}, dim={})",
            self.clip.name(),
            device_name(model.device().location()),
            model.dtype().as_str(),
            self.clip.embedding_dim()
        )
    }
}

impl Embedder {
    /// `embed_images_partial`'s Rust half: every input's row (NaN where it failed) and error message.
    fn partial(&self, images: &[altclip::processor::image::ImageInput<'_>]) -> Result<(Rows, Vec<Option<String>>)> {
        let (n, dim) = (images.len(), self.clip.embedding_dim());
        let result = self.clip.embed_images_partial(images)?;
        let mut data = vec![f32::NAN; n * dim];
        if let Some(embeddings) = &result.embeddings {
            let ok_rows = embeddings.flatten_all()?.to_vec1::<f32>()?;
            let mut rows: Vec<&mut [f32]> = data.chunks_exact_mut(dim).collect();
            for (row, &i) in ok_rows.chunks_exact(dim).zip(&result.ok) {
                if let Some(dst) = rows.get_mut(i) {
                    dst.copy_from_slice(row);
                }
            }
        }
        let mut errors = vec![None; n];
        for (i, e) in &result.failed {
            if let Some(slot) = errors.get_mut(*i) {
                *slot = Some(message(e));
            }
        }
        Ok((Rows { data, n, dim }, errors))
    }
}

/// A row-major (n, dim) matrix taken out of a tensor without the GIL.
struct Rows {
    data: Vec<f32>,
    n: usize,
    dim: usize,
}

fn rows_of(t: &Tensor) -> Result<Rows> {
    let (n, dim) = t.dims2()?;
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Rows { data, n, dim })
}

/// The NumPy array owning `rows`' buffer (no copy), or the Rust error as a Python exception.
fn to_array(py: Python<'_>, rows: Result<Rows>) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let rows = rows.map_err(|e| to_py_err(&e))?;
    let array = Array2::from_shape_vec((rows.n, rows.dim), rows.data)
        .map_err(|e| PyRuntimeError::new_err(format!("altclip: embedding buffer: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// `cpu`, `cuda:N` or `metal:N`, as `device=` spells them.
fn device_name(location: DeviceLocation) -> String {
    match location {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Asks glibc's malloc to keep freed memory for reuse (`altclip::process::retain_freed_memory`): for a process that
/// embeds (a Ray or Spark worker), 15–25 % faster large batches on the CPU; call it before the first `Embedder`, so
/// that the threads running the forwards start under it. `False` off glibc, where nothing changes.
#[pyfunction]
fn retain_freed_memory() -> bool {
    altclip::process::retain_freed_memory()
}

/// The native module: `Embedder`, `retain_freed_memory` and the crate version.
#[pymodule]
fn _altclip(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Embedder>()?;
    m.add_function(wrap_pyfunction!(retain_freed_memory, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
