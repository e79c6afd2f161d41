//! Arbitrary bytes → decode (format sniffed) → RGB conversion → resize → center crop, under small decoder limits.
//! Every outcome must be `Ok` or a typed `altclip::Error`; a panic, abort or OOM is a finding.
#![no_main]

use altclip::processor::image::{DecodeLimits, ImageInput, ImageProcessor, ImageProcessorConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let config = match mode % 4 {
        // CLIP defaults: shortest edge 224, bicubic, crop 224.
        0 | 1 => ImageProcessorConfig::default(),
        // Exact RGB only (no conversion).
        2 => ImageProcessorConfig {
            do_convert_rgb: false,
            ..ImageProcessorConfig::default()
        },
        // Smaller output, other filter, max_height/max_width sizing (can round to zero pixels).
        _ => ImageProcessorConfig::from_json_str(
            r#"{"size": {"max_height": 16, "max_width": 16}, "resample": 1, "crop_size": 12}"#,
        )
        .unwrap_or_default(),
    };
    let processor = ImageProcessor::new(config)
        .with_exif_orientation(mode & 4 != 0)
        .with_limits(DecodeLimits {
            max_width: 512,
            max_height: 512,
            max_alloc: 16 << 20,
        });
    let _ = processor.preprocess_u8(&ImageInput::Bytes(bytes));
});
