//! `preprocessor_config.json`: the serde `RawConfig` (every field optional, values as JSON) resolved into
//! [`ImageProcessorConfig`] the way `CLIPImageProcessorPil.__init__` resolves it, and the output-size arithmetic
//! of `size` (transformers' `get_resize_output_image_size` / `get_size_with_aspect_ratio`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::processor::resize::Filter;

/// transformers' `OPENAI_CLIP_MEAN`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// transformers' `OPENAI_CLIP_STD`.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

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
        Value::Object(map) => parse_size_dict(map, v),
        _ => Err(Error::config(
            FIELD,
            format!("expected an int, a list or a dict, got {v}"),
        )),
    }
}

/// A `size` dict: which keys it has decides the [`SizeSpec`].
fn parse_size_dict(map: &serde_json::Map<String, Value>, v: &Value) -> Result<SizeSpec> {
    const FIELD: &str = "size";
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

/// `parse(value)`, or `default` when the value is absent or `null`.
fn parse_or<T>(value: Option<&Value>, default: T, parse: impl FnOnce(&Value) -> Result<T>) -> Result<T> {
    match value.filter(|v| !v.is_null()) {
        Some(v) => parse(v),
        None => Ok(default),
    }
}

/// `size`, read as `CLIPImageProcessorPil.__init__` reads it (with `default_to_square` and `use_square_size`).
fn resolve_size(raw: &RawConfig, default: SizeSpec) -> Result<SizeSpec> {
    let size = parse_or(raw.size.as_ref(), default, |v| {
        parse_size(v, raw.default_to_square.unwrap_or(false))
    })?;
    if raw.use_square_size == Some(true) {
        // Kosmos-2 compatibility in CLIPImageProcessorPil.__init__: square of the *class default* edge.
        return Ok(SizeSpec::HeightWidth {
            height: 224,
            width: 224,
        });
    }
    Ok(size)
}

fn parse_resample(v: &Value) -> Result<Filter> {
    let code = v
        .as_i64()
        .ok_or_else(|| Error::config("resample", format!("expected a PIL resampling code, got {v}")))?;
    Filter::from_pil_code(code).ok_or_else(|| {
        Error::config(
            "resample",
            format!(
                "unsupported PIL resampling code {code}; supported: 0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, \
                 4 BOX, 5 HAMMING"
            ),
        )
    })
}

fn check_std(image_std: [f64; 3]) -> Result<[f64; 3]> {
    if image_std.iter().any(|&s| s as f32 == 0.0) {
        return Err(Error::config("image_std", format!("{image_std:?} contains a zero")));
    }
    Ok(image_std)
}

fn check_rescale_factor(rescale_factor: f64) -> Result<f64> {
    if !rescale_factor.is_finite() {
        return Err(Error::config(
            "rescale_factor",
            format!("{rescale_factor} is not finite"),
        ));
    }
    Ok(rescale_factor)
}

impl TryFrom<RawConfig> for ImageProcessorConfig {
    type Error = Error;

    fn try_from(raw: RawConfig) -> Result<Self> {
        let d = ImageProcessorConfig::default();
        let size = resolve_size(&raw, d.size)?;
        let resample = parse_or(raw.resample.as_ref(), d.resample, parse_resample)?;
        let crop_size = parse_or(raw.crop_size.as_ref(), d.crop_size, parse_crop)?;
        let image_mean = parse_or(raw.image_mean.as_ref(), d.image_mean, |v| parse_triple("image_mean", v))?;
        let image_std = parse_or(raw.image_std.as_ref(), d.image_std, |v| parse_triple("image_std", v))?;
        Ok(ImageProcessorConfig {
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            size,
            resample,
            do_center_crop: raw.do_center_crop.unwrap_or(d.do_center_crop),
            crop_size,
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor: check_rescale_factor(raw.rescale_factor.unwrap_or(d.rescale_factor))?,
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            image_mean,
            image_std: check_std(image_std)?,
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
}
