//! Finding and reading checkpoints: safetensors (single or sharded) and PyTorch `.bin`, with both tensor-name
//! schemes in use and typed errors naming the tensor and both shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};

/// File names looked for in a model directory, in order of preference.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// Single-file safetensors checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// PyTorch pickle checkpoint (the only weights on BAAI/AltCLIP's main branch).
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

enum Source {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
    Tensors(HashMap<String, Tensor>),
}

/// An opened checkpoint: a name → tensor store that loads lazily (safetensors are memory-mapped).
pub struct Checkpoint {
    source: Source,
    origin: PathBuf,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The checkpoint files found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One or more safetensors files (several when sharded).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`pytorch_model.bin`).
    Pytorch(PathBuf),
}

impl WeightFiles {
    /// Finds the weights in `dir`: a sharded safetensors index, then `model.safetensors`, then `pytorch_model.bin`.
    pub fn find(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(SAFETENSORS_INDEX);
        if index.is_file() {
            return Ok(WeightFiles::Safetensors(shards_from_index(&index)?));
        }
        let single = dir.join(SAFETENSORS_FILE);
        if single.is_file() {
            return Ok(WeightFiles::Safetensors(vec![single]));
        }
        let bin = dir.join(PYTORCH_FILE);
        if bin.is_file() {
            return Ok(WeightFiles::Pytorch(bin));
        }
        Err(Error::NoWeights { dir: dir.into() })
    }
}

/// Lists the shard files named by a `model.safetensors.index.json`, in first-use order, resolved against its
/// directory.
pub fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        what: index.display().to_string(),
        source,
    })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::WeightFile {
            path: index.into(),
            reason: "no `weight_map` object".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| Error::WeightFile {
            path: index.into(),
            reason: format!("weight_map entry for `{name}` is not a file name"),
        })?;
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::WeightFile {
            path: index.into(),
            reason: "`weight_map` is empty".into(),
        });
    }
    Ok(files)
}

impl Checkpoint {
    /// Opens the weights found in a model directory (see [`WeightFiles::find`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(&WeightFiles::find(dir)?)
    }

    /// Opens the given files.
    pub fn open(files: &WeightFiles) -> Result<Self> {
        match files {
            WeightFiles::Safetensors(paths) => Self::from_safetensors(paths),
            WeightFiles::Pytorch(path) => Self::from_pytorch(path),
        }
    }

    /// Memory-maps one or more safetensors files.
    pub fn from_safetensors<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let Some(first) = paths.first() else {
            return Err(Error::WeightFile {
                path: PathBuf::new(),
                reason: "no safetensors files given".into(),
            });
        };
        for p in paths {
            let p = p.as_ref();
            std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them not being truncated
        // or rewritten while the checkpoint is alive (safetensors' header is validated against the file length).
        let st = unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| Error::WeightFile {
            path: first.as_ref().into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            source: Source::Safetensors(st),
            origin: first.as_ref().into(),
        })
    }

    /// Opens a PyTorch zip/pickle checkpoint; tensors are read lazily.
    pub fn from_pytorch(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let pth = PthTensors::new(path, None).map_err(|e| Error::WeightFile {
            path: path.into(),
            reason: format!("not a readable PyTorch checkpoint: {e}"),
        })?;
        if pth.tensor_infos().is_empty() {
            return Err(Error::WeightFile {
                path: path.into(),
                reason: "no tensors found (not a state dict)".into(),
            });
        }
        Ok(Self {
            source: Source::Pth(pth),
            origin: path.into(),
        })
    }

    /// Wraps tensors already in memory (e.g. built in a test or converted by the caller).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            source: Source::Tensors(tensors),
            origin: PathBuf::from("<in-memory tensors>"),
        }
    }

    /// Where the checkpoint came from (its first file).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> Vec<String> {
        match &self.source {
            Source::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Source::Pth(p) => p.tensor_infos().keys().cloned().collect(),
            Source::Tensors(t) => t.keys().cloned().collect(),
        }
    }

    /// The stored shape and dtype of `name`, if present.
    fn info(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        match &self.source {
            Source::Safetensors(st) => {
                let view = st.get(name).ok()?;
                let dtype = DType::try_from(view.dtype()).ok()?;
                Some((view.shape().to_vec(), dtype))
            }
            Source::Pth(p) => p.tensor_infos().get(name).map(|i| (i.layout.dims().to_vec(), i.dtype)),
            Source::Tensors(t) => t.get(name).map(|t| (t.dims().to_vec(), t.dtype())),
        }
    }

    /// True when the checkpoint holds `name` under either naming scheme.
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// Maps a requested name to the one stored: the name itself, or its twin in the other layer-naming scheme.
    ///
    /// The hub's AltCLIP checkpoints name vision layers `encoder.layers.N`, while transformers 5 writes
    /// `encoder.layer.N` in both towers; text layers are `encoder.layer.N` in both.
    fn resolve(&self, name: &str) -> Option<String> {
        if self.info(name).is_some() {
            return Some(name.to_string());
        }
        let twin = if name.contains(".encoder.layers.") {
            name.replacen(".encoder.layers.", ".encoder.layer.", 1)
        } else if name.contains(".encoder.layer.") {
            name.replacen(".encoder.layer.", ".encoder.layers.", 1)
        } else {
            return None;
        };
        self.info(&twin).is_some().then_some(twin)
    }

    /// Loads `name`, checking its shape, and converts it to `dtype` on `device`.
    pub fn load(&self, name: &str, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        let stored = self
            .resolve(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        let (dims, stored_dtype) = self
            .info(&stored)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        if dims != shape.dims() {
            return Err(Error::TensorShape {
                name: stored,
                expected: shape.dims().to_vec(),
                got: dims,
            });
        }
        if !stored_dtype.is_float() {
            return Err(Error::TensorDType {
                name: stored,
                dtype: stored_dtype,
            });
        }
        let read_err = |e: candle_core::Error| Error::WeightFile {
            path: self.origin.clone(),
            reason: format!("reading tensor `{stored}`: {e}"),
        };
        let tensor = match &self.source {
            Source::Safetensors(st) => st.load(&stored, &Device::Cpu).map_err(read_err)?,
            Source::Pth(p) => p
                .get(&stored)
                .map_err(read_err)?
                .ok_or_else(|| Error::MissingTensor { name: name.into() })?,
            Source::Tensors(t) => t
                .get(&stored)
                .cloned()
                .ok_or_else(|| Error::MissingTensor { name: name.into() })?,
        };
        Ok(tensor.to_dtype(dtype)?.to_device(device)?)
    }
}

/// A view of a [`Checkpoint`] under a name prefix, with the dtype and device tensors are loaded to: this crate's
/// counterpart of candle's `VarBuilder`, returning typed errors.
#[derive(Debug, Clone)]
pub struct Weights {
    checkpoint: Arc<Checkpoint>,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Loads tensors from `checkpoint` as `dtype` on `device`.
    pub fn new(checkpoint: Checkpoint, dtype: DType, device: &Device) -> Self {
        Self::from_shared(Arc::new(checkpoint), dtype, device)
    }

    /// Like [`Weights::new`], sharing an already opened checkpoint.
    pub fn from_shared(checkpoint: Arc<Checkpoint>, dtype: DType, device: &Device) -> Self {
        Self {
            checkpoint,
            prefix: String::new(),
            dtype,
            device: device.clone(),
        }
    }

    /// Opens the weights in a model directory.
    pub fn from_dir(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self::new(Checkpoint::from_dir(dir)?, dtype, device))
    }

    /// A view one level deeper: `pp("encoder")` turns `x` into `encoder.x`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            prefix: self.full_name(&name.to_string()),
            ..self.clone()
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The dtype weights are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device weights are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The underlying checkpoint.
    pub fn checkpoint(&self) -> &Arc<Checkpoint> {
        &self.checkpoint
    }

    /// True when `name` (under this prefix) is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.full_name(name))
    }

    /// Loads `name` with the expected shape in the model dtype.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        self.checkpoint
            .load(&self.full_name(name), &shape.into(), self.dtype, &self.device)
    }

    /// Loads `name` with the expected shape in f32 (for normalisation parameters and scalars).
    pub fn get_f32(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        self.checkpoint
            .load(&self.full_name(name), &shape.into(), DType::F32, &self.device)
    }
}
