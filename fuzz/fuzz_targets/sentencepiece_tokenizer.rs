//! Arbitrary bytes as a `sentencepiece.bpe.model` → `TextProcessor`, then encode a few short texts (a model that
//! loads must encode without panicking or reading out of bounds).
#![no_main]

use altclip::processor::text::{Padding, TextProcessor, TokenizerConfig};
use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tok) = TextProcessor::from_sentencepiece_bytes(data, TokenizerConfig::default()) {
        let texts = ["a photo of a cat", "一张猫的照片 ＡＢＣ ①", "ﬁ café  \t x", ""];
        let _ = tok.encode(&texts, Padding::Longest, &Device::Cpu);
        let _ = tok.encode_unpadded(&["<mask> x"], Some(8));
    }
});
