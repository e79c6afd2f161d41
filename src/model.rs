//! `AltClipModel`: both towers, their projections into the shared space, and CLIP logits.
//!
//! Mirrors transformers' `AltCLIPModel` (`get_text_features`, `get_image_features`, `forward`).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::batching::TextBatching;
use crate::config::AltClipConfig;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::options::Quantization;
use crate::text_model::{AltClipTextModel, TextModelOutput, TEXT_PREFIX};
use crate::tower::OnFirstUse;
use crate::vision_model::{AltClipVisionModel, VisionModelOutput, VISION_PREFIX};
use crate::weights::CheckpointView;

/// What [`AltClipModel::forward`] returns (`AltCLIPOutput`).
#[derive(Debug, Clone)]
pub struct AltClipOutput {
    /// `exp(logit_scale) · cos(image, text)`: (images, texts).
    pub logits_per_image: Tensor,
    /// The transpose: (texts, images).
    pub logits_per_text: Tensor,
    /// L2-normalised projected text embeddings: (texts, projection_dim).
    pub text_embeds: Tensor,
    /// L2-normalised projected image embeddings: (images, projection_dim).
    pub image_embeds: Tensor,
    /// Symmetric contrastive loss, when requested (scalar, f32).
    pub loss: Option<Tensor>,
    /// The text tower's output.
    pub text_model_output: TextModelOutput,
    /// The vision tower's output.
    pub vision_model_output: VisionModelOutput,
}

/// Options of [`AltClipModel::forward`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Compute the contrastive loss (needs as many images as texts).
    pub return_loss: bool,
    /// Accept `pixel_values` of any size, resizing the position embeddings bicubically.
    pub interpolate_pos_encoding: bool,
    /// Keep every layer's hidden states in both tower outputs.
    pub output_hidden_states: bool,
}

/// The AltCLIP model: text tower, vision tower and the two projections (`AltCLIPModel`).
///
/// Each tower loads the first time it is used (the first text, the first image), and only then: a job that embeds
/// only images never loads the text tower. [`AltClipModel::load_towers`] loads both at once, to have a bad
/// checkpoint's errors (a missing or misshapen tensor) and the loading time up front. Clones share the towers.
#[derive(Debug, Clone)]
pub struct AltClipModel {
    text_model: Arc<OnFirstUse<AltClipTextModel>>,
    vision_model: Arc<OnFirstUse<AltClipVisionModel>>,
    device: Device,
    dtype: DType,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
    config: AltClipConfig,
}

impl AltClipModel {
    /// Builds the model from weights rooted at a full checkpoint (`text_model.*`, `vision_model.*`,
    /// `text_projection.weight`, `visual_projection.weight`, `logit_scale`). The towers load on first use (see
    /// [`AltClipModel`]); the projections and `logit_scale` load now.
    pub fn new(cfg: &AltClipConfig, w: &CheckpointView) -> Result<Self> {
        cfg.validate()?;
        let p = cfg.projection_dim;
        Ok(Self {
            text_model: Arc::new(OnFirstUse::new(cfg.text_config.clone(), w.pp(TEXT_PREFIX))),
            vision_model: Arc::new(OnFirstUse::new(cfg.vision_config.clone(), w.pp(VISION_PREFIX))),
            device: w.device().clone(),
            dtype: w.dtype(),
            text_projection: Linear::load_no_bias(&w.pp("text_projection"), cfg.text_config.project_dim, p)?,
            visual_projection: Linear::load_no_bias(&w.pp("visual_projection"), cfg.vision_config.hidden_size, p)?,
            logit_scale: w.get_f32((), "logit_scale")?,
            config: cfg.clone(),
        })
    }

    /// Loads from a local model directory: `config.json` plus `model.safetensors` (single or sharded) or
    /// `pytorch_model.bin`.
    pub fn from_dir(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_dir_quantized(dir, dtype, device, None)
    }

    /// [`AltClipModel::from_dir`], quantizing each encoder layer as it loads (see
    /// [`CheckpointView::with_quantization`]): the same model as `from_dir` then [`AltClipModel::quantize`],
    /// without ever holding all the f32 projections.
    pub fn from_dir_quantized(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
        quantization: Option<Quantization>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = AltClipConfig::from_file(dir.join(crate::files::CONFIG_FILE))?;
        let w = CheckpointView::from_dir(dir, dtype, device)?.with_quantization(quantization);
        Self::new(&cfg, &w)
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &AltClipConfig {
        &self.config
    }

    /// The text tower, loaded now if it is not yet.
    pub fn text_model(&self) -> Result<&AltClipTextModel> {
        self.text_model.get()
    }

    /// The vision tower, loaded now if it is not yet.
    pub fn vision_model(&self) -> Result<&AltClipVisionModel> {
        self.vision_model.get()
    }

    /// Loads both towers now if they are not yet (each otherwise loads on its first use): a server that wants a
    /// bad checkpoint's errors and the loading time at start-up calls this once.
    pub fn load_towers(&self) -> Result<()> {
        self.text_model.get()?;
        self.vision_model.get()?;
        Ok(())
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `exp(logit_scale)` as stored in the checkpoint.
    pub fn logit_scale(&self) -> Result<f32> {
        Ok(self.logit_scale.exp()?.to_scalar::<f32>()?)
    }

    /// Quantizes both towers' encoder projections (q/k/v, attention output, MLP; 4 × 24 + 4 × 24 matrices for
    /// BAAI/AltCLIP). Norms, the final projections and the embeddings stay in the loaded dtype (but a held
    /// token table under int8: see below). Returns how many projections were quantized.
    ///
    /// - [`Quantization::Int8`]: dynamic int8 (per-channel int8 weights, input rows quantized on the fly, i32
    ///   accumulation) on AMX tiles, AVX-512 VNNI (the crate's kernels) or `rten-gemm`'s AVX2 kernels, whichever
    ///   the CPU has, all with the same values; CPU and f32 models only. Faster than f32 where the
    ///   CPU has integer dot products (see BENCHMARKS.md), and a quarter of the weight memory. Where its integer
    ///   dot product is slow (AMD Zen 1/2, Intel Haswell/Broadwell), weight-only: the same int8 weights through the
    ///   f32 kernel, at f32 speed and with f32 activations. The token table is
    ///   read from a safetensors checkpoint as tokens are looked up (never held); one loaded whole (a PyTorch
    ///   `.bin`, in-memory tensors) is kept in f16 (half its memory).
    ///
    /// [`AltClipModel::from_dir_quantized`] builds the same model while loading, never holding the f32 one.
    /// - [`Quantization::Ggml`]: a GGML block format (`Q8_0`, `Q4K`, …) through candle's quantized matmul, on
    ///   every device; activations stay f32 (candle quantizes each GEMM's input rows to 8 bits on the fly).
    ///   Projections whose input width is not a multiple of the format's block size keep their weights.
    ///
    /// This does not check speed; [`Quantization::check_speed`] says where a format runs slower than f32, and
    /// [`AltClip`](crate::AltClip) refuses those.
    ///
    /// Both towers load first if they are not yet: [`AltClipModel::from_dir_quantized`] loads each quantized.
    pub fn quantize(&mut self, quantization: Quantization) -> Result<usize> {
        let text = OnFirstUse::with_mut(&mut self.text_model, |t| t.quantize(quantization))?;
        let vision = OnFirstUse::with_mut(&mut self.vision_model, |v| v.quantize(quantization))?;
        Ok(text + vision)
    }

    /// Projected (not normalised) text features: `text_projection(token 0 of the text tower's output)`,
    /// (batch, projection_dim). The tower's last layer runs for token 0 alone
    /// ([`AltClipTextModel::pooled_output`]).
    pub fn get_text_features(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let pooled = self.text_model()?.pooled_output(input_ids, attention_mask)?;
        self.text_projection.forward(&pooled)
    }

    /// Projected text features of unpadded token id lists (`<s> … </s>` each, as
    /// [`crate::processor::text::TextProcessor::encode_unpadded`] returns them), (texts, projection_dim) in input order.
    ///
    /// The texts are grouped by `batching` (sorted by length, see [`TextBatching`]) and each group runs padded on
    /// the right with `pad_token_id` to its own longest text, instead of everything to the longest one.
    pub fn get_text_features_batched(
        &self,
        ids: &[Vec<u32>],
        pad_token_id: u32,
        batching: &TextBatching,
    ) -> Result<Tensor> {
        if let Some(i) = ids.iter().position(|t| t.is_empty()) {
            return Err(Error::invalid_argument("input_ids", format!("text {i} has no tokens")));
        }
        if ids.is_empty() {
            return Err(Error::invalid_argument("input_ids", "the list is empty"));
        }
        let device = self.device();
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let groups = batching.plan(&lengths)?;
        let mut parts = Vec::with_capacity(groups.len());
        for group in &groups {
            let width = group.iter().map(|&i| lengths[i]).max().unwrap_or(1);
            let mut input_ids = Vec::with_capacity(group.len() * width);
            let mut mask = Vec::with_capacity(group.len() * width);
            for &i in group {
                let pad = width - ids[i].len();
                input_ids.extend_from_slice(&ids[i]);
                input_ids.extend(std::iter::repeat_n(pad_token_id, pad));
                mask.extend(std::iter::repeat_n(1u32, ids[i].len()));
                mask.extend(std::iter::repeat_n(0u32, pad));
            }
            let shape = (group.len(), width);
            let input_ids = Tensor::from_vec(input_ids, shape, device)?;
            let mask = Tensor::from_vec(mask, shape, device)?;
            parts.push(self.get_text_features(&input_ids, Some(&mask))?);
        }
        let sorted = Tensor::cat(&parts, 0)?;
        let order: Vec<usize> = groups.concat();
        if order.iter().enumerate().all(|(pos, &i)| pos == i) {
            return Ok(sorted);
        }
        // Row `i` of the result is row `inverse[i]` of `sorted`.
        let mut inverse = vec![0u32; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = pos as u32;
        }
        let inverse = Tensor::from_vec(inverse, order.len(), device)?;
        Ok(sorted.index_select(&inverse, 0)?)
    }

    /// Projected (not normalised) image features: `visual_projection(pooled output)`, (batch, projection_dim). The
    /// tower's last layer runs for the class token alone ([`AltClipVisionModel::pooled_output`]).
    pub fn get_image_features(&self, pixel_values: &Tensor, interpolate_pos_encoding: bool) -> Result<Tensor> {
        let pooled = self
            .vision_model()?
            .pooled_output(pixel_values, interpolate_pos_encoding)?;
        self.visual_projection.forward(&pooled)
    }

    /// Runs both towers and computes CLIP logits, normalised embeddings and (optionally) the contrastive loss.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: &Tensor,
        attention_mask: Option<&Tensor>,
        options: ForwardOptions,
    ) -> Result<AltClipOutput> {
        let vision = self.vision_model()?.forward(
            pixel_values,
            options.interpolate_pos_encoding,
            options.output_hidden_states,
        )?;
        let text = self
            .text_model()?
            .forward(input_ids, attention_mask, options.output_hidden_states)?;
        let image_embeds = l2_normalize(&self.visual_projection.forward(&vision.pooler_output)?)?;
        let text_embeds = l2_normalize(&self.text_projection.forward(&text.pooler_output)?)?;
        let logits_per_text = self.logits(&text_embeds, &image_embeds)?;
        let logits_per_image = logits_per_text.t()?;
        let loss = if options.return_loss {
            Some(contrastive_loss(&logits_per_text)?)
        } else {
            None
        };
        Ok(AltClipOutput {
            logits_per_image,
            logits_per_text,
            text_embeds,
            image_embeds,
            loss,
            text_model_output: text,
            vision_model_output: vision,
        })
    }

    /// `exp(logit_scale) · a bᵀ` for normalised embeddings `a` (n, d) and `b` (m, d): (n, m).
    pub fn logits(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let scale = self.logit_scale.exp()?.to_dtype(a.dtype())?;
        Ok(a.matmul(&b.t()?)?.broadcast_mul(&scale)?)
    }
}

/// `x / ‖x‖₂` along the last dimension (transformers' `_get_vector_norm`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// transformers' `image_text_contrastive_loss`: the mean of the cross-entropies over rows and over columns of the
/// (square) similarity matrix, with the diagonal as targets. Computed in f32.
pub fn contrastive_loss(logits_per_text: &Tensor) -> Result<Tensor> {
    let (n, m) = logits_per_text.dims2()?;
    if n != m {
        return Err(Error::bad_input(
            "return_loss",
            format!("the contrastive loss needs as many texts as images, got {n} texts and {m} images"),
        ));
    }
    let logits = logits_per_text.to_dtype(DType::F32)?;
    let caption = diagonal_cross_entropy(&logits)?;
    let image = diagonal_cross_entropy(&logits.t()?)?;
    Ok(((caption + image)? / 2.0)?)
}

fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let targets = Tensor::arange(0u32, n as u32, logits.device())?;
    let log_probs = candle_nn::ops::log_softmax(&logits.contiguous()?, D::Minus1)?;
    Ok(candle_nn::loss::nll(&log_probs, &targets)?)
}
