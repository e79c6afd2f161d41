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

use crate::batching::TextBatching;
use crate::error::{Error, Result};
use crate::model::{l2_normalize, AltClipModel};
use crate::options::LoadOptions;
use crate::processor::image::ImageInput;
use crate::processor::AltClipProcessor;

/// What [`AltClip::embed_images_partial`] returns.
#[derive(Debug)]
pub struct PartialEmbeddings {
    /// (ok.len(), dim) normalised embeddings of the inputs that could be read, in input order; `None` if none.
    pub embeddings: Option<Tensor>,
    /// Input indices of the rows of `embeddings`.
    pub ok: Vec<usize>,
    /// Inputs that failed, with their errors.
    pub failed: Vec<(usize, Error)>,
}

/// AltCLIP model and processor, loaded together.
#[derive(Debug, Clone)]
pub struct AltClip {
    model: AltClipModel,
    processor: AltClipProcessor,
    name: String,
    text_batching: TextBatching,
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
                return Err(Error::InvalidArgument {
                    argument: "model",
                    reason: format!("{id_or_dir:?} is not a directory, and the `hub` feature is disabled"),
                });
            }
            Self::from_dir(dir, options)
        }
    }

    /// Loads from a local directory with `config.json`, weights, `preprocessor_config.json` and tokenizer files.
    pub fn from_dir(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let mut model = AltClipModel::from_dir(dir, options.dtype, &options.device)?;
        if let Some(q) = options.quantization {
            model.quantize(q)?;
        }
        Ok(Self {
            model,
            processor: AltClipProcessor::from_dir(dir)?,
            name: dir.display().to_string(),
            text_batching: TextBatching::default(),
        })
    }

    /// Combines an already loaded model and processor.
    pub fn new(model: AltClipModel, processor: AltClipProcessor, name: impl Into<String>) -> Self {
        Self {
            model,
            processor,
            name: name.into(),
            text_batching: TextBatching::default(),
        }
    }

    /// Sets how [`AltClip::embed_texts`] groups texts of different lengths into forward passes.
    pub fn with_text_batching(mut self, batching: TextBatching) -> Self {
        self.text_batching = batching;
        self
    }

    /// How [`AltClip::embed_texts`] groups texts into forward passes.
    pub fn text_batching(&self) -> &TextBatching {
        &self.text_batching
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
            return Err(Error::InvalidArgument {
                argument: "texts",
                reason: "the list is empty".into(),
            });
        }
        let tokenizer = self.processor.text();
        let ids = tokenizer.encode_unpadded(texts, tokenizer.max_length())?;
        let features = self
            .model
            .get_text_features_batched(&ids, tokenizer.pad_token_id(), &self.text_batching)?;
        Ok(l2_normalize(&features.to_dtype(DType::F32)?)?.to_device(&Device::Cpu)?)
    }

    /// L2-normalised image embeddings, (images, dim), in f32 (AltCLIPModel's `image_embeds`).
    pub fn embed_images(&self, images: &[ImageInput<'_>]) -> Result<Tensor> {
        if images.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "images",
                reason: "the list is empty".into(),
            });
        }
        let pixels = self
            .processor
            .image()
            .preprocess(images, self.model.device(), self.model.dtype())?;
        self.embed_pixels(&pixels)
    }

    /// Like [`AltClip::embed_images`], but an image that cannot be read or decoded costs only its own row: the
    /// result lists the embedded inputs and the failures (index and error) separately.
    pub fn embed_images_partial(&self, images: &[ImageInput<'_>]) -> Result<PartialEmbeddings> {
        use rayon::prelude::*;
        let processor = self.processor.image();
        let decoded: Vec<Result<(usize, usize, Vec<f32>)>> = images
            .par_iter()
            .map(|input| {
                let img = processor.preprocess_u8(input)?;
                Ok((
                    img.height() as usize,
                    img.width() as usize,
                    processor.pixel_values(&img),
                ))
            })
            .collect();
        let mut size = None;
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut data = Vec::new();
        for (i, result) in decoded.into_iter().enumerate() {
            match result {
                Ok((h, w, values)) if size.is_none_or(|s| s == (h, w)) => {
                    size = Some((h, w));
                    ok.push(i);
                    data.extend_from_slice(&values);
                }
                Ok((h, w, _)) => failed.push((
                    i,
                    Error::bad_input(
                        "images",
                        format!("preprocessed to {w}x{h}, unlike the batch's first image"),
                    ),
                )),
                Err(e) => failed.push((i, e)),
            }
        }
        // `size` is set exactly when some input was embedded.
        let embeddings = match size {
            Some((h, w)) => {
                let pixels = Tensor::from_vec(data, (ok.len(), 3, h, w), &Device::Cpu)?
                    .to_dtype(self.model.dtype())?
                    .to_device(self.model.device())?;
                Some(self.embed_pixels(&pixels)?)
            }
            None => None,
        };
        Ok(PartialEmbeddings { embeddings, ok, failed })
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
