//! # altclip
//!
//! BAAI's [AltCLIP](https://huggingface.co/BAAI/AltCLIP) — a multilingual CLIP with an XLM-RoBERTa text encoder and
//! a CLIP ViT vision encoder — on the [candle](https://github.com/huggingface/candle) ML framework, numerically
//! matching Hugging Face transformers' `modeling_altclip.py`.
//!
//! ```text
//! files / bytes ─► processor::image (decode, RGB, Pillow-exact resize, crop, normalise) ─► pixel_values ─┐
//! texts ────────► processor::text (XLM-R tokenizer: tokenizer.json | sentencepiece) ─► ids, mask ───────┤
//!                                                                                                        ▼
//! config.json ─► config ─► weights (safetensors | sharded | .bin; names in `files`) ─► model (`AltClipModel`)
//!   nn (Linear, LayerNorm, attention, MLP: plain math) ─► kernels::cpu (fused f32 ops) | generic candle ops
//!   text_model: XLM-R embeddings ─► post-LN encoder ─► pre_LN ─► transformation ─► token 0 ─► text_projection
//!   vision_model: patches + class + positions ─► pre_layrnorm ─► pre-LN encoder ─► post_layernorm(CLS) ─► visual_projection
//!   logits = exp(logit_scale) · cosine(image_embeds, text_embeds)
//!                                                                                                        ▼
//! options (LoadOptions = HubOptions + device, dtype, quantization) ─► hub ─► pipeline (`AltClip`: batching;
//!   prefetch: decode batch k+1 while the model runs batch k)
//!   ─► zero_shot · retrieval · export (JSON / npy / safetensors) ─► examples (thin mains)
//! process: opt-in process-wide settings (malloc keeps freed memory), called by the examples
//! ```
//!
//! ```no_run
//! use altclip::{AltClipModel, ForwardOptions};
//! use candle_core::{DType, Device, Tensor};
//!
//! # fn main() -> altclip::Result<()> {
//! let device = Device::Cpu;
//! let model = AltClipModel::from_dir("path/to/AltCLIP", DType::F32, &device)?;
//! // Token ids from the XLM-R tokenizer: <s> ... </s>, padded with 1.
//! let input_ids = Tensor::new(&[[0u32, 6, 5, 2], [0, 7, 2, 1]], &device)?;
//! let attention_mask = Tensor::new(&[[1u32, 1, 1, 1], [1, 1, 1, 0]], &device)?;
//! let pixel_values = Tensor::zeros((1, 3, 224, 224), DType::F32, &device)?;
//! let out = model.forward(&input_ids, &pixel_values, Some(&attention_mask), ForwardOptions::default())?;
//! let probs = candle_nn::ops::softmax_last_dim(&out.logits_per_image)?;
//! println!("{probs}");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod batching;
pub mod config;
pub mod error;
pub mod export;
pub mod files;
#[cfg(feature = "hub")]
pub mod hub;
mod kernels;
pub mod model;
mod nn;
pub mod options;
pub mod pipeline;
pub mod prefetch;
pub mod process;
pub mod processor;
pub mod retrieval;
pub mod text_model;
mod tower;
pub mod vision_model;
pub mod weights;
pub mod zero_shot;

pub use batching::TextBatching;
/// The GGML block formats of [`Quantization::Ggml`] (candle's).
pub use candle_core::quantized::GgmlDType;
pub use config::{Activation, AltClipConfig, AltClipTextConfig, AltClipVisionConfig};
pub use error::{Error, Result};
pub use model::{AltClipModel, AltClipOutput, ForwardOptions};
pub use options::{HubOptions, LoadOptions, Quantization};
pub use pipeline::AltClip;
pub use prefetch::ImagePipeline;
pub use processor::AltClipProcessor;
pub use retrieval::{EmbeddingIndex, Hit};
pub use text_model::{AltClipTextModel, TextModelOutput};
pub use vision_model::{AltClipVisionModel, VisionModelOutput};
pub use weights::{Checkpoint, CheckpointFiles, CheckpointView};
pub use zero_shot::{LabelScore, ZeroShotClassifier};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
