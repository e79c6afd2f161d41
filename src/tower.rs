//! What the two towers share: finding themselves in a full AltCLIP checkpoint or their own, loading from a model
//! directory, and quantizing their encoder layers' projections.

use std::path::Path;

use candle_core::{DType, Device};
use rayon::prelude::*;

use crate::error::Result;
use crate::nn::Linear;
use crate::options::Quantization;
use crate::weights::CheckpointView;

/// A tower ([`crate::AltClipTextModel`], [`crate::AltClipVisionModel`]): its public `load`, `from_dir` and
/// `quantize` are these provided methods.
pub(crate) trait Tower: Sized {
    /// The tower's configuration.
    type Config;
    /// The tower's prefix inside a full `AltCLIPModel` checkpoint.
    const PREFIX: &'static str;
    /// A tensor of the tower (under its own root) whose presence under [`Tower::PREFIX`] marks a checkpoint that
    /// holds the tower there rather than at the root.
    const MARKER: &'static str;

    /// Builds the tower from weights rooted at the tower.
    fn build(cfg: &Self::Config, w: &CheckpointView) -> Result<Self>;

    /// Reads the tower's configuration from `dir`'s `config.json` (a full AltCLIP config or the tower's own).
    fn read_config(dir: &Path) -> Result<Self::Config>;

    /// The tower's encoder layers.
    type Layer: EncoderLayer;

    /// The encoder layers, in order.
    fn encoder_layers(&mut self) -> &mut [Self::Layer];

    /// Builds the tower from a checkpoint holding it under [`Tower::PREFIX`] or at the root.
    fn load_from(cfg: &Self::Config, w: &CheckpointView) -> Result<Self> {
        if w.contains(&format!("{}.{}", Self::PREFIX, Self::MARKER)) {
            Self::build(cfg, &w.pp(Self::PREFIX))
        } else {
            Self::build(cfg, w)
        }
    }

    /// Loads from a directory holding `config.json` and weights.
    fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = Self::read_config(dir)?;
        Self::load_from(&cfg, &CheckpointView::from_dir(dir, dtype, device)?)
    }

    /// Quantizes [`Tower::encoder_projections`] to `quantization`; returns how many were.
    fn quantize_encoder(&mut self, quantization: Quantization) -> Result<usize> {
        Linear::quantize_all(
            self.encoder_layers().iter_mut().flat_map(EncoderLayer::projections),
            quantization,
        )
    }
}

/// One transformer layer of a tower's encoder.
pub(crate) trait EncoderLayer: Sized + Send {
    /// Its projections: q/k/v (fused), attention output, both MLP layers.
    fn projections(&mut self) -> impl Iterator<Item = &mut Linear>;
}

/// Loads `n` encoder layers with `load`, several at once (rayon), each quantized as soon as it is loaded when `w`
/// asks for it ([`CheckpointView::with_quantization`]): only the layers in flight hold f32 projections, so an
/// int8 model never holds the f32 one.
pub(crate) fn load_layers<L: EncoderLayer>(
    w: &CheckpointView,
    n: usize,
    load: impl Fn(usize) -> Result<L> + Sync,
) -> Result<Vec<L>> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut layer = load(i)?;
            if let Some(quantization) = w.quantization() {
                Linear::quantize_all(layer.projections(), quantization)?;
            }
            Ok(layer)
        })
        .collect()
}
