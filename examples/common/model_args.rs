//! Command-line options shared by the examples: which model, where it runs, in which dtype.

use std::path::PathBuf;

use altclip::options::{parse_device, parse_dtype, parse_quantization};
use altclip::{AltClip, LoadOptions};
use anyhow::Context;

/// Which model to load, and how.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hub model id.
    #[arg(long, default_value = "BAAI/AltCLIP", conflicts_with = "model_dir")]
    pub model: String,
    /// Local model directory (config.json, weights, tokenizer, preprocessor_config.json).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Hub revision (BAAI/AltCLIP's safetensors copy: refs/pr/7).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Quantize the encoder weights: none; int8 (dynamic int8, CPU, f32); or a GGML format q8_0, q6k, q5k, q4k,
    /// q4_0 (refused on CPUs without AVX-512 VNNI, where they run slower than f32).
    #[arg(long, default_value = "none")]
    pub quantize: String,
}

impl ModelArgs {
    /// Loads model and processor from `--model-dir`, or `--model` through the hub cache.
    pub fn load(&self, progress: bool) -> anyhow::Result<AltClip> {
        let options = LoadOptions::default()
            .with_revision(self.revision.clone())
            .with_device(parse_device(&self.device)?)
            .with_dtype(parse_dtype(&self.dtype)?)
            .with_quantization(parse_quantization(&self.quantize)?)
            .with_progress(progress);
        match &self.model_dir {
            Some(dir) => AltClip::from_dir(dir, &options).with_context(|| format!("loading {}", dir.display())),
            None => AltClip::from_pretrained(&self.model, &options).with_context(|| format!("loading {}", self.model)),
        }
    }
}
