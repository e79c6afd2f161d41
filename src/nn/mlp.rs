//! The feed-forward block of both towers' layers.

use candle_core::Tensor;

use super::Linear;
use crate::config::Activation;
use crate::error::Result;

/// Feed-forward block: `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl FeedForward {
    /// Builds the block from its two projections and activation.
    pub(crate) fn new(fc1: Linear, fc2: Linear, act: Activation) -> Self {
        Self { fc1, fc2, act }
    }

    /// Both projections, for [`Linear::quantize_all`].
    pub(crate) fn projections(&mut self) -> [&mut Linear; 2] {
        [&mut self.fc1, &mut self.fc2]
    }

    /// Applies the block.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward_act(x, Some(self.act))?)
    }

    /// `forward(x) + residual`, the add in `fc2`'s epilogue (see [`Linear::forward_residual`]).
    pub(crate) fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward_residual(&self.fc1.forward_act(x, Some(self.act))?, residual)
    }
}
