//! The vision tower: a CLIP ViT (patch + class + position embeddings → `pre_layrnorm` → pre-LN layers →
//! `post_layernorm` on the class token).
//!
//! Mirrors transformers' `AltCLIPVisionEmbeddings` and `AltCLIPVisionModel`. Tensor names follow PyTorch's,
//! typo included: `embeddings.*`, `pre_layrnorm.*`, `encoder.layers.N.*`, `post_layernorm.*`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::{tower_config_from_dir, AltClipVisionConfig};
use crate::error::{Error, Result};
use crate::nn::{FeedForward, LayerNorm, Linear, Queries, SelfAttention};
use crate::options::Quantization;
use crate::tower::{load_layers, on_worker, run_layers, EncoderLayer, Tower};
use crate::weights::CheckpointView;

/// Patch, class and position embeddings (`AltCLIPVisionEmbeddings`).
#[derive(Debug, Clone)]
struct VisionEmbeddings {
    /// Patch projection as a matrix: (hidden, channels · patch · patch), the conv kernel flattened.
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
}

impl VisionEmbeddings {
    fn load(w: &CheckpointView, cfg: &AltClipVisionConfig) -> Result<Self> {
        let (h, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let conv = w.get((h, c, p, p), "patch_embedding.weight")?;
        Ok(Self {
            patch_weight: conv.reshape((h, c * p * p))?,
            class_embedding: w.get(h, "class_embedding")?,
            position_embedding: w.get((cfg.num_positions(), h), "position_embedding.weight")?,
            patch_size: p,
        })
    }

    /// `pixel_values`: (batch, channels, height, width), already checked.
    fn forward(&self, pixel_values: &Tensor, interpolate: bool) -> Result<Tensor> {
        let (b, c, height, width) = pixel_values.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        let hidden = self.class_embedding.dim(0)?;
        // A stride-p convolution without bias is a matmul over non-overlapping patches; the conv drops any
        // remainder rows/columns, and so does this narrow.
        let patches = pixel_values
            .to_dtype(self.patch_weight.dtype())?
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let patch_embeds = patches.matmul(&self.patch_weight.t()?)?.reshape((b, gh * gw, hidden))?;
        let class = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((b, 1, hidden))?;
        let embeddings = Tensor::cat(&[&class, &patch_embeds], 1)?;
        let positions = if interpolate {
            self.interpolated_positions(height, width)?
        } else {
            self.position_embedding.clone()
        };
        Ok(embeddings.broadcast_add(&positions.unsqueeze(0)?)?)
    }

    /// Mirrors `AltCLIPVisionEmbeddings.interpolate_pos_encoding`: the patch-grid position embeddings resized to
    /// the input's grid with torch's `interpolate(mode="bicubic", align_corners=False)`.
    fn interpolated_positions(&self, height: usize, width: usize) -> Result<Tensor> {
        let (num_positions, dim) = self.position_embedding.dims2()?;
        let old = num_positions - 1;
        let (new_h, new_w) = (height / self.patch_size, width / self.patch_size);
        if new_h * new_w == old && height == width {
            return Ok(self.position_embedding.clone());
        }
        let side = (old as f64).sqrt() as usize;
        if side * side != old {
            return Err(Error::bad_input(
                "pixel_values",
                format!("cannot interpolate {old} position embeddings: not a square grid"),
            ));
        }
        let dtype = self.position_embedding.dtype();
        let device = self.position_embedding.device();
        let class_pos = self.position_embedding.narrow(0, 0, 1)?;
        // (old, dim) → (side, side·dim) so that rows are the grid's y axis.
        let grid = self
            .position_embedding
            .narrow(0, 1, old)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let wy = Tensor::from_vec(bicubic_matrix(side, new_h), (new_h, side), &Device::Cpu)?;
        let wx = Tensor::from_vec(bicubic_matrix(side, new_w), (new_w, side), &Device::Cpu)?;
        // Resize along y: (new_h, side) · (side, side·dim).
        let along_y = wy.matmul(&grid.reshape((side, side * dim))?)?;
        // Resize along x: for each new row, (new_w, side) · (side, dim).
        let along_y = along_y.reshape((new_h, side, dim))?;
        let resized = wx
            .unsqueeze(0)?
            .broadcast_as((new_h, new_w, side))?
            .contiguous()?
            .matmul(&along_y)?
            .reshape((new_h * new_w, dim))?;
        let resized = resized.to_dtype(dtype)?.to_device(device)?;
        Ok(Tensor::cat(&[&class_pos, &resized], 0)?)
    }
}

/// Weights of torch's 1-D bicubic interpolation (`upsample_bicubic2d`, `align_corners=False`, cubic coefficient
/// −0.75, clamped borders) as an (out, in) row-major matrix.
pub(crate) fn bicubic_matrix(input: usize, output: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let cc1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    let last = input as isize - 1;
    for o in 0..output {
        // area_pixel_compute_source_index with cubic = true: no clamping of the source coordinate.
        let real = scale * (o as f32 + 0.5) - 0.5;
        let floor = real.floor();
        let t = real - floor;
        let coeffs = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        for (k, c) in coeffs.iter().enumerate() {
            let idx = (floor as isize - 1 + k as isize).clamp(0, last) as usize;
            m[o * input + idx] += c;
        }
    }
    m
}

/// One pre-LN transformer layer (`AltCLIPEncoderLayer`).
#[derive(Debug, Clone)]
pub(crate) struct VisionLayer {
    layer_norm1: LayerNorm,
    attention: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: FeedForward,
}

impl EncoderLayer for VisionLayer {
    fn projections(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.attention.projections().into_iter().chain(self.mlp.projections())
    }
}

impl VisionLayer {
    fn load(w: &CheckpointView, cfg: &AltClipVisionConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let sa = w.pp("self_attn");
        Ok(Self {
            layer_norm1: LayerNorm::load(&w.pp("layer_norm1"), h, eps)?,
            attention: SelfAttention::new(
                Linear::load_stacked(&[&sa.pp("q_proj"), &sa.pp("k_proj"), &sa.pp("v_proj")], h, h)?,
                Linear::load(&sa.pp("out_proj"), h, h)?,
                cfg.num_attention_heads,
            )?,
            layer_norm2: LayerNorm::load(&w.pp("layer_norm2"), h, eps)?,
            mlp: FeedForward::new(
                Linear::load(&w.pp("mlp.fc1"), h, cfg.intermediate_size)?,
                Linear::load(&w.pp("mlp.fc2"), cfg.intermediate_size, h)?,
                cfg.activation()?,
            ),
        })
    }

    /// `x + attention(ln1(x))`, then that `+ mlp(ln2(·))`, for the tokens `queries` names: each residual add in
    /// its projection's epilogue.
    fn forward(&self, x: &Tensor, queries: Queries) -> Result<Tensor> {
        let x = self
            .attention
            .forward_residual(&self.layer_norm1.forward(x)?, None, &queries.rows(x)?, queries)?;
        self.mlp.forward_residual(&self.layer_norm2.forward(&x)?, &x)
    }
}

impl Tower for AltClipVisionModel {
    type Config = AltClipVisionConfig;
    const PREFIX: &'static str = VISION_PREFIX;
    const MARKER: &'static str = "post_layernorm.weight";

    fn build(cfg: &AltClipVisionConfig, w: &CheckpointView) -> Result<Self> {
        Self::new(cfg, w)
    }

    fn read_config(dir: &Path) -> Result<AltClipVisionConfig> {
        tower_config_from_dir(dir, |c| c.vision_config, AltClipVisionConfig::validate)
    }

    type Layer = VisionLayer;

    fn encoder_layers(&mut self) -> &mut [VisionLayer] {
        &mut self.layers
    }
}

/// What [`AltClipVisionModel::forward`] returns (`BaseModelOutputWithPooling`).
#[derive(Debug, Clone)]
pub struct VisionModelOutput {
    /// The last layer's output: (batch, 1 + patches, hidden).
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the class token: (batch, hidden).
    pub pooler_output: Tensor,
    /// With `output_hidden_states`: the encoder input (after `pre_layrnorm`) and every layer's output,
    /// `num_hidden_layers + 1` tensors.
    pub hidden_states: Option<Vec<Tensor>>,
}

/// The AltCLIP vision tower (`AltCLIPVisionModel`).
#[derive(Debug, Clone)]
pub struct AltClipVisionModel {
    embeddings: VisionEmbeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<VisionLayer>,
    post_layernorm: LayerNorm,
    config: AltClipVisionConfig,
}

/// Prefix of the vision tower in both a full `AltCLIPModel` checkpoint and an `AltCLIPVisionModel` one.
pub const VISION_PREFIX: &str = "vision_model";

impl AltClipVisionModel {
    /// Builds the tower from weights rooted at the tower (`embeddings.*`, `pre_layrnorm.*`, `encoder.*`, ...).
    pub fn new(cfg: &AltClipVisionConfig, w: &CheckpointView) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let layers = load_layers(w, cfg.num_hidden_layers, |i| {
            VisionLayer::load(&w.pp(format!("encoder.layers.{i}")), cfg)
        })?;
        Ok(Self {
            embeddings: VisionEmbeddings::load(&w.pp("embeddings"), cfg)?,
            pre_layrnorm: LayerNorm::load(&w.pp("pre_layrnorm"), h, eps)?,
            layers,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), h, eps)?,
            config: cfg.clone(),
        })
    }

    /// Quantizes every encoder layer's projections (q/k/v, attention output, both MLP layers) to `quantization`
    /// (see [`AltClipModel::quantize`](crate::AltClipModel::quantize)); embeddings, norms and the tower's own
    /// output projection stay as loaded. Returns how many projections were quantized (0 when the widths don't fit
    /// a GGML format's block size).
    pub fn quantize(&mut self, quantization: Quantization) -> Result<usize> {
        self.quantize_encoder(quantization)
    }

    /// Builds the tower from a checkpoint holding it under `vision_model.` (a full AltCLIP checkpoint or an
    /// `AltCLIPVisionModel` one), or at the root.
    pub fn load(cfg: &AltClipVisionConfig, w: &CheckpointView) -> Result<Self> {
        Self::load_from(cfg, w)
    }

    /// Loads from a directory holding `config.json` (a full AltCLIP config or a vision-only one) and weights.
    pub fn from_dir(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_dir(dir.as_ref(), dtype, device)
    }

    /// The configuration the tower was built with.
    pub fn config(&self) -> &AltClipVisionConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embeddings.patch_weight.device()
    }

    /// Runs the tower on `pixel_values` (batch, channels, height, width), any float dtype.
    ///
    /// Without `interpolate_pos_encoding` the input must be `image_size` square; with it, any size of at least one
    /// patch per side is accepted and the position embeddings are resized bicubically.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        interpolate_pos_encoding: bool,
        output_hidden_states: bool,
    ) -> Result<VisionModelOutput> {
        on_worker(self.device(), || {
            self.forward_here(pixel_values, interpolate_pos_encoding, output_hidden_states)
        })
    }

    /// The pooler output alone, (batch, hidden): [`Self::forward`]'s `pooler_output`, with the last layer run for
    /// the class token only, all that the pooled output reads of it (the patches still give it their keys and
    /// values). What [`crate::AltClipModel::get_image_features`] runs: about 3 % less work than the whole tower.
    pub fn pooled_output(&self, pixel_values: &Tensor, interpolate_pos_encoding: bool) -> Result<Tensor> {
        on_worker(self.device(), || {
            let (x, _) = self.encode(pixel_values, interpolate_pos_encoding, false, Queries::First)?;
            self.post_layernorm.forward(&x.squeeze(1)?)
        })
    }

    /// [`Self::forward`] on this thread.
    fn forward_here(
        &self,
        pixel_values: &Tensor,
        interpolate_pos_encoding: bool,
        output_hidden_states: bool,
    ) -> Result<VisionModelOutput> {
        let (x, hidden_states) = self.encode(
            pixel_values,
            interpolate_pos_encoding,
            output_hidden_states,
            Queries::All,
        )?;
        let pooled = self.post_layernorm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(VisionModelOutput {
            last_hidden_state: x,
            pooler_output: pooled,
            hidden_states,
        })
    }

    /// The encoder's output for the tokens `last` names (the last layer's queries): (batch, tokens or 1, hidden);
    /// and with `output_hidden_states`, `pre_layrnorm`'s and every layer's output.
    fn encode(
        &self,
        pixel_values: &Tensor,
        interpolate_pos_encoding: bool,
        output_hidden_states: bool,
        last: Queries,
    ) -> Result<(Tensor, Option<Vec<Tensor>>)> {
        self.check_pixels(pixel_values, interpolate_pos_encoding)?;
        let x = self
            .embeddings
            .forward(&pixel_values.to_device(self.device())?, interpolate_pos_encoding)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let mut hidden_states = output_hidden_states.then(|| vec![x.clone()]);
        let x = run_layers(&self.layers, x, hidden_states.as_mut(), last, VisionLayer::forward)?;
        Ok((x, hidden_states))
    }

    fn check_pixels(&self, pixel_values: &Tensor, interpolate: bool) -> Result<()> {
        let dims = pixel_values.dims();
        let &[b, c, h, w] = dims else {
            return Err(Error::bad_input(
                "pixel_values",
                format!("expected rank 4 (batch, channels, height, width), got shape {dims:?}"),
            ));
        };
        if !pixel_values.dtype().is_float() {
            return Err(Error::bad_input(
                "pixel_values",
                format!("expected a float dtype, got {:?}", pixel_values.dtype()),
            ));
        }
        if b == 0 {
            return Err(Error::bad_input("pixel_values", "empty batch"));
        }
        if c != self.config.num_channels {
            return Err(Error::bad_input(
                "pixel_values",
                format!("{c} channels, the model expects {}", self.config.num_channels),
            ));
        }
        let size = self.config.image_size;
        if !interpolate && (h != size || w != size) {
            return Err(Error::ImageSize {
                expected: size,
                got_h: h,
                got_w: w,
            });
        }
        let p = self.config.patch_size;
        if h < p || w < p {
            return Err(Error::bad_input(
                "pixel_values",
                format!("{h}x{w} is smaller than one {p}x{p} patch"),
            ));
        }
        Ok(())
    }
}
