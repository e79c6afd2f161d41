//! The one-call entry point: model and processor together, from a hub id or a local directory, with embedding
//! helpers that return what users compare (L2-normalised embeddings).
//!
//! ```no_run
//! use altclip::{AltClip, LoadOptions};
//! use altclip::processor::image::ImageInput;
//! use std::path::Path;
//!
//! # fn main() -> altclip::Result<()> {
//! let clip = AltClip::from_pretrained("BAAI/AltCLIP", &LoadOptions::default())?;
//! let texts = clip.embed_texts(&["a photo of a cat", "一张狗的照片"])?;
//! let images = clip.embed_images(&[ImageInput::Path(Path::new("cat.jpg"))])?;
//! let probs = candle_nn::ops::softmax_last_dim(&clip.logits(&images, &texts)?)?;
//! println!("{probs}");
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::batching::TextBatching;
use crate::error::{Error, Result};
use crate::model::{l2_normalize, AltClipModel};
use crate::options::LoadOptions;
use crate::prefetch::{self, ImagePipeline};
use crate::processor::image::ImageInput;
use crate::processor::AltClipProcessor;

/// What [`AltClip::embed_images_partial`] returns.
#[derive(Debug)]
pub struct PartialEmbeddings {
    /// (ok.len(), dim) normalised embeddings of the inputs that could be read, in input order; `None` if none.
    pub embeddings: Option<Tensor>,
    /// Input indices of the rows of `embeddings`, ascending.
    pub ok: Vec<usize>,
    /// Inputs that failed, with their errors, ascending by index.
    pub failed: Vec<(usize, Error)>,
}

/// One batch as the producer of [`AltClip::embed_image_batches`] prepared it.
struct PreparedBatch {
    /// Pixel values of the rows in `ok`, on the CPU; `None` when none could be read.
    pixels: Result<Option<Tensor>>,
    ok: Vec<usize>,
    failed: Vec<(usize, Error)>,
}

/// AltCLIP model and processor, loaded together.
#[derive(Debug, Clone)]
pub struct AltClip {
    model: AltClipModel,
    processor: AltClipProcessor,
    name: String,
    text_batching: TextBatching,
    image_pipeline: ImagePipeline,
}

impl AltClip {
    /// Loads from a hub id (`BAAI/AltCLIP`, downloaded or taken from the cache as [`LoadOptions::hub`] says) or a
    /// local directory.
    ///
    /// Without the `hub` feature only local directories are accepted.
    pub fn from_pretrained(id_or_dir: &str, options: &LoadOptions) -> Result<Self> {
        #[cfg(feature = "hub")]
        {
            let files = crate::hub::resolve(id_or_dir, &options.hub)?;
            let mut clip = Self::from_dir(files.dir(), options)?;
            clip.name = id_or_dir.to_string();
            Ok(clip)
        }
        #[cfg(not(feature = "hub"))]
        {
            let dir = Path::new(id_or_dir);
            if !dir.is_dir() {
                return Err(Error::invalid_argument(
                    "model",
                    format!("{id_or_dir:?} is not a directory, and the `hub` feature is disabled"),
                ));
            }
            Self::from_dir(dir, options)
        }
    }

    /// Loads from a local directory with `config.json`, weights, `preprocessor_config.json` and tokenizer files.
    pub fn from_dir(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if let Some(q) = options.quantization {
            q.check_speed(&options.device)?;
        }
        let model = AltClipModel::from_dir_quantized(dir, options.dtype, &options.device, options.quantization)?;
        Ok(Self {
            text_batching: TextBatching::for_device(model.device()),
            model,
            processor: AltClipProcessor::from_dir(dir)?,
            name: dir.display().to_string(),
            image_pipeline: ImagePipeline::default(),
        })
    }

    /// Combines an already loaded model and processor.
    pub fn new(model: AltClipModel, processor: AltClipProcessor, name: impl Into<String>) -> Self {
        Self {
            text_batching: TextBatching::for_device(model.device()),
            model,
            processor,
            name: name.into(),
            image_pipeline: ImagePipeline::default(),
        }
    }

    /// Sets how [`AltClip::embed_texts`] groups texts of different lengths into forward passes (the default is
    /// [`TextBatching::for_device`] of the model's device).
    pub fn with_text_batching(mut self, batching: TextBatching) -> Self {
        self.text_batching = batching;
        self
    }

    /// How [`AltClip::embed_texts`] groups texts into forward passes.
    pub fn text_batching(&self) -> &TextBatching {
        &self.text_batching
    }

    /// Sets how [`AltClip::embed_images`] and [`AltClip::embed_images_partial`] batch their inputs and how far
    /// decoding runs ahead of the model.
    pub fn with_image_pipeline(mut self, pipeline: ImagePipeline) -> Self {
        self.image_pipeline = pipeline;
        self
    }

    /// How the image batch API batches and pipelines its inputs.
    pub fn image_pipeline(&self) -> &ImagePipeline {
        &self.image_pipeline
    }

    /// The model id or directory this was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model.
    pub fn model(&self) -> &AltClipModel {
        &self.model
    }

    /// The processor.
    pub fn processor(&self) -> &AltClipProcessor {
        &self.processor
    }

    /// Width of the shared embedding space.
    pub fn embedding_dim(&self) -> usize {
        self.model.config().projection_dim
    }

    /// L2-normalised text embeddings, (texts, dim), in f32 (AltCLIPModel's `text_embeds`), in input order.
    ///
    /// Texts are sorted by length and run in groups padded to their own longest text ([`TextBatching`], see
    /// [`AltClip::with_text_batching`]), which equals padding to the longest up to float rounding.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::invalid_argument("texts", "the list is empty"));
        }
        let tokenizer = self.processor.text();
        let ids = tokenizer.encode_unpadded(texts, tokenizer.max_length())?;
        let features = self
            .model
            .get_text_features_batched(&ids, tokenizer.pad_token_id(), &self.text_batching)?;
        Ok(l2_normalize(&features.to_dtype(DType::F32)?)?.to_device(&Device::Cpu)?)
    }

    /// L2-normalised image embeddings, (images, dim), in f32 (AltCLIPModel's `image_embeds`), in input order.
    ///
    /// Runs in forward passes of [`ImagePipeline::batch_size`] images, decoding the next batch while the model
    /// runs this one ([`AltClip::with_image_pipeline`]). The first input that cannot be read is the error.
    pub fn embed_images(&self, images: &[ImageInput<'_>]) -> Result<Tensor> {
        if images.is_empty() {
            return Err(Error::invalid_argument("images", "the list is empty"));
        }
        let mut rows = Vec::new();
        self.embed_image_batches(images, self.image_pipeline, &mut |batch| {
            if let Some((_, e)) = batch.failed.into_iter().next() {
                return Err(e);
            }
            rows.extend(batch.embeddings);
            Ok(())
        })?;
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Like [`AltClip::embed_images`], but an image that cannot be read or decoded costs only its own row: the
    /// result lists the embedded inputs and the failures (index and error) separately.
    pub fn embed_images_partial(&self, images: &[ImageInput<'_>]) -> Result<PartialEmbeddings> {
        let (mut rows, mut ok, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        self.embed_image_batches(images, self.image_pipeline, &mut |batch| {
            rows.extend(batch.embeddings);
            ok.extend(batch.ok);
            failed.extend(batch.failed);
            Ok(())
        })?;
        let embeddings = if rows.is_empty() {
            None
        } else {
            Some(Tensor::cat(&rows, 0)?)
        };
        Ok(PartialEmbeddings { embeddings, ok, failed })
    }

    /// The image batch API's one loop: embeds `images` in batches of `pipeline.batch_size`, decoding and
    /// preprocessing up to `pipeline.depth` batches ahead (on all cores) while the model runs, and hands each
    /// batch's [`PartialEmbeddings`] (indices into `images`) to `on_batch` in input order. An error from
    /// `on_batch` stops the pipeline and is returned.
    ///
    /// Every image must preprocess to the size of the first one that could be read; one that does not is a
    /// failure of its own row. Results do not depend on `depth`, bit for bit.
    pub fn embed_image_batches(
        &self,
        images: &[ImageInput<'_>],
        pipeline: ImagePipeline,
        on_batch: &mut dyn FnMut(PartialEmbeddings) -> Result<()>,
    ) -> Result<()> {
        pipeline.validate()?;
        let batches = images.chunks(pipeline.batch_size).enumerate();
        let mut size = None;
        let prepare =
            |(k, chunk): (usize, &[ImageInput<'_>])| self.prepare_batch(chunk, k * pipeline.batch_size, &mut size);
        prefetch::run(batches, pipeline.depth, prepare, |prepared| {
            let embeddings = match prepared.pixels? {
                Some(pixels) => Some(self.embed_pixels(&pixels.to_device(self.model.device())?)?),
                None => None,
            };
            on_batch(PartialEmbeddings {
                embeddings,
                ok: prepared.ok,
                failed: prepared.failed,
            })
        })
    }

    /// The producer's stage: decodes and preprocesses `chunk` (inputs `start..`) in parallel into CPU pixel values
    /// of the model's dtype. `size` is the first readable image's, carried across batches.
    fn prepare_batch(&self, chunk: &[ImageInput<'_>], start: usize, size: &mut Option<(u32, u32)>) -> PreparedBatch {
        use rayon::prelude::*;
        let processor = self.processor.image();
        let decoded: Vec<Result<RgbImage>> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, input)| processor.preprocess_u8_at(input, start + i))
            .collect();
        let (mut ok, mut failed, mut images) = (Vec::new(), Vec::new(), Vec::new());
        for (i, result) in decoded.into_iter().enumerate() {
            let index = start + i;
            match result {
                Ok(img) => {
                    let (w, h) = (img.width(), img.height());
                    match *size.get_or_insert((w, h)) {
                        first if first == (w, h) => {
                            ok.push(index);
                            images.push(img);
                        }
                        (fw, fh) => failed.push((
                            index,
                            Error::bad_input(
                                "images",
                                format!(
                                    "cannot batch images of different sizes: the first is {fw}x{fh}, #{index} is \
                                     {w}x{h} (enable center cropping or use a fixed height/width size)"
                                ),
                            ),
                        )),
                    }
                }
                Err(e) => failed.push((index, e)),
            }
        }
        let pixels = self.pixel_tensor(&images);
        PreparedBatch { pixels, ok, failed }
    }

    /// (N, 3, H, W) `pixel_values` of same-size images on the CPU, in the model's dtype; `None` for no images.
    fn pixel_tensor(&self, images: &[RgbImage]) -> Result<Option<Tensor>> {
        if images.is_empty() {
            return Ok(None);
        }
        let pixels = self
            .processor
            .image()
            .pixel_tensor(images, &Device::Cpu, self.model.dtype())?;
        Ok(Some(pixels))
    }

    /// L2-normalised image embeddings of already preprocessed `pixel_values`.
    pub fn embed_pixels(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let features = self.model.get_image_features(pixel_values, false)?;
        Ok(l2_normalize(&features.to_dtype(DType::F32)?)?.to_device(&Device::Cpu)?)
    }

    /// `exp(logit_scale) · a bᵀ` for normalised embeddings: e.g. `logits(images, texts)` is `logits_per_image`.
    ///
    /// [`AltClipModel::logits`] on the model's device (where `logit_scale` lives), returned on the CPU like the
    /// embeddings.
    pub fn logits(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let device = self.model.device();
        let logits = self.model.logits(&a.to_device(device)?, &b.to_device(device)?)?;
        Ok(logits.to_device(&Device::Cpu)?)
    }
}
