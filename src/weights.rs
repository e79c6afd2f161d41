//! Finding and reading checkpoints: safetensors (single or sharded) and PyTorch `.bin`, with both tensor-name
//! schemes in use and typed errors naming the tensor and both shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Shape, Tensor};
use safetensors::tensor::{Metadata, TensorInfo};

use crate::error::{Error, Result};
use crate::files::{PYTORCH_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX};
use crate::options::Quantization;

enum Source {
    Safetensors(SafetensorsFiles),
    Pth(PthTensors),
    Tensors(HashMap<String, Tensor>),
}

/// An opened checkpoint: a name → tensor store that loads lazily.
///
/// Safetensors files are not memory-mapped: each tensor is read with one positioned read straight into the buffer
/// the model keeps, so a loaded model holds the weights once (a mapping would keep every touched page of the file
/// resident beside the copy: peak RSS twice the file); the text tower's token table is not loaded at all, its
/// rows are read as tokens are looked up (`StoredRows`). Reads may come from several threads at once: the
/// towers load their layers in parallel.
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
pub enum CheckpointFiles {
    /// One or more safetensors files (several when sharded).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`pytorch_model.bin`).
    Pytorch(PathBuf),
}

impl CheckpointFiles {
    /// Finds the weights in `dir`: a sharded safetensors index, then `model.safetensors`, then `pytorch_model.bin`.
    pub fn find(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(SAFETENSORS_INDEX);
        if index.is_file() {
            return Ok(CheckpointFiles::Safetensors(shards_from_index(&index)?));
        }
        let single = dir.join(SAFETENSORS_FILE);
        if single.is_file() {
            return Ok(CheckpointFiles::Safetensors(vec![single]));
        }
        let bin = dir.join(PYTORCH_FILE);
        if bin.is_file() {
            return Ok(CheckpointFiles::Pytorch(bin));
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

/// `name` in the other layer-naming scheme (`encoder.layers.N` ↔ `encoder.layer.N`), where it has a layer
/// index: what [`Checkpoint`] also looks for, and what [`Error::MissingTensor`] names beside `name`.
pub(crate) fn layer_scheme_twin(name: &str) -> Option<String> {
    if name.contains(".encoder.layers.") {
        Some(name.replacen(".encoder.layers.", ".encoder.layer.", 1))
    } else if name.contains(".encoder.layer.") {
        Some(name.replacen(".encoder.layer.", ".encoder.layers.", 1))
    } else {
        None
    }
}

impl Checkpoint {
    /// Opens the weights found in a model directory (see [`CheckpointFiles::find`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(&CheckpointFiles::find(dir)?)
    }

    /// Opens the given files.
    pub fn open(files: &CheckpointFiles) -> Result<Self> {
        match files {
            CheckpointFiles::Safetensors(paths) => Self::from_safetensors(paths),
            CheckpointFiles::Pytorch(path) => Self::from_pytorch(path),
        }
    }

    /// Opens one or more safetensors files (several when sharded), reading and validating their headers.
    pub fn from_safetensors<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let Some(first) = paths.first() else {
            return Err(Error::WeightFile {
                path: PathBuf::new(),
                reason: "no safetensors files given".into(),
            });
        };
        Ok(Self {
            source: Source::Safetensors(SafetensorsFiles::open(paths)?),
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
            Source::Safetensors(st) => st.index.keys().cloned().collect(),
            Source::Pth(p) => p.tensor_infos().keys().cloned().collect(),
            Source::Tensors(t) => t.keys().cloned().collect(),
        }
    }

    /// The stored shape and dtype of `name`, if present.
    fn info(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        match &self.source {
            Source::Safetensors(st) => {
                let (_, info) = st.info(name)?;
                let dtype = DType::try_from(info.dtype).ok()?;
                Some((info.shape.clone(), dtype))
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
        let twin = layer_scheme_twin(name)?;
        self.info(&twin).is_some().then_some(twin)
    }

    /// Loads `name`, checking its shape, and converts it to `dtype` on `device`.
    pub fn load(&self, name: &str, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        let stored = self.checked(name, shape)?;
        let read_err = |e: candle_core::Error| Error::WeightFile {
            path: self.origin.clone(),
            reason: format!("reading tensor `{stored}`: {e}"),
        };
        let tensor = match &self.source {
            Source::Safetensors(st) => st.read(&stored, dtype)?,
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

    /// Reads the (rows, cols) matrix `name` as f32 on the CPU, handing `sink` `chunk_rows` rows at a time (the last
    /// chunk may hold fewer) with the index of the chunk's first row: an f32 safetensors tensor streams through one
    /// small buffer, so a consumer that re-lays the values out (packing) never holds a second whole copy. Other
    /// sources load the tensor, then hand it over in chunks.
    pub(crate) fn read_f32_rows(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        chunk_rows: usize,
        sink: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let stored = self.checked(name, &Shape::from((rows, cols)))?;
        let chunk = chunk_rows.max(1) * cols;
        if let Source::Safetensors(st) = &self.source {
            if let Some((file, info)) = st.info(&stored).filter(|(_, i)| i.dtype == safetensors::Dtype::F32) {
                return file.read_f32_chunks(info, chunk, &mut |at, values| sink(at / cols.max(1), values));
            }
        }
        let tensor = self.load(name, &Shape::from((rows, cols)), DType::F32, &Device::Cpu)?;
        let handed = crate::kernels::cpu::with_host_f32(&tensor, |values| {
            values
                .chunks(chunk)
                .enumerate()
                .try_for_each(|(i, values)| sink(i * chunk_rows.max(1), values))
        })?;
        handed.unwrap_or_else(|| {
            Err(Error::WeightFile {
                path: self.origin.clone(),
                reason: format!("tensor `{stored}`: not readable as f32 on the CPU"),
            })
        })
    }

    /// The (rows, cols) matrix `name` as [`StoredRows`], read from the file row by row as rows are looked up, when
    /// it lies in a safetensors file; `None` for other sources (their tensors are loaded whole).
    pub(crate) fn stored_rows(&self, name: &str, (rows, cols): (usize, usize)) -> Result<Option<StoredRows>> {
        let stored = self.checked(name, &Shape::from((rows, cols)))?;
        let Source::Safetensors(st) = &self.source else {
            return Ok(None);
        };
        Ok(st.info(&stored).map(|(file, info)| StoredRows {
            file: Arc::clone(file),
            name: stored.clone(),
            start: file.data_start + info.data_offsets.0 as u64,
            dtype: info.dtype,
            rows,
            cols,
        }))
    }

    /// The stored name of `name`, checked to have `shape` and a float dtype.
    fn checked(&self, name: &str, shape: &Shape) -> Result<String> {
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
        Ok(stored)
    }
}

/// Values per read when a tensor streams through a buffer (4 MB of f32).
const F32_CHUNK: usize = 1 << 20;

/// Safetensors files opened for positioned reads, with their parsed headers.
struct SafetensorsFiles {
    files: Vec<Arc<SafetensorsFile>>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
}

struct SafetensorsFile {
    path: PathBuf,
    file: std::fs::File,
    /// Where the data section starts: 8 + the header's length.
    data_start: u64,
    metadata: Metadata,
}

impl SafetensorsFiles {
    fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let file = SafetensorsFile::open(path.as_ref())?;
            for name in file.metadata.tensors().into_keys() {
                index.insert(name, files.len());
            }
            files.push(Arc::new(file));
        }
        Ok(Self { files, index })
    }

    fn info(&self, name: &str) -> Option<(&Arc<SafetensorsFile>, &TensorInfo)> {
        let file = &self.files[*self.index.get(name)?];
        Some((file, file.metadata.info(name)?))
    }

    /// Reads `name`, in its stored dtype or, for an f32 tensor wanted in f16/bf16, already narrowed.
    fn read(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let (file, info) = self
            .info(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        match (info.dtype, dtype) {
            (safetensors::Dtype::F32, DType::F16) => file.read_narrowed::<half::f16>(name, info),
            (safetensors::Dtype::F32, DType::BF16) => file.read_narrowed::<half::bf16>(name, info),
            _ => file.read(name, info),
        }
    }
}

impl SafetensorsFile {
    /// Reads the header and checks it against the file's length (as `SafeTensors::deserialize` does).
    fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::WeightFile {
            path: path.into(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut len_bytes = [0u8; 8];
        read_exact_at(&file, &mut len_bytes, 0).map_err(|_| {
            bad(format!(
                "not a safetensors file: {file_len} bytes, too short for a header"
            ))
        })?;
        let header_len = u64::from_le_bytes(len_bytes);
        // safetensors' own limit (MAX_HEADER_SIZE); also rejects files that are not safetensors at all.
        if header_len > 100_000_000 || header_len + 8 > file_len {
            return Err(bad(format!(
                "not a safetensors file: header length {header_len} in a {file_len}-byte file"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact_at(&file, &mut header, 8).map_err(|e| Error::io(path, e))?;
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
        let data_len = metadata.data_len() as u64;
        if 8 + header_len + data_len != file_len {
            return Err(bad(format!(
                "the header describes {data_len} bytes of tensor data but the file holds {} (truncated or \
                 overwritten?)",
                file_len - 8 - header_len
            )));
        }
        Ok(Self {
            path: path.into(),
            file,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// Reads one tensor into a fresh buffer of its own dtype (the buffer becomes the tensor's storage).
    fn read(&self, name: &str, info: &TensorInfo) -> Result<Tensor> {
        let dtype = DType::try_from(info.dtype).map_err(|e| Error::WeightFile {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        let shape = Shape::from_dims(&info.shape);
        let n = shape.elem_count();
        let offset = self.data_start + info.data_offsets.0 as u64;
        let tensor = match dtype {
            DType::F32 => Tensor::from_vec(self.read_values::<f32>(n, offset)?, shape, &Device::Cpu)?,
            DType::F16 => Tensor::from_vec(self.read_values::<half::f16>(n, offset)?, shape, &Device::Cpu)?,
            DType::BF16 => Tensor::from_vec(self.read_values::<half::bf16>(n, offset)?, shape, &Device::Cpu)?,
            DType::F64 => Tensor::from_vec(self.read_values::<f64>(n, offset)?, shape, &Device::Cpu)?,
            other => {
                return Err(Error::TensorDType {
                    name: name.into(),
                    dtype: other,
                })
            }
        };
        Ok(tensor)
    }

    /// Reads an f32 tensor into `T` (f16 or bf16) through one small buffer, so the f32 copy is never held whole
    /// (a 1 GB token table held by an int8 model is kept in f16).
    fn read_narrowed<T>(&self, name: &str, info: &TensorInfo) -> Result<Tensor>
    where
        T: bytemuck::Pod + candle_core::WithDType,
        [T]: half::slice::HalfFloatSliceExt,
    {
        use half::slice::HalfFloatSliceExt;
        let shape = Shape::from_dims(&info.shape);
        let mut values = crate::kernels::cpu::weight_buffer::<T>(shape.elem_count());
        self.read_f32_chunks(info, F32_CHUNK, &mut |at, chunk| {
            values[at..at + chunk.len()].convert_from_f32_slice(chunk);
            Ok(())
        })?;
        Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| Error::WeightFile {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })
    }

    /// Reads the f32 tensor `info` through one buffer of `chunk` values, handing `sink` each chunk with the index
    /// of its first value.
    fn read_f32_chunks(
        &self,
        info: &TensorInfo,
        chunk: usize,
        sink: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let n = Shape::from_dims(&info.shape).elem_count();
        let mut buffer = vec![0f32; chunk.max(1).min(n)];
        let start = self.data_start + info.data_offsets.0 as u64;
        for at in (0..n).step_by(chunk.max(1)) {
            let values = &mut buffer[..chunk.min(n - at)];
            self.read_into(values, start + 4 * at as u64)?;
            sink(at, values)?;
        }
        Ok(())
    }

    fn read_values<T: bytemuck::Pod>(&self, n: usize, offset: u64) -> Result<Vec<T>> {
        let mut values = crate::kernels::cpu::weight_buffer::<T>(n);
        self.read_into(&mut values, offset)?;
        Ok(values)
    }

    /// Fills `values` from the file at `offset`.
    fn read_into<T: bytemuck::Pod>(&self, values: &mut [T], offset: u64) -> Result<()> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(values);
        read_exact_at(&self.file, bytes, offset).map_err(|e| Error::io(&self.path, e))?;
        // safetensors stores little-endian values.
        if cfg!(target_endian = "big") {
            for value in bytes.chunks_exact_mut(std::mem::size_of::<T>()) {
                value.reverse();
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    // No positioned reads here: seek, then read (loads are sequential).
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One stored matrix whose rows are read from its safetensors file when looked up (positioned reads from the
/// page cache), never held whole: the text tower's token table, a quarter of BAAI/AltCLIP's weights.
#[derive(Clone)]
pub(crate) struct StoredRows {
    file: Arc<SafetensorsFile>,
    name: String,
    /// Where the matrix's first value lies in the file.
    start: u64,
    dtype: safetensors::Dtype,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for StoredRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRows")
            .field("path", &self.file.path)
            .field("name", &self.name)
            .field("shape", &(self.rows, self.cols))
            .finish_non_exhaustive()
    }
}

impl StoredRows {
    /// Rows `ids` as an (ids, cols) tensor of `dtype` on `device`, as `Tensor::embedding` would gather them from
    /// the whole matrix (values exact: read in the stored dtype, then converted as a loaded tensor is).
    pub(crate) fn gather(&self, ids: &[u32], dtype: DType, device: &Device) -> Result<Tensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.rows) {
            return Err(Error::TokenOutOfRange {
                id: i64::from(id),
                vocab_size: self.rows,
            });
        }
        let rows = match self.dtype {
            safetensors::Dtype::F32 => self.read::<f32>(ids)?,
            safetensors::Dtype::F16 => self.read::<half::f16>(ids)?,
            safetensors::Dtype::BF16 => self.read::<half::bf16>(ids)?,
            safetensors::Dtype::F64 => self.read::<f64>(ids)?,
            other => {
                return Err(Error::WeightFile {
                    path: self.file.path.clone(),
                    reason: format!("tensor `{}`: rows of dtype {other:?} cannot be looked up", self.name),
                })
            }
        };
        Ok(rows.to_dtype(dtype)?.to_device(device)?)
    }

    /// Reads rows `ids` (checked in range) in the stored type `T`, one positioned read per row; a row equal to the
    /// one before it (padding) is copied instead of read again.
    fn read<T: bytemuck::Pod + candle_core::WithDType>(&self, ids: &[u32]) -> Result<Tensor> {
        let cols = self.cols;
        let row_bytes = (cols * std::mem::size_of::<T>()) as u64;
        let mut values: Vec<T> = bytemuck::zeroed_vec(ids.len() * cols);
        for (i, &id) in ids.iter().enumerate() {
            let (before, row) = values.split_at_mut(i * cols);
            let row = &mut row[..cols];
            if i > 0 && ids[i - 1] == id {
                row.copy_from_slice(&before[(i - 1) * cols..]);
            } else {
                self.file.read_into(row, self.start + u64::from(id) * row_bytes)?;
            }
        }
        Tensor::from_vec(values, (ids.len(), cols), &Device::Cpu).map_err(|e| Error::WeightFile {
            path: self.file.path.clone(),
            reason: format!("tensor `{}`: {e}", self.name),
        })
    }
}

/// A view of a [`Checkpoint`] under a name prefix, with the dtype and device tensors are loaded to: this crate's
/// counterpart of candle's `VarBuilder`, returning typed errors.
#[derive(Debug, Clone)]
pub struct CheckpointView {
    checkpoint: Arc<Checkpoint>,
    prefix: String,
    dtype: DType,
    device: Device,
    quantization: Option<Quantization>,
}

impl CheckpointView {
    /// Loads tensors from `checkpoint` as `dtype` on `device`.
    pub fn new(checkpoint: Checkpoint, dtype: DType, device: &Device) -> Self {
        Self::from_shared(Arc::new(checkpoint), dtype, device)
    }

    /// Like [`CheckpointView::new`], sharing an already opened checkpoint.
    pub fn from_shared(checkpoint: Arc<Checkpoint>, dtype: DType, device: &Device) -> Self {
        Self {
            checkpoint,
            prefix: String::new(),
            dtype,
            device: device.clone(),
            quantization: None,
        }
    }

    /// Quantizes each encoder layer's projections to `quantization` as the layer loads (see
    /// [`AltClipModel::quantize`](crate::AltClipModel::quantize)), so that the f32 weights of at most a few layers
    /// are held at once; `None` keeps the loaded dtype. Under [`Quantization::Int8`] a token table loaded
    /// whole (not read row by row from a safetensors file) is kept in f16 (half its memory; rows are widened to
    /// f32 as they are looked up).
    pub fn with_quantization(mut self, quantization: Option<Quantization>) -> Self {
        self.quantization = quantization;
        self
    }

    /// The quantization layers get as they load (see [`CheckpointView::with_quantization`]).
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantization
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
        self.get_as(shape, name, self.dtype)
    }

    /// Loads `name` with the expected shape in f32 (for normalisation parameters and scalars).
    pub fn get_f32(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        self.get_as(shape, name, DType::F32)
    }

    /// Streams the (rows, cols) matrix `name` as f32 to `sink`, `chunk_rows` rows at a time with the first row's
    /// index (see `Checkpoint::read_f32_rows`).
    pub(crate) fn read_f32_rows(
        &self,
        name: &str,
        shape: (usize, usize),
        chunk_rows: usize,
        sink: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.checkpoint
            .read_f32_rows(&self.full_name(name), shape, chunk_rows, sink)
    }

    /// The (rows, cols) matrix `name` read row by row as looked up (see [`StoredRows`]), or `None` when the
    /// checkpoint cannot (not safetensors): load it with [`CheckpointView::get`] then.
    pub(crate) fn stored_rows(&self, shape: (usize, usize), name: &str) -> Result<Option<StoredRows>> {
        self.checkpoint.stored_rows(&self.full_name(name), shape)
    }

    /// Loads `name` with the expected shape in `dtype`.
    pub fn get_as(&self, shape: impl Into<Shape>, name: &str, dtype: DType) -> Result<Tensor> {
        self.checkpoint
            .load(&self.full_name(name), &shape.into(), dtype, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_tensors_read_as_half_match_candles_conversion_across_chunks() {
        // Longer than one read chunk (2²⁰ values), with values that round in both directions and overflow f16.
        let n = (1 << 20) + 37;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i as f32) * 0.618_034).sin() * 1.0e5_f32.powf((i % 7) as f32 / 6.0))
            .collect();
        let tensor = Tensor::from_vec(values, (n,), &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        tensor.save_safetensors("t", &path).unwrap();
        let checkpoint = Checkpoint::from_safetensors(&[&path]).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let read = checkpoint.load("t", &n.into(), dtype, &Device::Cpu).unwrap();
            assert_eq!(read.dtype(), dtype);
            let expected = tensor.to_dtype(dtype).unwrap();
            let same = read
                .eq(&expected)
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .sum_all()
                .unwrap();
            // Overflowing values are ±inf in both, which compare equal.
            assert_eq!(same.to_scalar::<u32>().unwrap() as usize, n, "{dtype:?}");
        }
    }

    #[test]
    fn stored_rows_gather_what_embedding_gathers_in_every_stored_dtype() {
        let (rows, cols) = (97, 13);
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i as f32) * 0.377).cos() * 3.0).collect();
        let table = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        // Repeated ids (padding) are copied from the row before; the first and last rows bound the offsets.
        let ids = [5u32, 5, 0, 96, 41, 41, 41, 7];
        let dir = tempfile::tempdir().unwrap();
        for stored in [DType::F32, DType::F16, DType::BF16] {
            let path = dir.path().join(format!("{stored:?}.safetensors"));
            let stored_table = table.to_dtype(stored).unwrap();
            stored_table.save_safetensors("emb", &path).unwrap();
            let view = CheckpointView::new(
                Checkpoint::from_safetensors(&[&path]).unwrap(),
                DType::F32,
                &Device::Cpu,
            );
            let rows_read = view
                .stored_rows((rows, cols), "emb")
                .unwrap()
                .expect("a safetensors file");
            let ids_tensor = Tensor::new(&ids[..], &Device::Cpu).unwrap();
            let expected: Vec<Vec<f32>> = stored_table
                .embedding(&ids_tensor)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2()
                .unwrap();
            let got: Vec<Vec<f32>> = rows_read
                .gather(&ids, DType::F32, &Device::Cpu)
                .unwrap()
                .to_vec2()
                .unwrap();
            assert_eq!(got, expected, "{stored:?}");
            let err = rows_read.gather(&[3, 97], DType::F32, &Device::Cpu).unwrap_err();
            assert!(
                matches!(err, Error::TokenOutOfRange { id: 97, vocab_size: 97 }),
                "{err}"
            );
            // A wrong shape is refused when the table is opened, naming both shapes.
            let err = view.stored_rows((rows, cols + 1), "emb").unwrap_err();
            assert!(matches!(err, Error::TensorShape { .. }), "{err}");
        }
        // Checkpoints that are not safetensors files hold their tables.
        let mut tensors = HashMap::new();
        tensors.insert("emb".to_string(), table);
        let view = CheckpointView::new(Checkpoint::from_tensors(tensors), DType::F32, &Device::Cpu);
        assert!(view.stored_rows((rows, cols), "emb").unwrap().is_none());
    }
}
