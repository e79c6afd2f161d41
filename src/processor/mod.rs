//! Preprocessing: images ([`image`], with the Pillow-exact [`resize`]) and text ([`text`], with the pure-Rust
//! [`sentencepiece`] reader), combined in [`AltClipProcessor`] as transformers' `AltCLIPProcessor` combines
//! `CLIPImageProcessor` and `XLMRobertaTokenizer`.
pub mod image;
mod jpeg;
pub mod resize;
pub mod sentencepiece;
pub mod text;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::files::PREPROCESSOR_CONFIG_FILE;
use image::{ImageInput, ImageProcessor};
use text::{Padding, TextProcessor};

/// Image preprocessing and tokenization for AltCLIP (`AltCLIPProcessor`).
#[derive(Debug, Clone)]
pub struct AltClipProcessor {
    image: ImageProcessor,
    text: TextProcessor,
}

/// What [`AltClipProcessor::process`] returns: the model's inputs.
#[derive(Debug, Clone)]
pub struct ProcessorOutput {
    /// `(texts, seq)` u32 token ids, when texts were given.
    pub input_ids: Option<Tensor>,
    /// `(texts, seq)` u32 mask, when texts were given.
    pub attention_mask: Option<Tensor>,
    /// `(images, 3, H, W)` normalised pixels, when images were given.
    pub pixel_values: Option<Tensor>,
}

impl AltClipProcessor {
    /// Combines an image processor and a tokenizer.
    pub fn new(image: ImageProcessor, text: TextProcessor) -> Self {
        Self { image, text }
    }

    /// Loads `preprocessor_config.json` and the tokenizer (`tokenizer.json` or `sentencepiece.bpe.model`, with
    /// `tokenizer_config.json`) from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            image: ImageProcessor::from_file(dir.join(PREPROCESSOR_CONFIG_FILE))?,
            text: TextProcessor::from_dir(dir)?,
        })
    }

    /// Resolves a hub id (or a local directory) through the cache as [`crate::hub::resolve`] does, then loads as
    /// [`AltClipProcessor::from_dir`].
    #[cfg(feature = "hub")]
    pub fn from_pretrained(id_or_dir: &str, options: &crate::hub::HubOptions) -> Result<Self> {
        Self::from_dir(crate::hub::resolve(id_or_dir, options)?.dir())
    }

    /// The image half.
    pub fn image(&self) -> &ImageProcessor {
        &self.image
    }

    /// The text half.
    pub fn text(&self) -> &TextProcessor {
        &self.text
    }

    /// Tokenizes `texts` (padded to the longest) and preprocesses `images` into tensors on `device`; pixel
    /// values are converted to `dtype`. Either list may be empty, and the corresponding outputs are then `None`.
    pub fn process(
        &self,
        texts: &[&str],
        images: &[ImageInput<'_>],
        device: &Device,
        dtype: DType,
    ) -> Result<ProcessorOutput> {
        let (input_ids, attention_mask) = if texts.is_empty() {
            (None, None)
        } else {
            let batch = self.text.encode(texts, Padding::Longest, device)?;
            (Some(batch.input_ids), Some(batch.attention_mask))
        };
        let pixel_values = if images.is_empty() {
            None
        } else {
            Some(self.image.preprocess(images, device, dtype)?)
        };
        Ok(ProcessorOutput {
            input_ids,
            attention_mask,
            pixel_values,
        })
    }
}
