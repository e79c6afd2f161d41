//! The layers the towers are built from — linear projections, layer norm, activations, attention, MLP — as plain
//! math: each asks its kernel in [`crate::kernels`] (a `try_…` that may decline) and otherwise runs generic candle
//! ops. Used by `text_model`, `vision_model` and `model`.

mod activation;
mod attention;
mod layer_norm;
mod linear;
mod mlp;

pub(crate) use attention::{Queries, SelfAttention};
pub(crate) use layer_norm::LayerNorm;
pub(crate) use linear::Linear;
pub(crate) use mlp::FeedForward;
