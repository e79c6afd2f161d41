//! The file names of a model repository (as transformers writes them): the one place they are spelled.
//! Used by `weights` (checkpoint files), `processor` (its configs and tokenizer) and `hub` (what to download).

/// The model's `AltCLIPConfig` (text, vision and projection settings).
pub const CONFIG_FILE: &str = "config.json";
/// Sharded safetensors: the index mapping tensor names to shard files.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// Single-file safetensors checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// PyTorch pickle checkpoint (the only weights on BAAI/AltCLIP's main branch).
pub const PYTORCH_FILE: &str = "pytorch_model.bin";
/// `CLIPImageProcessor` settings.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";
/// A fast (Hugging Face `tokenizers`) tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Tokenizer settings (`model_max_length`, special tokens, padding side, …).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Special tokens of older checkpoints.
pub const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
/// The SentencePiece model, for checkpoints without `tokenizer.json` (e.g. BAAI/AltCLIP-m9).
pub const SENTENCEPIECE_FILE: &str = "sentencepiece.bpe.model";

/// The processor's files, fetched when present.
pub const PROCESSOR_FILES: [&str; 5] = [
    PREPROCESSOR_CONFIG_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    SENTENCEPIECE_FILE,
];
