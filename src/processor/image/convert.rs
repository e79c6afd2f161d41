//! Conversion to 8-bit RGB exactly as transformers' `convert_to_rgb` + Pillow's mode conversions do it (see the
//! [module docs](super) for the table), and transformers' NumPy path for raw buffers.

use image::{DynamicImage, ImageBuffer, Luma, LumaA, Pixel, Rgb, RgbImage, Rgba};

use super::decode::RawFormat;
use crate::error::{Error, Result};
use crate::processor::resize::check_buffer_len;

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

/// An `RgbImage` from a buffer whose length the caller has already checked against `width × height × 3`.
pub(super) fn rgb_image(width: u32, height: u32, data: Vec<u8>, name: &str) -> Result<RgbImage> {
    RgbImage::from_raw(width, height, data)
        .ok_or_else(|| Error::invalid_image(name, "internal: RGB buffer size mismatch"))
}

/// Maps every pixel of `src` to an RGB pixel. The output has `src`'s dimensions by construction, so unlike
/// building from a raw buffer nothing can mismatch.
fn map_pixels<P: Pixel>(src: &ImageBuffer<P, Vec<P::Subpixel>>, f: impl Fn(&P) -> [u8; 3]) -> RgbImage {
    let mut out = RgbImage::new(src.width(), src.height());
    for (o, p) in out.pixels_mut().zip(src.pixels()) {
        *o = Rgb(f(p));
    }
    out
}

/// Pillow keeps the high byte when it opens a 16-bit RGB(A) or grey + alpha PNG.
fn high(v: u16) -> u8 {
    (v >> 8) as u8
}

fn grey(v: u8) -> [u8; 3] {
    [v, v, v]
}

fn composite_rgba([r, g, b, a]: [u8; 4]) -> [u8; 3] {
    [composite_white(r, a), composite_white(g, a), composite_white(b, a)]
}

/// Converts a decoded image to 8-bit RGB the way `CLIPImageProcessorPil` does for the corresponding PIL image
/// (see the module docs): alpha composited onto white, grey replicated, 16-bit RGB(A) reduced to the high byte,
/// 16-bit grey clipped at 255.
///
/// Float images (HDR/EXR/float TIFF, which Pillow cannot open the same way) go through the `image` crate's own
/// conversion and are then composited.
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(b) => b.clone(),
        DynamicImage::ImageLuma8(b) => map_pixels(b, |&Luma([v])| grey(v)),
        DynamicImage::ImageLumaA8(b) => map_pixels(b, |&LumaA([v, a])| grey(composite_white(v, a))),
        DynamicImage::ImageRgba8(b) => map_pixels(b, |&Rgba(p)| composite_rgba(p)),
        // Pillow opens 16-bit grey PNGs as I;16; I;16 -> RGB clips to 255.
        DynamicImage::ImageLuma16(b) => map_pixels(b, |&Luma([v])| grey(v.min(255) as u8)),
        // Pillow opens 16-bit grey+alpha PNGs as RGBA keeping the high bytes.
        DynamicImage::ImageLumaA16(b) => map_pixels(b, |&LumaA([v, a])| grey(composite_white(high(v), high(a)))),
        DynamicImage::ImageRgb16(b) => map_pixels(b, |&Rgb(p)| p.map(high)),
        DynamicImage::ImageRgba16(b) => map_pixels(b, |&Rgba(p)| composite_rgba(p.map(high))),
        other if other.color().has_alpha() => map_pixels(&other.to_rgba8(), |&Rgba(p)| composite_rgba(p)),
        other => other.to_rgb8(),
    }
}

/// RGB without conversion (`do_convert_rgb = false`): only 3-channel images are accepted, as transformers'
/// 3-channel mean/std would reject the others.
pub(super) fn require_rgb(img: &DynamicImage, name: &str) -> Result<RgbImage> {
    match img {
        DynamicImage::ImageRgb8(b) => Ok(b.clone()),
        DynamicImage::ImageRgb16(b) => Ok(map_pixels(b, |&Rgb(p)| p.map(high))),
        other => Err(Error::invalid_image(
            name,
            format!(
                "do_convert_rgb is false but the image is {:?} ({} channels); only RGB images can be used as-is",
                other.color(),
                other.color().channel_count()
            ),
        )),
    }
}

pub(super) fn raw_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    format: RawFormat,
    convert: bool,
    name: &str,
) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::invalid_image(name, format!("image is {width}x{height}")));
    }
    check_buffer_len(data.len(), width as usize, height as usize, format.channels())
        .map_err(|r| Error::invalid_image(name, format!("{format:?}: {r}")))?;
    let out = match format {
        RawFormat::Rgb8 => data.to_vec(),
        _ if !convert => {
            return Err(Error::invalid_image(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_extremes() {
        for c in 0..=255u8 {
            assert_eq!(composite_white(c, 255), c);
            assert_eq!(composite_white(c, 0), 255);
        }
    }
}
