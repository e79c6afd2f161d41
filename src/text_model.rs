//! The text tower: XLM-RoBERTa (bidirectional) → `pre_LN` → `transformation`, pooled at token 0.
//!
//! Mirrors transformers' `AltRobertaModel` and `AltCLIPTextModel` (`modeling_altclip.py`). Tensor names follow
//! PyTorch's: `roberta.embeddings.*`, `roberta.encoder.layer.N.*`, `pre_LN.*`, `transformation.*`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::{tower_config_from_dir, AltClipTextConfig};
use crate::error::{Error, Result};
use crate::nn::{FeedForward, LayerNorm, Linear, Queries, SelfAttention};
use crate::options::Quantization;
use crate::tower::{load_layers, on_worker, run_layers, EncoderLayer, Tower};
use crate::weights::{CheckpointView, StoredRows};

/// Word, position and token-type embeddings followed by layer norm (`AltRobertaEmbeddings`).
#[derive(Debug, Clone)]
struct TextEmbeddings {
    word: TokenTable,
    position: Tensor,
    token_type0: Tensor,
    layer_norm: LayerNorm,
}

/// The token table (`word_embeddings`): read from a safetensors checkpoint row by row as tokens are looked up, or
/// held whole when the checkpoint is another kind. It is a quarter of BAAI/AltCLIP's weights (1 GB), and a model
/// uses the few thousand rows its captions hold: reading them where they are stored spares loading the table
/// (the fresh memory it fills) and its RSS, and processes sharing a checkpoint share its page cache.
#[derive(Debug, Clone)]
enum TokenTable {
    Stored(StoredRows),
    Held(Tensor),
}

impl TextEmbeddings {
    fn load(w: &CheckpointView, cfg: &AltClipTextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let token_type = w.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?;
        let word = match w.stored_rows((cfg.vocab_size, h), "word_embeddings.weight")? {
            Some(rows) => TokenTable::Stored(rows),
            None => {
                let dtype = held_table_dtype(w.quantization()).unwrap_or(w.dtype());
                TokenTable::Held(w.get_as((cfg.vocab_size, h), "word_embeddings.weight", dtype)?)
            }
        };
        Ok(Self {
            word,
            position: w.get((cfg.max_position_embeddings, h), "position_embeddings.weight")?,
            // token_type_ids are all zero for XLM-R (transformers' default buffer).
            token_type0: token_type.get(0)?,
            layer_norm: LayerNorm::load(&w.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// Stores a held token table as `quantization` wants it (see [`held_table_dtype`]).
    fn quantize(&mut self, quantization: Quantization) -> Result<()> {
        if let (TokenTable::Held(table), Some(dtype)) = (&mut self.word, held_table_dtype(Some(quantization))) {
            *table = table.to_dtype(dtype)?;
        }
        Ok(())
    }

    /// `ids`: the (batch, seq) token ids, checked in range, with `host_ids` their values.
    fn forward(&self, ids: &Tensor, host_ids: &[u32], position_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let positions = self.position.embedding(&position_ids.flatten_all()?)?;
        let words = match &self.word {
            TokenTable::Stored(rows) => rows.gather(host_ids, positions.dtype(), positions.device())?,
            TokenTable::Held(table) => table.embedding(&ids.flatten_all()?)?.to_dtype(positions.dtype())?,
        };
        let x = words.add(&positions)?.broadcast_add(&self.token_type0)?;
        let x = x.reshape((b, s, ()))?;
        self.layer_norm.forward(&x)
    }
}

/// The dtype a held token table is kept in under `quantization`, where it differs from the model's: under int8,
/// f16 (half its memory; looked-up rows widen to the model's dtype, and f16's rounding, 2⁻¹¹ relative, is far
/// below int8's). A stored table's rows are read exactly.
fn held_table_dtype(quantization: Option<Quantization>) -> Option<DType> {
    match quantization {
        Some(Quantization::Int8) => Some(DType::F16),
        Some(Quantization::Ggml(_)) | None => None,
    }
}

/// One post-LN transformer layer (`AltRobertaLayer`).
#[derive(Debug, Clone)]
pub(crate) struct TextLayer {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    ffn: FeedForward,
    output_norm: LayerNorm,
}

impl EncoderLayer for TextLayer {
    fn projections(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.attention.projections().into_iter().chain(self.ffn.projections())
    }
}

impl TextLayer {
    fn load(w: &CheckpointView, cfg: &AltClipTextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let sa = w.pp("attention.self");
        let attention = SelfAttention::new(
            Linear::load_stacked(&[&sa.pp("query"), &sa.pp("key"), &sa.pp("value")], h, h)?,
            Linear::load(&w.pp("attention.output.dense"), h, h)?,
            cfg.num_attention_heads,
        )?;
        Ok(Self {
            attention,
            attention_norm: LayerNorm::load(&w.pp("attention.output.LayerNorm"), h, eps)?,
            ffn: FeedForward::new(
                Linear::load(&w.pp("intermediate.dense"), h, cfg.intermediate_size)?,
                Linear::load(&w.pp("output.dense"), cfg.intermediate_size, h)?,
                cfg.activation()?,
            ),
            output_norm: LayerNorm::load(&w.pp("output.LayerNorm"), h, eps)?,
        })
    }

    /// The layer's output for the tokens `queries` names (post-LN: `norm(x + attention(x))`, then
    /// `norm(· + ffn(·))`, each residual add fused into its norm).
    fn forward(&self, x: &Tensor, mask: &Tensor, queries: Queries) -> Result<Tensor> {
        let attn = self.attention.forward(x, Some(mask), queries)?;
        let x = self.attention_norm.forward_residual(&attn, &queries.rows(x)?)?;
        let y = self.ffn.forward(&x)?;
        self.output_norm.forward_residual(&y, &x)
    }
}

impl Tower for AltClipTextModel {
    type Config = AltClipTextConfig;
    const PREFIX: &'static str = TEXT_PREFIX;
    const MARKER: &'static str = "transformation.weight";

    fn build(cfg: &AltClipTextConfig, w: &CheckpointView) -> Result<Self> {
        Self::new(cfg, w)
    }

    fn read_config(dir: &Path) -> Result<AltClipTextConfig> {
        tower_config_from_dir(dir, |c| c.text_config, AltClipTextConfig::validate)
    }

    type Layer = TextLayer;

    fn encoder_layers(&mut self) -> &mut [TextLayer] {
        &mut self.layers
    }
}

/// What [`AltClipTextModel::forward`] returns (`BaseModelOutputWithPoolingAndProjection`).
#[derive(Debug, Clone)]
pub struct TextModelOutput {
    /// `transformation(pre_LN(encoder output))`: (batch, seq, project_dim). This is what AltDiffusion conditions on.
    pub last_hidden_state: Tensor,
    /// Token 0 of `last_hidden_state`: (batch, project_dim).
    pub pooler_output: Tensor,
    /// With `output_hidden_states`: the embeddings output and every layer's output (before `pre_LN`),
    /// `num_hidden_layers + 1` tensors of (batch, seq, hidden).
    pub hidden_states: Option<Vec<Tensor>>,
}

/// The AltCLIP text tower (`AltCLIPTextModel`).
#[derive(Debug, Clone)]
pub struct AltClipTextModel {
    embeddings: TextEmbeddings,
    layers: Vec<TextLayer>,
    pre_ln: LayerNorm,
    transformation: Linear,
    config: AltClipTextConfig,
}

/// Prefix of the text tower inside a full `AltCLIPModel` checkpoint.
pub const TEXT_PREFIX: &str = "text_model";

impl AltClipTextModel {
    /// Builds the tower from weights rooted at the tower (names `roberta.*`, `pre_LN.*`, `transformation.*`).
    pub fn new(cfg: &AltClipTextConfig, w: &CheckpointView) -> Result<Self> {
        cfg.validate()?;
        let roberta = w.pp("roberta");
        // The embeddings (small: the token table stays in the file, see `TokenTable`) load beside the layers.
        let (embeddings, layers) = rayon::join(
            || TextEmbeddings::load(&roberta.pp("embeddings"), cfg),
            || {
                load_layers(w, cfg.num_hidden_layers, |i| {
                    TextLayer::load(&roberta.pp(format!("encoder.layer.{i}")), cfg)
                })
            },
        );
        Ok(Self {
            embeddings: embeddings?,
            layers: layers?,
            pre_ln: LayerNorm::load(&w.pp("pre_LN"), cfg.hidden_size, cfg.layer_norm_eps)?,
            transformation: Linear::load(&w.pp("transformation"), cfg.hidden_size, cfg.project_dim)?,
            config: cfg.clone(),
        })
    }

    /// Quantizes every encoder layer's projections (q/k/v, attention output, both MLP layers) to `quantization`
    /// (see [`AltClipModel::quantize`](crate::AltClipModel::quantize)); norms and the tower's own output
    /// projection stay as loaded, and so do the embeddings, except that int8 keeps a held token table in f16
    /// (see `TokenTable`: one read from a safetensors file is never held).
    /// Returns how many projections were quantized (0 when the widths don't fit a GGML format's block size).
    pub fn quantize(&mut self, quantization: Quantization) -> Result<usize> {
        let quantized = self.quantize_encoder(quantization)?;
        self.embeddings.quantize(quantization)?;
        Ok(quantized)
    }

    /// Builds the tower from either a full AltCLIP checkpoint (under `text_model.`) or its own.
    pub fn load(cfg: &AltClipTextConfig, w: &CheckpointView) -> Result<Self> {
        Self::load_from(cfg, w)
    }

    /// Loads from a directory holding `config.json` (a full AltCLIP config or a text-only one) and weights.
    pub fn from_dir(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_dir(dir.as_ref(), dtype, device)
    }

    /// The configuration the tower was built with.
    pub fn config(&self) -> &AltClipTextConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embeddings.position.device()
    }

    /// The dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.embeddings.position.dtype()
    }

    /// Runs the tower.
    ///
    /// `input_ids`: (batch, seq) of u32 or i64; `attention_mask`: same shape, 1 for real tokens and 0 for padding
    /// (any numeric dtype), or `None` for all ones.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        output_hidden_states: bool,
    ) -> Result<TextModelOutput> {
        on_worker(self.device(), || {
            self.forward_here(input_ids, attention_mask, output_hidden_states)
        })
    }

    /// The pooler output alone, (batch, project_dim): [`Self::forward`]'s `pooler_output`, with the last layer,
    /// `pre_LN` and `transformation` run for token 0 only, all that the pooled output reads of them (the other
    /// tokens still give it their keys and values). What [`crate::AltClipModel::get_text_features`] runs: 3-4 %
    /// less work than the whole tower at 16 tokens and more.
    pub fn pooled_output(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        on_worker(self.device(), || {
            let (x, _) = self.encode(input_ids, attention_mask, false, Queries::First)?;
            Ok(self.transformation.forward(&self.pre_ln.forward(&x)?)?.squeeze(1)?)
        })
    }

    /// [`Self::forward`] on this thread.
    fn forward_here(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        output_hidden_states: bool,
    ) -> Result<TextModelOutput> {
        let (x, hidden_states) = self.encode(input_ids, attention_mask, output_hidden_states, Queries::All)?;
        let projected = self.transformation.forward(&self.pre_ln.forward(&x)?)?;
        let pooled = projected.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(TextModelOutput {
            last_hidden_state: projected,
            pooler_output: pooled,
            hidden_states,
        })
    }

    /// The encoder's output for the tokens `last` names (the last layer's queries): (batch, seq or 1, hidden);
    /// and with `output_hidden_states`, the embeddings' and every layer's output.
    fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        output_hidden_states: bool,
        last: Queries,
    ) -> Result<(Tensor, Option<Vec<Tensor>>)> {
        let (ids, host_ids, position_ids) = self.prepare_ids(input_ids)?;
        let mask = self.additive_mask(input_ids, attention_mask)?;
        let x = self.embeddings.forward(&ids, &host_ids, &position_ids)?;
        let mut hidden_states = output_hidden_states.then(|| vec![x.clone()]);
        let x = run_layers(&self.layers, x, hidden_states.as_mut(), last, |layer, x, queries| {
            layer.forward(x, &mask, queries)
        })?;
        Ok((x, hidden_states))
    }

    /// Checks `input_ids` and computes position ids as transformers' `create_position_ids_from_input_ids` does:
    /// `cumsum(ids != pad) * (ids != pad) + pad`, in integers so they are exact in any dtype and with either
    /// padding side. Returns the ids as u32 on the device and on the host, and the position ids.
    fn prepare_ids(&self, input_ids: &Tensor) -> Result<(Tensor, Vec<u32>, Tensor)> {
        let cfg = &self.config;
        let dims = input_ids.dims();
        let [b, s] = dims else {
            return Err(Error::bad_input(
                "input_ids",
                format!("expected rank 2 (batch, seq), got shape {dims:?}"),
            ));
        };
        let (b, s) = (*b, *s);
        if b == 0 || s == 0 {
            return Err(Error::bad_input("input_ids", format!("empty shape {dims:?}")));
        }
        let max_len = cfg.max_sequence_length();
        if s > max_len {
            return Err(Error::bad_input(
                "input_ids",
                format!(
                    "sequence length {s} exceeds the {max_len} positions of max_position_embeddings = {}",
                    cfg.max_position_embeddings
                ),
            ));
        }
        let ids: Vec<i64> = match input_ids.dtype() {
            DType::U32 | DType::I64 | DType::U8 => input_ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?,
            other => {
                return Err(Error::bad_input(
                    "input_ids",
                    format!("expected an integer dtype (u32 or i64), got {other:?}"),
                ))
            }
        };
        let vocab = cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
            return Err(Error::TokenOutOfRange {
                id: bad,
                vocab_size: vocab,
            });
        }
        let pad = i64::from(cfg.pad_token_id);
        let mut positions = Vec::with_capacity(ids.len());
        for row in ids.chunks(s) {
            let mut count = 0u32;
            for &id in row {
                if id == pad {
                    positions.push(cfg.pad_token_id);
                } else {
                    count += 1;
                    positions.push(count + cfg.pad_token_id);
                }
            }
        }
        let ids_u32: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        let device = self.device();
        Ok((
            Tensor::from_slice(&ids_u32, (b, s), device)?,
            ids_u32,
            Tensor::from_vec(positions, (b, s), device)?,
        ))
    }

    /// `(1 − mask) · f32::MIN`, shaped (batch, 1, 1, seq) — transformers' extended attention mask, kept in f32.
    fn additive_mask(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let device = self.device();
        let mask = match attention_mask {
            None => Tensor::ones((b, s), DType::F32, device)?,
            Some(m) => {
                if m.dims() != [b, s] {
                    return Err(Error::bad_input(
                        "attention_mask",
                        format!("shape {:?} does not match input_ids {:?}", m.dims(), [b, s]),
                    ));
                }
                m.to_device(device)?.to_dtype(DType::F32)?
            }
        };
        let additive = ((1.0 - mask)? * f64::from(f32::MIN))?;
        Ok(additive.reshape((b, 1, 1, s))?)
    }
}
