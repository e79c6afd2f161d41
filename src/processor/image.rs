//! CLIP image preprocessing, matching transformers' `CLIPImageProcessorPil` (the PIL backend) bit for bit.
//!
//! ```text
//! bytes / path / DynamicImage / raw buffer
//!   ─► decode (format sniffed from content, decoder limits)      [ImageInput, load_image]
//!   ─► convert to RGB exactly like transformers' convert_to_rgb + Pillow's mode conversions
//!   ─► resize: output size from `size` (shortest_edge | height,width | shortest+longest | max_height,max_width),
//!      Pillow-exact resampling (crate::processor::resize)
//!   ─► center crop (zero padding when the image is smaller than the crop)              [preprocess_u8]
//!   ─► rescale (f64 multiply, cast to f32) and normalize ((x − mean) / std in f32)     [preprocess]
//!   ─► Tensor (N, 3, H, W) on the requested device and dtype
//! ```
//!
//! # Conversion to RGB (what transformers 5 / Pillow 13 do, reproduced here)
//!
//! transformers' `convert_to_rgb` **composites images that have alpha onto white** (`Image.alpha_composite` on an
//! opaque white background, Pillow's 7-bit-precision integer blend), and converts everything else with
//! `Image.convert("RGB")`:
//!
//! | decoded as | Pillow mode | result |
//! |---|---|---|
//! | grey 8-bit | `L` | grey replicated to R, G, B |
//! | grey + alpha, RGBA, palette or grey/RGB with a `tRNS` key, GIF with a transparent index | `LA`, `RGBA`, `P`+transparency | composited onto white |
//! | 16-bit RGB / RGBA PNG | `RGB` / `RGBA` (Pillow keeps the **high byte**) | `v >> 8`, then composited if RGBA |
//! | 16-bit grey + alpha PNG | `RGBA` (high bytes) | `v >> 8`, composited |
//! | 16-bit grey PNG | `I;16` | **clipped**: `min(v, 255)` (Pillow's `I;16 → RGB`), so most pixels become 255 |
//! | CMYK JPEG | `CMYK` (Adobe-inverted on read) | Pillow's naive `CMYK → RGB` — identical to the JPEG decoder's own conversion |
//! | 32-bit BMP without an alpha mask | `RGB` (`BGRX`) | 4th byte ignored (the `image` decoder does the same) |
//!
//! [`ImageInput::Raw`] buffers follow transformers' NumPy path instead: an RGBA array is blended in float64,
//! `round(a/255 · c + (1 − a/255) · 255)` (round half to even).
//!
//! EXIF orientation is ignored by default, like `CLIPImageProcessorPil` given a freshly opened PIL image;
//! [`LoadOptions::apply_exif_orientation`] applies it (as `transformers.image_utils.load_image` does).
//!
//! # Exactness
//!
//! For losslessly stored images (PNG, BMP, GIF, TIFF, lossless WebP) and for JPEG (decoded by libjpeg-turbo as
//! Pillow decodes it, `super::jpeg`, default feature `libjpeg-turbo`) the uint8 image after resize and crop is
//! bit-identical to `CLIPImageProcessorPil`, and `pixel_values` are bit-identical too (same f64 rescale, f32
//! normalization). Lossy WebP (image-webp) and JPEG under `pure-rust-jpeg` (zune-jpeg) go through pure-Rust
//! decoders whose IDCT / upsampling can differ from libwebp / libjpeg-turbo by a few levels; see the crate's
//! image-processor tests for the measured bounds.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::resize::{resize_rgb8, Filter};
use crate::error::{Error, Result};

/// transformers' `OPENAI_CLIP_MEAN`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// transformers' `OPENAI_CLIP_STD`.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

// ---------------------------------------------------------------------------------------------------------------
// configuration

/// How `size` determines the resized image (transformers' `SizeDict`, as the PIL backend's `resize` reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeSpec {
    /// `{"shortest_edge": s}` (or an int `size` when `default_to_square` is false, as for CLIP): the short side
    /// becomes `s`, the long side `int(s · long / short)` (`get_resize_output_image_size`).
    ShortestEdge(u32),
    /// `{"shortest_edge": s, "longest_edge": l}`: `get_size_with_aspect_ratio(size, s, max_size = l)` — the short
    /// side becomes `s` unless that pushes the long side over `l`, in which case the long side is capped
    /// (`raw = l · short / long`, short side `round(raw)`, long side `int(raw · long / short)`).
    ShortestLongest {
        /// Target for the short side.
        shortest_edge: u32,
        /// Cap for the long side.
        longest_edge: u32,
    },
    /// `{"max_height": h, "max_width": w}`: scale by `min(h / height, w / width)` (up or down), truncating.
    MaxHeightWidth {
        /// Maximum output height.
        max_height: u32,
        /// Maximum output width.
        max_width: u32,
    },
    /// `{"height": h, "width": w}` (or a `[h, w]` list, or an int with `default_to_square`): exactly `h × w`,
    /// aspect ratio not kept.
    HeightWidth {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

impl SizeSpec {
    /// The `size` entry as transformers writes it in `preprocessor_config.json`.
    pub fn to_json(&self) -> serde_json::Value {
        match *self {
            SizeSpec::ShortestEdge(s) => serde_json::json!({ "shortest_edge": s }),
            SizeSpec::ShortestLongest {
                shortest_edge,
                longest_edge,
            } => serde_json::json!({ "shortest_edge": shortest_edge, "longest_edge": longest_edge }),
            SizeSpec::MaxHeightWidth { max_height, max_width } => {
                serde_json::json!({ "max_height": max_height, "max_width": max_width })
            }
            SizeSpec::HeightWidth { height, width } => serde_json::json!({ "height": height, "width": width }),
        }
    }

    /// The `(height, width)` an image of `height × width` is resized to, computed with the same integer and
    /// float arithmetic as transformers. May contain a zero for extreme aspect ratios (an error at resize time).
    pub fn output_size(&self, height: u32, width: u32) -> (u32, u32) {
        let (h, w) = (u64::from(height), u64::from(width));
        match *self {
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::ShortestEdge(s) => {
                // get_resize_output_image_size(default_to_square=False): int(size * long / short) with Python's
                // true division of two ints (exact below 2^53, same as f64 division here).
                let s64 = u64::from(s);
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((s64 * long) as f64 / short as f64) as u64;
                let new_long = u32::try_from(new_long).unwrap_or(u32::MAX);
                if w <= h {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
            SizeSpec::ShortestLongest {
                shortest_edge,
                longest_edge,
            } => size_with_aspect_ratio(h, w, shortest_edge, longest_edge),
            SizeSpec::MaxHeightWidth { max_height, max_width } => {
                let hs = f64::from(max_height) / h as f64;
                let ws = f64::from(max_width) / w as f64;
                let scale = hs.min(ws);
                (sat_u32(h as f64 * scale), sat_u32(w as f64 * scale))
            }
        }
    }
}

fn sat_u32(v: f64) -> u32 {
    // `int(v)` for non-negative v; `as` truncates and saturates.
    v as u32
}

/// transformers' `get_size_with_aspect_ratio((height, width), size, max_size)`.
fn size_with_aspect_ratio(height: u64, width: u64, size: u32, max_size: u32) -> (u32, u32) {
    let mut size = f64::from(size);
    let max_size = f64::from(max_size);
    let (hf, wf) = (height as f64, width as f64);
    let min_o = hf.min(wf);
    let max_o = hf.max(wf);
    let mut raw_size = None;
    if max_o / min_o * size > max_size {
        let raw = max_size * min_o / max_o;
        raw_size = Some(raw);
        size = raw.round_ties_even(); // Python's round()
    }
    let size_i = size as u64;
    if (height <= width && height == size_i) || (width <= height && width == size_i) {
        return (sat_u32(hf), sat_u32(wf));
    }
    if width < height {
        let ow = size_i;
        let oh = match raw_size {
            Some(raw) => raw * hf / wf,
            None => (size_i * height) as f64 / wf,
        };
        (sat_u32(oh), u32::try_from(ow).unwrap_or(u32::MAX))
    } else {
        let oh = size_i;
        let ow = match raw_size {
            Some(raw) => raw * wf / hf,
            None => (size_i * width) as f64 / hf,
        };
        (u32::try_from(oh).unwrap_or(u32::MAX), sat_u32(ow))
    }
}

/// The center-crop size (`crop_size`, always height and width once resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CropSize {
    /// Output height.
    pub height: u32,
    /// Output width.
    pub width: u32,
}

/// A parsed `preprocessor_config.json`, resolved the way `CLIPImageProcessorPil.__init__` resolves it.
///
/// Every hub form is accepted: `size` as an int, a `[h, w]` list, `{"shortest_edge"}`, `{"height", "width"}`,
/// `{"shortest_edge", "longest_edge"}` or `{"max_height", "max_width"}`; `crop_size` as an int, a list or
/// `{"height", "width"}`; `image_mean` / `image_std` as one number or three. Missing (or `null`) fields take
/// CLIP's defaults: `size = {"shortest_edge": 224}`, `crop_size = 224 × 224`, bicubic, rescale `1/255`,
/// `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, every `do_*` true. Unknown keys (`feature_extractor_type`,
/// `image_processor_type`, `processor_class`, …) are ignored.
///
/// Differences from transformers, all on configs transformers cannot run either: an explicit `null` means
/// "default" (transformers would keep `None` and fail or fall back to bilinear), and `{"longest_edge"}` alone,
/// `{"min_pixels", "max_pixels"}`, `resample` 6/7 (Pillow's MKS filters) or a zero `image_std` are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig", into = "RawConfig")]
pub struct ImageProcessorConfig {
    /// Whether to resize (`do_resize`).
    pub do_resize: bool,
    /// Resize target (`size`).
    pub size: SizeSpec,
    /// Resampling filter (`resample`, a `PIL.Image.Resampling` code).
    pub resample: Filter,
    /// Whether to center-crop (`do_center_crop`).
    pub do_center_crop: bool,
    /// Crop size (`crop_size`).
    pub crop_size: CropSize,
    /// Whether to multiply by `rescale_factor` (`do_rescale`).
    pub do_rescale: bool,
    /// The rescale factor, applied in f64 before the cast to f32 (`rescale_factor`, default `1/255`).
    pub rescale_factor: f64,
    /// Whether to normalize with `image_mean` / `image_std` (`do_normalize`).
    pub do_normalize: bool,
    /// Per-channel mean (applied as f32).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (applied as f32).
    pub image_std: [f64; 3],
    /// Whether to convert to RGB (`do_convert_rgb`). When false, only RGB images are accepted.
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    /// transformers' `CLIPImageProcessorPil` defaults.
    fn default() -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: SizeSpec::ShortestEdge(224),
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: CropSize {
                height: 224,
                width: 224,
            },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
        }
    }
}

/// The on-disk form of [`ImageProcessorConfig`] (every field optional, values as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    do_resize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resample: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    do_center_crop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crop_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    do_rescale: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rescale_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    do_normalize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_mean: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_std: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    do_convert_rgb: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_to_square: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_square_size: Option<bool>,
}

fn json_u32(field: &str, v: &Value) -> Result<u32> {
    let n = v
        .as_u64()
        .ok_or_else(|| Error::config(field, format!("expected a positive integer, got {v}")))?;
    let n = u32::try_from(n).map_err(|_| Error::config(field, format!("{n} is too large")))?;
    if n == 0 {
        return Err(Error::config(field, "must be positive, got 0"));
    }
    Ok(n)
}

fn parse_size(v: &Value, default_to_square: bool) -> Result<SizeSpec> {
    const FIELD: &str = "size";
    match v {
        Value::Number(_) => {
            let s = json_u32(FIELD, v)?;
            Ok(if default_to_square {
                SizeSpec::HeightWidth { height: s, width: s }
            } else {
                SizeSpec::ShortestEdge(s)
            })
        }
        Value::Array(items) => match items.as_slice() {
            [h, w] => Ok(SizeSpec::HeightWidth {
                height: json_u32("size[0]", h)?,
                width: json_u32("size[1]", w)?,
            }),
            _ => Err(Error::config(
                FIELD,
                format!("a size list needs [height, width], got {v}"),
            )),
        },
        Value::Object(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let get = |k: &str| -> Result<u32> {
                let field = format!("size.{k}");
                map.get(k)
                    .ok_or_else(|| Error::config(field.clone(), "missing"))
                    .and_then(|x| json_u32(&field, x))
            };
            match keys.as_slice() {
                ["shortest_edge"] => Ok(SizeSpec::ShortestEdge(get("shortest_edge")?)),
                ["longest_edge", "shortest_edge"] => Ok(SizeSpec::ShortestLongest {
                    shortest_edge: get("shortest_edge")?,
                    longest_edge: get("longest_edge")?,
                }),
                ["height", "width"] => Ok(SizeSpec::HeightWidth {
                    height: get("height")?,
                    width: get("width")?,
                }),
                ["max_height", "max_width"] => Ok(SizeSpec::MaxHeightWidth {
                    max_height: get("max_height")?,
                    max_width: get("max_width")?,
                }),
                ["longest_edge"] | ["max_pixels", "min_pixels"] => Err(Error::config(
                    FIELD,
                    format!("{v} is valid in transformers but CLIPImageProcessorPil cannot resize with it"),
                )),
                _ => Err(Error::config(
                    FIELD,
                    format!(
                        "keys {keys:?} are not one of {{height, width}}, {{shortest_edge}}, \
                         {{shortest_edge, longest_edge}}, {{max_height, max_width}}"
                    ),
                )),
            }
        }
        _ => Err(Error::config(
            FIELD,
            format!("expected an int, a list or a dict, got {v}"),
        )),
    }
}

fn parse_crop(v: &Value) -> Result<CropSize> {
    match parse_size(v, true) {
        Ok(SizeSpec::HeightWidth { height, width }) => Ok(CropSize { height, width }),
        Ok(other) => Err(Error::config(
            "crop_size",
            format!("needs height and width, got {other:?}"),
        )),
        Err(Error::InvalidConfig { field, reason }) => Err(Error::InvalidConfig {
            field: field.replacen("size", "crop_size", 1),
            reason,
        }),
        Err(e) => Err(e),
    }
}

fn parse_triple(field: &str, v: &Value) -> Result<[f64; 3]> {
    let num = |x: &Value| {
        x.as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Error::config(field, format!("expected numbers, got {x}")))
    };
    match v {
        Value::Number(_) => {
            let x = num(v)?;
            Ok([x, x, x])
        }
        Value::Array(items) => match items.as_slice() {
            [a, b, c] => Ok([num(a)?, num(b)?, num(c)?]),
            [a] => {
                let x = num(a)?;
                Ok([x, x, x])
            }
            _ => Err(Error::config(
                field,
                format!("needs 3 values (one per RGB channel), got {}", items.len()),
            )),
        },
        _ => Err(Error::config(field, format!("expected a number or a list, got {v}"))),
    }
}

impl TryFrom<RawConfig> for ImageProcessorConfig {
    type Error = Error;

    fn try_from(raw: RawConfig) -> Result<Self> {
        let d = ImageProcessorConfig::default();
        let default_to_square = raw.default_to_square.unwrap_or(false);
        let mut size = match raw.size.as_ref().filter(|v| !v.is_null()) {
            Some(v) => parse_size(v, default_to_square)?,
            None => d.size,
        };
        if raw.use_square_size == Some(true) {
            // Kosmos-2 compatibility in CLIPImageProcessorPil.__init__: square of the *class default* edge.
            size = SizeSpec::HeightWidth {
                height: 224,
                width: 224,
            };
        }
        let resample = match raw.resample.as_ref().filter(|v| !v.is_null()) {
            Some(v) => {
                let code = v
                    .as_i64()
                    .ok_or_else(|| Error::config("resample", format!("expected a PIL resampling code, got {v}")))?;
                Filter::from_pil_code(code).ok_or_else(|| {
                    Error::config(
                        "resample",
                        format!(
                            "unsupported PIL resampling code {code}; supported: 0 NEAREST, 1 LANCZOS, 2 BILINEAR, \
                             3 BICUBIC, 4 BOX, 5 HAMMING"
                        ),
                    )
                })?
            }
            None => d.resample,
        };
        let crop_size = match raw.crop_size.as_ref().filter(|v| !v.is_null()) {
            Some(v) => parse_crop(v)?,
            None => d.crop_size,
        };
        let image_mean = match raw.image_mean.as_ref().filter(|v| !v.is_null()) {
            Some(v) => parse_triple("image_mean", v)?,
            None => d.image_mean,
        };
        let image_std = match raw.image_std.as_ref().filter(|v| !v.is_null()) {
            Some(v) => parse_triple("image_std", v)?,
            None => d.image_std,
        };
        if image_std.iter().any(|&s| s as f32 == 0.0) {
            return Err(Error::config("image_std", format!("{image_std:?} contains a zero")));
        }
        let rescale_factor = raw.rescale_factor.unwrap_or(d.rescale_factor);
        if !rescale_factor.is_finite() {
            return Err(Error::config(
                "rescale_factor",
                format!("{rescale_factor} is not finite"),
            ));
        }
        Ok(ImageProcessorConfig {
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            size,
            resample,
            do_center_crop: raw.do_center_crop.unwrap_or(d.do_center_crop),
            crop_size,
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor,
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            image_mean,
            image_std,
            do_convert_rgb: raw.do_convert_rgb.unwrap_or(d.do_convert_rgb),
        })
    }
}

impl From<ImageProcessorConfig> for RawConfig {
    fn from(c: ImageProcessorConfig) -> Self {
        let size = c.size.to_json();
        RawConfig {
            do_resize: Some(c.do_resize),
            size: Some(size),
            resample: Some(Value::from(c.resample.pil_code())),
            do_center_crop: Some(c.do_center_crop),
            crop_size: Some(serde_json::json!({ "height": c.crop_size.height, "width": c.crop_size.width })),
            do_rescale: Some(c.do_rescale),
            rescale_factor: Some(c.rescale_factor),
            do_normalize: Some(c.do_normalize),
            image_mean: Some(serde_json::json!(c.image_mean)),
            image_std: Some(serde_json::json!(c.image_std)),
            do_convert_rgb: Some(c.do_convert_rgb),
            default_to_square: None,
            use_square_size: None,
        }
    }
}

impl ImageProcessorConfig {
    /// Parses a `preprocessor_config.json` document. `what` names it in errors.
    fn from_json_named(text: &str, what: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| Error::Json {
            what: what.to_string(),
            source,
        })?;
        ImageProcessorConfig::try_from(raw)
    }

    /// Parses `preprocessor_config.json` text ([`Error::Json`] on bad JSON, [`Error::InvalidConfig`] on values
    /// the PIL backend cannot run).
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_named(text, crate::files::PREPROCESSOR_CONFIG_FILE)
    }

    /// Reads and parses a `preprocessor_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_named(&text, &path.display().to_string())
    }

    /// The `(height, width)` of every output image, when it does not depend on the input (center crop on, or a
    /// fixed `height`/`width` resize); `None` otherwise.
    pub fn fixed_output_size(&self) -> Option<(u32, u32)> {
        if self.do_center_crop {
            Some((self.crop_size.height, self.crop_size.width))
        } else if let (true, SizeSpec::HeightWidth { height, width }) = (self.do_resize, self.size) {
            Some((height, width))
        } else {
            None
        }
    }

    /// The 3 × 256 lookup table mapping each uint8 level of each channel to its final pixel value, computed
    /// exactly as transformers does: `f32(f64(v) · rescale_factor)` then `(x − f32(mean)) / f32(std)` in f32.
    pub fn pixel_value_table(&self) -> [[f32; 256]; 3] {
        let mut table = [[0f32; 256]; 3];
        for (c, row) in table.iter_mut().enumerate() {
            let mean = self.image_mean[c] as f32;
            let std = self.image_std[c] as f32;
            for (v, out) in row.iter_mut().enumerate() {
                let x = if self.do_rescale {
                    (v as f64 * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                *out = if self.do_normalize { (x - mean) / std } else { x };
            }
        }
        table
    }
}

// ---------------------------------------------------------------------------------------------------------------
// inputs and decoding

/// The pixel layout of an [`ImageInput::Raw`] buffer (rows top to bottom, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawFormat {
    /// 1 byte per pixel, grey.
    L8,
    /// 3 bytes per pixel, R G B.
    Rgb8,
    /// 4 bytes per pixel, R G B A (blended onto white like transformers' NumPy path).
    Rgba8,
}

impl RawFormat {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            RawFormat::L8 => 1,
            RawFormat::Rgb8 => 3,
            RawFormat::Rgba8 => 4,
        }
    }
}

/// One image to preprocess.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// An image file; the format is sniffed from its content, not its extension.
    Path(&'a Path),
    /// An encoded image (JPEG, PNG, WebP, GIF — first frame —, BMP or TIFF); format sniffed from the content.
    Bytes(&'a [u8]),
    /// An already decoded image.
    Dynamic(&'a DynamicImage),
    /// A raw pixel buffer of `width · height · format.channels()` bytes.
    Raw {
        /// The pixels.
        data: &'a [u8],
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Pixel layout.
        format: RawFormat,
    },
}

impl<'a> From<&'a Path> for ImageInput<'a> {
    fn from(p: &'a Path) -> Self {
        ImageInput::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for ImageInput<'a> {
    fn from(p: &'a PathBuf) -> Self {
        ImageInput::Path(p.as_path())
    }
}

impl<'a> From<&'a [u8]> for ImageInput<'a> {
    fn from(b: &'a [u8]) -> Self {
        ImageInput::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for ImageInput<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        ImageInput::Bytes(b.as_slice())
    }
}

impl<'a> From<&'a DynamicImage> for ImageInput<'a> {
    fn from(d: &'a DynamicImage) -> Self {
        ImageInput::Dynamic(d)
    }
}

impl ImageInput<'_> {
    /// How errors name this input: its path, or `<bytes #i>` / `<image #i>` / `<raw #i>` for batch index `i`.
    pub fn describe(&self, index: usize) -> String {
        match self {
            ImageInput::Path(p) => p.display().to_string(),
            ImageInput::Bytes(_) => format!("<bytes #{index}>"),
            ImageInput::Dynamic(_) => format!("<image #{index}>"),
            ImageInput::Raw { .. } => format!("<raw #{index}>"),
        }
    }
}

/// Decoder limits: a file whose header claims more is rejected before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum width in pixels (default 16384).
    pub max_width: u32,
    /// Maximum height in pixels (default 16384).
    pub max_height: u32,
    /// Maximum bytes the decoder may allocate (default 1 GiB).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_width: 1 << 14,
            max_height: 1 << 14,
            max_alloc: 1 << 30,
        }
    }
}

impl DecodeLimits {
    fn to_image_limits(self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_image_width = Some(self.max_width);
        l.max_image_height = Some(self.max_height);
        l.max_alloc = Some(self.max_alloc);
        l
    }
}

/// Options for turning an [`ImageInput`] into RGB pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Rotate / flip according to the EXIF orientation tag (off by default, as in `CLIPImageProcessorPil`).
    pub apply_exif_orientation: bool,
    /// Decoder limits.
    pub limits: DecodeLimits,
}

fn decode_err(input: &str, source: image::ImageError) -> Error {
    Error::ImageDecode {
        input: input.to_string(),
        source,
    }
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidImage {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Decodes an encoded image (format sniffed from the bytes) under `options.limits`. `name` labels errors.
pub fn decode_image(bytes: &[u8], name: &str, options: &LoadOptions) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(invalid(name, "empty (0 bytes)"));
    }
    if let Some(decoded) = super::jpeg::decode_if_jpeg(bytes, name, options) {
        return decoded;
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(name, image::ImageError::IoError(e)))?;
    let mut reader = reader;
    let mut limits = options.limits.to_image_limits();
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| decode_err(name, e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(invalid(name, format!("image is {w}x{h}")));
    }
    limits.reserve(decoder.total_bytes()).map_err(|e| decode_err(name, e))?;
    let orientation = if options.apply_exif_orientation {
        decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms)
    } else {
        image::metadata::Orientation::NoTransforms
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_err(name, e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Pillow's `Image.alpha_composite(white, rgba)` followed by `convert("RGB")`, for one channel value.
///
/// `AlphaComposite.c` with an opaque white destination: `coef1 = a·255·255·128 / (a·255 + 255·(255 − a))`,
/// `coef2 = 255·128 − coef1`, `out = SHIFTFORDIV255(c·coef1 + 255·coef2 + (0x80 << 7)) >> 7`; `a = 0` gives white.
#[inline(always)]
fn composite_white(c: u8, a: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    if a == 0 {
        return 255;
    }
    let (c, a) = (u32::from(c), u32::from(a));
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = c * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

fn rgb_image(width: u32, height: u32, data: Vec<u8>, name: &str) -> Result<RgbImage> {
    RgbImage::from_raw(width, height, data).ok_or_else(|| invalid(name, "internal: RGB buffer size mismatch"))
}

/// Converts a decoded image to 8-bit RGB the way `CLIPImageProcessorPil` does for the corresponding PIL image
/// (see the module docs): alpha composited onto white, grey replicated, 16-bit RGB(A) reduced to the high byte,
/// 16-bit grey clipped at 255.
///
/// Float images (HDR/EXR/float TIFF, which Pillow cannot open the same way) go through the `image` crate's own
/// conversion and are then composited.
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    match img {
        DynamicImage::ImageRgb8(b) => return b.clone(),
        DynamicImage::ImageLuma8(b) => {
            for &v in b.as_raw() {
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA8(b) => {
            for p in b.as_raw().chunks_exact(2) {
                let v = composite_white(p[0], p[1]);
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageRgba8(b) => {
            for p in b.as_raw().chunks_exact(4) {
                out.extend_from_slice(&[
                    composite_white(p[0], p[3]),
                    composite_white(p[1], p[3]),
                    composite_white(p[2], p[3]),
                ]);
            }
        }
        DynamicImage::ImageLuma16(b) => {
            // Pillow opens 16-bit grey PNGs as I;16; I;16 -> RGB clips to 255.
            for &v in b.as_raw() {
                let v = v.min(255) as u8;
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA16(b) => {
            // Pillow opens 16-bit grey+alpha PNGs as RGBA keeping the high bytes.
            for p in b.as_raw().chunks_exact(2) {
                let v = composite_white((p[0] >> 8) as u8, (p[1] >> 8) as u8);
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageRgb16(b) => {
            out.extend(b.as_raw().iter().map(|&v| (v >> 8) as u8));
        }
        DynamicImage::ImageRgba16(b) => {
            for p in b.as_raw().chunks_exact(4) {
                let a = (p[3] >> 8) as u8;
                out.extend_from_slice(&[
                    composite_white((p[0] >> 8) as u8, a),
                    composite_white((p[1] >> 8) as u8, a),
                    composite_white((p[2] >> 8) as u8, a),
                ]);
            }
        }
        other => {
            if other.color().has_alpha() {
                let rgba = other.to_rgba8();
                for p in rgba.as_raw().chunks_exact(4) {
                    out.extend_from_slice(&[
                        composite_white(p[0], p[3]),
                        composite_white(p[1], p[3]),
                        composite_white(p[2], p[3]),
                    ]);
                }
            } else {
                return other.to_rgb8();
            }
        }
    }
    // Sizes match by construction; fall back to the image crate's conversion rather than fail.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| img.to_rgb8())
}

/// RGB without conversion (`do_convert_rgb = false`): only 3-channel images are accepted, as transformers'
/// 3-channel mean/std would reject the others.
fn require_rgb(img: &DynamicImage, name: &str) -> Result<RgbImage> {
    match img {
        DynamicImage::ImageRgb8(b) => Ok(b.clone()),
        DynamicImage::ImageRgb16(b) => rgb_image(
            b.width(),
            b.height(),
            b.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
            name,
        ),
        other => Err(invalid(
            name,
            format!(
                "do_convert_rgb is false but the image is {:?} ({} channels); only RGB images can be used as-is",
                other.color(),
                other.color().channel_count()
            ),
        )),
    }
}

fn raw_to_rgb(data: &[u8], width: u32, height: u32, format: RawFormat, convert: bool, name: &str) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(invalid(name, format!("image is {width}x{height}")));
    }
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(format.channels()))
        .ok_or_else(|| invalid(name, format!("{width}x{height} overflows")))?;
    if data.len() != expected {
        return Err(invalid(
            name,
            format!(
                "buffer holds {} bytes but {width}x{height} {format:?} needs {expected}",
                data.len()
            ),
        ));
    }
    let out = match format {
        RawFormat::Rgb8 => data.to_vec(),
        _ if !convert => {
            return Err(invalid(
                name,
                format!("do_convert_rgb is false but the buffer is {format:?}"),
            ))
        }
        RawFormat::L8 => data.iter().flat_map(|&v| [v, v, v]).collect(),
        RawFormat::Rgba8 => {
            // transformers' NumPy convert_to_rgb: alpha = a / 255 (float64);
            // round(alpha * c + (1 - alpha) * 255), round half to even.
            let mut out = Vec::with_capacity(data.len() / 4 * 3);
            for p in data.chunks_exact(4) {
                let alpha = f64::from(p[3]) / 255.0;
                for &c in &p[..3] {
                    let v = alpha * f64::from(c) + (1.0 - alpha) * 255.0;
                    out.push(v.round_ties_even().clamp(0.0, 255.0) as u8);
                }
            }
            out
        }
    };
    rgb_image(width, height, out, name)
}

fn load_rgb(input: &ImageInput<'_>, name: &str, options: &LoadOptions, convert: bool) -> Result<RgbImage> {
    let to_rgb = |img: &DynamicImage| {
        if convert {
            Ok(convert_to_rgb(img))
        } else {
            require_rgb(img, name)
        }
    };
    let img = match input {
        ImageInput::Raw {
            data,
            width,
            height,
            format,
        } => return raw_to_rgb(data, *width, *height, *format, convert, name),
        ImageInput::Dynamic(img) => {
            if img.width() == 0 || img.height() == 0 {
                return Err(invalid(name, format!("image is {}x{}", img.width(), img.height())));
            }
            return to_rgb(img);
        }
        ImageInput::Bytes(bytes) => decode_image(bytes, name, options)?,
        ImageInput::Path(path) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(*path, e))?;
            decode_image(&bytes, name, options)?
        }
    };
    to_rgb(&img)
}

/// Loads one input as 8-bit RGB, converted exactly as `CLIPImageProcessorPil` converts the corresponding PIL
/// image (`do_convert_rgb = true`). Errors name the input as [`ImageInput::describe`]`(0)` does.
pub fn load_image(input: &ImageInput<'_>, options: &LoadOptions) -> Result<RgbImage> {
    load_rgb(input, &input.describe(0), options, true)
}

// ---------------------------------------------------------------------------------------------------------------
// geometry

/// transformers' `center_crop` on an RGB image: crops `height × width` around the center
/// (`top = (h − crop_h) // 2`, floor division) and, where the image is smaller than the crop, pads with zeros,
/// placing the image at `ceil((crop − size) / 2)`.
pub fn center_crop(img: &RgbImage, height: u32, width: u32) -> RgbImage {
    let (ih, iw) = (img.height() as usize, img.width() as usize);
    let (ch, cw) = (height as usize, width as usize);
    // Per axis: (source offset, destination offset, length).
    let axis = |size: usize, crop: usize| {
        if size >= crop {
            ((size - crop) / 2, 0, crop)
        } else {
            (0, (crop - size).div_ceil(2), size)
        }
    };
    let (sy, dy, ly) = axis(ih, ch);
    let (sx, dx, lx) = axis(iw, cw);
    let src = img.as_raw();
    let mut out = vec![0u8; ch * cw * 3];
    for r in 0..ly {
        let s = ((sy + r) * iw + sx) * 3;
        let d = ((dy + r) * cw + dx) * 3;
        out[d..d + lx * 3].copy_from_slice(&src[s..s + lx * 3]);
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

// ---------------------------------------------------------------------------------------------------------------
// processor

/// CLIP image preprocessing (transformers' `CLIPImageProcessorPil`).
///
/// ```no_run
/// use altclip::processor::image::{ImageInput, ImageProcessor};
/// use candle_core::{DType, Device};
/// use std::path::Path;
///
/// # fn main() -> altclip::Result<()> {
/// let processor = ImageProcessor::from_file("AltCLIP/preprocessor_config.json")?;
/// let a = std::fs::read("cat.jpg").map_err(|e| altclip::Error::Io { path: "cat.jpg".into(), source: e })?;
/// let inputs = [ImageInput::Bytes(&a), ImageInput::Path(Path::new("dog.png"))];
/// let pixel_values = processor.preprocess(&inputs, &Device::Cpu, DType::F32)?; // (2, 3, 224, 224)
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageProcessor {
    /// The resolved preprocessing configuration.
    pub config: ImageProcessorConfig,
    /// Decoding options (EXIF orientation, decoder limits).
    pub options: LoadOptions,
}

impl ImageProcessor {
    /// A processor for `config`, with default [`LoadOptions`].
    pub fn new(config: ImageProcessorConfig) -> Self {
        ImageProcessor {
            config,
            options: LoadOptions::default(),
        }
    }

    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ImageProcessorConfig::from_file(path)?))
    }

    /// Parses `preprocessor_config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Ok(Self::new(ImageProcessorConfig::from_json_str(text)?))
    }

    /// Replaces the load options.
    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// Turns EXIF orientation handling on or off.
    pub fn with_exif_orientation(mut self, apply: bool) -> Self {
        self.options.apply_exif_orientation = apply;
        self
    }

    /// Replaces the decoder limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.options.limits = limits;
        self
    }

    /// Rejects a resize or crop output over the decoder limits (`size` / `crop_size` come from a config file, and
    /// an extreme aspect ratio can blow up a shortest-edge resize): an error instead of a huge allocation.
    fn check_output_size(&self, name: &str, step: &str, width: u32, height: u32) -> Result<()> {
        let l = self.options.limits;
        let bytes = u64::from(width) * u64::from(height) * 3;
        if width > l.max_width || height > l.max_height || bytes > l.max_alloc {
            return Err(invalid(
                name,
                format!(
                    "{step} to {width}x{height} (WxH) exceeds the decoder limits ({}x{}, {} bytes)",
                    l.max_width, l.max_height, l.max_alloc
                ),
            ));
        }
        Ok(())
    }

    /// Resize + center crop of an already converted RGB image (steps 2–3 of the pipeline).
    pub fn resize_and_crop(&self, rgb: RgbImage, name: &str) -> Result<RgbImage> {
        let c = &self.config;
        let mut img = rgb;
        if c.do_resize {
            let (nh, nw) = c.size.output_size(img.height(), img.width());
            if nh == 0 || nw == 0 {
                return Err(invalid(
                    name,
                    format!(
                        "{}x{} (WxH) resizes to {nw}x{nh} under {:?}",
                        img.width(),
                        img.height(),
                        c.size
                    ),
                ));
            }
            self.check_output_size(name, "resize", nw, nh)?;
            if (nw, nh) != (img.width(), img.height()) {
                let data = resize_rgb8(
                    img.as_raw(),
                    img.width() as usize,
                    img.height() as usize,
                    nw as usize,
                    nh as usize,
                    c.resample,
                )
                .map_err(|e| match e {
                    Error::InvalidImage { reason, .. } => invalid(name, reason),
                    other => other,
                })?;
                img = rgb_image(nw, nh, data, name)?;
            }
        }
        if c.do_center_crop {
            self.check_output_size(name, "center crop", c.crop_size.width, c.crop_size.height)?;
            img = center_crop(&img, c.crop_size.height, c.crop_size.width);
        }
        Ok(img)
    }

    fn preprocess_u8_at(&self, input: &ImageInput<'_>, index: usize) -> Result<RgbImage> {
        let name = input.describe(index);
        let rgb = load_rgb(input, &name, &self.options, self.config.do_convert_rgb)?;
        self.resize_and_crop(rgb, &name)
    }

    /// Decode, convert, resize and center-crop one image: the uint8 image right before rescale / normalize
    /// (bit-identical to the PIL backend for lossless formats).
    pub fn preprocess_u8(&self, input: &ImageInput<'_>) -> Result<RgbImage> {
        self.preprocess_u8_at(input, 0)
    }

    /// [`Self::preprocess_u8`] for a batch, decoding and resizing in parallel (rayon). Errors name the failing
    /// input by path or batch index.
    pub fn preprocess_u8_batch(&self, inputs: &[ImageInput<'_>]) -> Result<Vec<RgbImage>> {
        inputs
            .par_iter()
            .enumerate()
            .map(|(i, input)| self.preprocess_u8_at(input, i))
            .collect()
    }

    /// Rescales and normalizes a uint8 RGB image into CHW `f32` pixel values (bit-identical to transformers).
    pub fn pixel_values(&self, img: &RgbImage) -> Vec<f32> {
        let table = self.config.pixel_value_table();
        let plane = img.width() as usize * img.height() as usize;
        let mut out = vec![0f32; plane * 3];
        write_chw(img, &table, &mut out);
        out
    }

    /// Preprocesses a batch into a `(N, 3, H, W)` tensor of `pixel_values` on `device` with `dtype` (a float
    /// dtype; values are computed in f32 and then cast). All outputs must share one size (always the case with
    /// center cropping on).
    pub fn preprocess(&self, inputs: &[ImageInput<'_>], device: &Device, dtype: DType) -> Result<Tensor> {
        if !dtype.is_float() {
            return Err(Error::bad_input(
                "dtype",
                format!("pixel_values need a float dtype, got {dtype:?}"),
            ));
        }
        if inputs.is_empty() {
            return Err(Error::bad_input("images", "no images to preprocess"));
        }
        let images = self.preprocess_u8_batch(inputs)?;
        let (h, w) = (images[0].height(), images[0].width());
        if let Some((i, im)) = images
            .iter()
            .enumerate()
            .find(|(_, im)| (im.height(), im.width()) != (h, w))
        {
            return Err(Error::bad_input(
                "images",
                format!(
                    "cannot batch images of different sizes: #0 is {w}x{h}, #{i} is {}x{} (enable center cropping \
                     or use a fixed height/width size)",
                    im.width(),
                    im.height()
                ),
            ));
        }
        let table = self.config.pixel_value_table();
        let per = 3 * h as usize * w as usize;
        let mut data = vec![0f32; per * images.len()];
        data.par_chunks_mut(per.max(1))
            .zip(images.par_iter())
            .for_each(|(out, img)| write_chw(img, &table, out));
        let t = Tensor::from_vec(data, (images.len(), 3, h as usize, w as usize), &Device::Cpu)?;
        let t = if dtype == DType::F32 { t } else { t.to_dtype(dtype)? };
        Ok(t.to_device(device)?)
    }
}

fn write_chw(img: &RgbImage, table: &[[f32; 256]; 3], out: &mut [f32]) {
    let plane = img.width() as usize * img.height() as usize;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = table[0][p[0] as usize];
        g[i] = table[1][p[1] as usize];
        b[i] = table[2][p[2] as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes() {
        let s = SizeSpec::ShortestEdge(224);
        assert_eq!(s.output_size(480, 640), (224, 298));
        assert_eq!(s.output_size(640, 480), (298, 224));
        assert_eq!(s.output_size(224, 224), (224, 224));
        assert_eq!(s.output_size(30, 40), (224, 298));
    }

    #[test]
    fn aspect_ratio_sizes() {
        let s = SizeSpec::ShortestLongest {
            shortest_edge: 800,
            longest_edge: 1333,
        };
        assert_eq!(s.output_size(480, 640), (800, 1066));
        assert_eq!(s.output_size(100, 1000), (133, 1333));
    }

    #[test]
    fn composite_extremes() {
        for c in 0..=255u8 {
            assert_eq!(composite_white(c, 255), c);
            assert_eq!(composite_white(c, 0), 255);
        }
    }

    #[test]
    fn crop_pads_small_images() {
        let img = RgbImage::from_raw(1, 1, vec![9, 9, 9]).unwrap();
        let out = center_crop(&img, 2, 3);
        // 1 -> 2 rows: top pad ceil(1/2) = 1; 1 -> 3 cols: left pad 1.
        let mut expected = vec![0u8; 18];
        expected[(3 + 1) * 3..(3 + 1) * 3 + 3].copy_from_slice(&[9, 9, 9]);
        assert_eq!(out.as_raw(), &expected);
    }
}
