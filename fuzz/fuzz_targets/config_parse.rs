//! Arbitrary text → `config.json`, `preprocessor_config.json` and `tokenizer_config.json` parsers (with their
//! validation), then the derived sizes of whatever parses. Errors must be typed, never panics.
#![no_main]

use altclip::processor::image::ImageProcessorConfig;
use altclip::processor::text::TokenizerConfig;
use altclip::AltClipConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = AltClipConfig::from_json_str(text) {
        let _ = cfg.text_config.max_sequence_length();
        let _ = cfg.vision_config.num_positions();
        let _ = cfg.text_config.activation();
        let _ = cfg.vision_config.activation();
    }
    if let Ok(cfg) = ImageProcessorConfig::from_json_str(text) {
        let _ = cfg.fixed_output_size();
        let _ = cfg.pixel_value_table();
        for (h, w) in [(1, 1), (1, 4096), (4096, 1), (480, 640), (u32::MAX, 1)] {
            let _ = cfg.size.output_size(h, w);
        }
    }
    let _ = TokenizerConfig::from_json_str(text);
});
