//! CLIP image preprocessing, matching transformers' `CLIPImageProcessorPil` (the PIL backend) bit for bit.
//! `config` parses `preprocessor_config.json`, `decode` turns an [`ImageInput`] into a decoded image, `convert`
//! makes it RGB; this file crops and runs the steps ([`ImageProcessor`]). Callers (the pipeline, users who only
//! need pixels) use the items re-exported here; `super::resize` does the resampling.
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
//! [`DecodeOptions::apply_exif_orientation`] applies it (as `transformers.image_utils.load_image` does).
//!
//! # Exactness
//!
//! For losslessly stored images (PNG, BMP, GIF, TIFF, lossless WebP) and for JPEG (decoded by libjpeg-turbo as
//! Pillow decodes it, `jpeg`, default feature `libjpeg-turbo`) the uint8 image after resize and crop is
//! bit-identical to `CLIPImageProcessorPil`, and `pixel_values` are bit-identical too (same f64 rescale, f32
//! normalization). Lossy WebP (image-webp) and JPEG under `pure-rust-jpeg` (zune-jpeg) go through pure-Rust
//! decoders whose IDCT / upsampling can differ from libwebp / libjpeg-turbo by a few levels; see the crate's
//! image-processor tests for the measured bounds.

mod config;
mod convert;
mod decode;
mod jpeg;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

use super::resize::resize_rgb8;
use crate::error::{Error, Result};
use convert::{raw_to_rgb, require_rgb, rgb_image};

pub use config::{CropSize, ImageProcessorConfig, SizeSpec, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
pub use convert::convert_to_rgb;
pub use decode::{decode_image, DecodeLimits, DecodeOptions, ImageInput, RawFormat};

fn load_rgb(input: &ImageInput<'_>, name: &str, options: &DecodeOptions, convert: bool) -> Result<RgbImage> {
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
                return Err(Error::invalid_image(
                    name,
                    format!("image is {}x{}", img.width(), img.height()),
                ));
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
pub fn load_image(input: &ImageInput<'_>, options: &DecodeOptions) -> Result<RgbImage> {
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
    // Zeros where the image does not reach; the buffer has the crop's size by construction.
    let mut out = RgbImage::new(width, height);
    let dst: &mut [u8] = &mut out;
    for r in 0..ly {
        let s = ((sy + r) * iw + sx) * 3;
        let d = ((dy + r) * cw + dx) * 3;
        dst[d..d + lx * 3].copy_from_slice(&src[s..s + lx * 3]);
    }
    out
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
    pub options: DecodeOptions,
}

impl ImageProcessor {
    /// A processor for `config`, with default [`DecodeOptions`].
    pub fn new(config: ImageProcessorConfig) -> Self {
        ImageProcessor {
            config,
            options: DecodeOptions::default(),
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
    pub fn with_options(mut self, options: DecodeOptions) -> Self {
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
            return Err(Error::invalid_image(
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
                return Err(Error::invalid_image(
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
                .map_err(|e| e.naming(name))?;
                img = rgb_image(nw, nh, data, name)?;
            }
        }
        if c.do_center_crop {
            self.check_output_size(name, "center crop", c.crop_size.width, c.crop_size.height)?;
            img = center_crop(&img, c.crop_size.height, c.crop_size.width);
        }
        Ok(img)
    }

    /// [`Self::preprocess_u8`], naming the input as [`ImageInput::describe`]`(index)` does in errors.
    pub(crate) fn preprocess_u8_at(&self, input: &ImageInput<'_>, index: usize) -> Result<RgbImage> {
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
        self.pixel_tensor(&images, device, dtype)
    }

    /// `(N, 3, H, W)` `pixel_values` of already preprocessed images (see [`ImageProcessor::pixel_values`]) on
    /// `device` with `dtype`; all must share one size, and there must be at least one.
    pub fn pixel_tensor(&self, images: &[RgbImage], device: &Device, dtype: DType) -> Result<Tensor> {
        let Some(first) = images.first() else {
            return Err(Error::bad_input("images", "no images to preprocess"));
        };
        let (h, w) = (first.height(), first.width());
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
    fn crop_pads_small_images() {
        let img = RgbImage::from_raw(1, 1, vec![9, 9, 9]).unwrap();
        let out = center_crop(&img, 2, 3);
        // 1 -> 2 rows: top pad ceil(1/2) = 1; 1 -> 3 cols: left pad 1.
        let mut expected = vec![0u8; 18];
        expected[(3 + 1) * 3..(3 + 1) * 3 + 3].copy_from_slice(&[9, 9, 9]);
        assert_eq!(out.as_raw(), &expected);
    }
}
