//! Parquet output (the `parquet` feature): one row per input, in input order, written while the model runs and
//! flushed in row groups, so memory is bounded by a row group whatever the number of inputs. The schema is in the
//! [`export`](super) docs.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use candle_core::Tensor;

use super::{checked_pipeline, kind_paths, text_batches, BatchOptions};
use crate::error::{Error, Result};
use crate::pipeline::AltClip;
use crate::processor::image::ImageInput;

/// Rows per row group unless [`ParquetOptions::row_group_size`] says otherwise.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 1024;

/// What a Parquet file of embeddings holds, which names its label column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Images: the label column is `path`.
    Images,
    /// Texts: the label column is `text`.
    Texts,
}

impl InputKind {
    /// The label column's name: `path` or `text`.
    pub fn column(self) -> &'static str {
        match self {
            InputKind::Images => "path",
            InputKind::Texts => "text",
        }
    }
}

/// How [`write_parquet`] and [`ParquetWriter`] lay out a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetOptions {
    /// Rows per row group: the writer holds at most this many encoded rows in memory. Default
    /// [`DEFAULT_ROW_GROUP_SIZE`].
    pub row_group_size: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
        }
    }
}

/// One row of a [`ParquetWriter`]: the input's label (path or text) and its embedding, or the message of the error
/// that took its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// The image's path or the text.
    pub label: &'a str,
    /// The embedding (of the file's `dim` values), or the error's message.
    pub embedding: std::result::Result<&'a [f32], String>,
}

/// The Arrow schema of a file of `kind` with embeddings of `dim` values from `model` (see the [`export`](super) docs).
pub fn arrow_schema(kind: InputKind, model: &str, dim: usize) -> Result<SchemaRef> {
    let size = i32::try_from(dim)
        .map_err(|_| Error::invalid_argument("dim", format!("{dim} is too wide for an Arrow fixed_size_list")))?;
    let fields = vec![
        Field::new(kind.column(), DataType::Utf8, false),
        Field::new("embedding", DataType::FixedSizeList(item_field(), size), true),
        Field::new("error", DataType::Utf8, true),
    ];
    let metadata = [("model", model.to_string()), ("dim", dim.to_string())];
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(Arc::new(Schema::new_with_metadata(fields, metadata)))
}

/// The embedding list's values: never null (a failed row's whole list is).
fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// A Parquet file of embeddings written row by row: [`ParquetWriter::write`] appends rows, which go to disk a row
/// group at a time; [`ParquetWriter::finish`] writes the footer (a file not finished is not readable Parquet).
pub struct ParquetWriter {
    inner: ArrowWriter<File>,
    schema: SchemaRef,
    path: PathBuf,
    dim: usize,
    rows: usize,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter")
            .field("path", &self.path)
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ParquetWriter {
    /// Creates (truncates) `path` for rows of `kind` with embeddings of `dim` values from `model`.
    pub fn create(path: &Path, kind: InputKind, model: &str, dim: usize, options: &ParquetOptions) -> Result<Self> {
        if options.row_group_size == 0 {
            return Err(Error::invalid_argument("row_group_size", "must be at least 1"));
        }
        let schema = arrow_schema(kind, model, dim)?;
        let metadata = schema
            .metadata()
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
        // No codec: unit-norm float32 embeddings are nearly incompressible, and the only column worth a dictionary is
        // `error` (the same few messages); paths and texts are unique.
        let properties = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled("error".into(), true)
            .set_max_row_group_row_count(Some(options.row_group_size))
            .set_key_value_metadata(Some(metadata.collect()))
            .build();
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let inner = ArrowWriter::try_new(file, schema.clone(), Some(properties)).map_err(|e| parquet_error(path, e))?;
        Ok(Self {
            inner,
            schema,
            path: path.to_path_buf(),
            dim,
            rows: 0,
        })
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends `rows`. An embedding of other than `dim` values is [`Error::BadInput`], and nothing is written.
    pub fn write(&mut self, rows: &[Row<'_>]) -> Result<()> {
        let batch = self.record_batch(rows)?;
        self.inner.write(&batch).map_err(|e| parquet_error(&self.path, e))?;
        self.rows += rows.len();
        Ok(())
    }

    /// Flushes the last row group and writes the footer; returns the number of rows.
    pub fn finish(self) -> Result<usize> {
        self.inner.close().map_err(|e| parquet_error(&self.path, e))?;
        Ok(self.rows)
    }

    fn record_batch(&self, rows: &[Row<'_>]) -> Result<RecordBatch> {
        let size = self.dim as i32; // fits: checked by `arrow_schema`
        let mut labels = StringBuilder::with_capacity(rows.len(), rows.iter().map(|r| r.label.len()).sum());
        let values = Float32Builder::with_capacity(rows.len() * self.dim);
        let mut embeddings = FixedSizeListBuilder::with_capacity(values, size, rows.len()).with_field(item_field());
        let mut errors = StringBuilder::new();
        for (k, row) in rows.iter().enumerate() {
            labels.append_value(row.label);
            match &row.embedding {
                Ok(values) if values.len() == self.dim => {
                    embeddings.values().append_slice(values);
                    embeddings.append(true);
                    errors.append_null();
                }
                Ok(values) => {
                    return Err(Error::bad_input(
                        "embedding",
                        format!(
                            "row {} ({:?}) of {} has {} values, the file's dim is {}",
                            self.rows + k,
                            row.label,
                            self.path.display(),
                            values.len(),
                            self.dim
                        ),
                    ))
                }
                Err(message) => {
                    // A null list still spans `dim` child slots.
                    embeddings.values().append_slice(&vec![0.0; self.dim]);
                    embeddings.append(false);
                    errors.append_value(message);
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(labels.finish()),
            Arc::new(embeddings.finish()),
            Arc::new(errors.finish()),
        ];
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| parquet_error(&self.path, e.into()))
    }
}

fn parquet_error(path: &Path, source: ParquetError) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`write_parquet`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetSummary {
    /// The files written ([`Format::output_files`](super::Format::output_files)): images first.
    pub files: Vec<PathBuf>,
    /// Image rows (one per image, embedded or not).
    pub images: usize,
    /// Image rows holding an error instead of an embedding.
    pub failed: usize,
    /// Text rows.
    pub texts: usize,
    /// Wall-clock seconds the images took (decode, model and writing, pipelined); 0 without images.
    pub image_seconds: f64,
}

impl ParquetSummary {
    /// Images (embedded or failed) per second of [`ParquetSummary::image_seconds`]; `None` without images.
    pub fn images_per_second(&self) -> Option<f64> {
        super::per_second(self.images, self.image_seconds)
    }
}

/// Embeds `images` and `texts` in batches of `options.batch_size` (as [`embed_batches`](super::embed_batches)
/// does) and streams them to Parquet: to `path` for one kind of input; with both images and texts, to
/// `<stem>.images.parquet` and `<stem>.texts.parquet` beside it (as [`Embeddings::save_npy`](super::Embeddings::save_npy)
/// does; [`Format::output_files`](super::Format::output_files) names them). Every input is exactly one row, in input
/// order; an image that cannot be read is a row with a null embedding and the error's message, or (strict) the
/// error returned. `on_progress` gets the number of inputs each batch finished.
///
/// The files are created before any work, so an unwritable output fails first; on an error they are removed
/// rather than left without a footer. Memory holds one batch and one row group per file, not the embeddings.
pub fn write_parquet(
    clip: &AltClip,
    images: &[PathBuf],
    texts: &[String],
    options: &BatchOptions,
    parquet: &ParquetOptions,
    path: &Path,
    on_progress: &mut dyn FnMut(usize),
) -> Result<ParquetSummary> {
    let pipeline = checked_pipeline(clip, images, texts, options)?;
    let (image_path, text_path) = kind_paths(path, "parquet", !images.is_empty(), !texts.is_empty());
    let files: Vec<PathBuf> = image_path.iter().chain(&text_path).cloned().collect();
    let result = (|| {
        let create = |p: &Option<PathBuf>, kind| {
            p.as_deref()
                .map(|p| ParquetWriter::create(p, kind, clip.name(), clip.embedding_dim(), parquet))
                .transpose()
        };
        let (image_writer, text_writer) = (
            create(&image_path, InputKind::Images)?,
            create(&text_path, InputKind::Texts)?,
        );
        let mut summary = ParquetSummary {
            files: files.clone(),
            images: 0,
            failed: 0,
            texts: 0,
            image_seconds: 0.0,
        };
        if let Some(mut writer) = image_writer {
            let started = Instant::now();
            summary.failed = stream_images(clip, images, pipeline, options.strict, &mut writer, on_progress)?;
            summary.images = writer.finish()?;
            summary.image_seconds = started.elapsed().as_secs_f64();
        }
        if let Some(mut writer) = text_writer {
            text_batches(clip, texts, options.batch_size, &mut |chunk, embeds| {
                let values = embeds.flatten_all()?.to_vec1::<f32>()?;
                let rows = chunk.iter().zip(values.chunks_exact(clip.embedding_dim()));
                let rows: Vec<Row> = rows
                    .map(|(t, e)| Row {
                        label: t,
                        embedding: Ok(e),
                    })
                    .collect();
                writer.write(&rows)?;
                on_progress(chunk.len());
                Ok(())
            })?;
            summary.texts = writer.finish()?;
        }
        Ok(summary)
    })();
    if result.is_err() {
        // The error is what the caller needs; a file that cannot be removed is left as it is.
        for file in &files {
            let _ = std::fs::remove_file(file);
        }
    }
    result
}

/// The images through [`AltClip::embed_image_batches`] into `writer`, each batch's rows merged back into input
/// order; returns the number of failed rows (strict: the first failure is the error).
fn stream_images(
    clip: &AltClip,
    images: &[PathBuf],
    pipeline: crate::ImagePipeline,
    strict: bool,
    writer: &mut ParquetWriter,
    on_progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let inputs: Vec<ImageInput> = images.iter().map(|p| ImageInput::Path(p)).collect();
    let mut failed = 0;
    clip.embed_image_batches(&inputs, pipeline, &mut |batch| {
        let mut batch = batch;
        if strict && !batch.failed.is_empty() {
            return Err(batch.failed.swap_remove(0).1);
        }
        let values = batch.embeddings.as_ref().map(Tensor::flatten_all).transpose()?;
        let values = values.map(|v| v.to_vec1::<f32>()).transpose()?.unwrap_or_default();
        let embedded = batch.ok.iter().zip(values.chunks_exact(clip.embedding_dim()));
        let mut entries: Vec<(usize, std::result::Result<&[f32], String>)> =
            embedded.map(|(&i, e)| (i, Ok(e))).collect();
        entries.extend(batch.failed.iter().map(|(i, e)| (*i, Err(e.to_string()))));
        entries.sort_by_key(|(i, _)| *i);
        let labels: Vec<String> = entries.iter().map(|(i, _)| images[*i].display().to_string()).collect();
        let rows: Vec<Row> = entries
            .into_iter()
            .zip(&labels)
            .map(|((_, embedding), label)| Row { label, embedding })
            .collect();
        writer.write(&rows)?;
        failed += batch.failed.len();
        on_progress(rows.len());
        Ok(())
    })?;
    Ok(failed)
}
