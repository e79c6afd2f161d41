//! Pillow-exact resampling of 8-bit images.
//!
//! A port of Pillow's `libImaging/Resample.c` (the convolution filters) and of the scaling branch of
//! `libImaging/Geometry.c` (`NEAREST`), producing output that is bit-identical to `PIL.Image.resize` for 8-bit
//! images with 1 to 4 independent channels (modes `L`, `RGB`, `RGBX`, `CMYK`, … — *not* `RGBA`/`LA`, which Pillow
//! premultiplies first).
//!
//! The algorithm, as in Pillow:
//!
//! * per axis, `precompute_coeffs` builds one kernel per output pixel: the filter's support is widened by the
//!   downscale factor (`support · max(scale, 1)`), the window is `[center − support + ½, center + support + ½)`
//!   truncated and clamped to the image, and the weights are normalised to sum to one;
//! * the weights are converted to fixed point with `PRECISION_BITS = 32 − 8 − 2 = 22` bits (rounded away from zero);
//! * two passes through an 8-bit intermediate image. Usually the horizontal pass runs first, on only the source rows
//!   the vertical pass needs (`ybox_first..ybox_last`), then the vertical pass. Pillow 13 runs the vertical pass
//!   first when the image loses more than twice as many rows as columns (`h − h' > 2 · (w − w')` with `h' < h`);
//!   this rule was measured against Pillow 13.0 (its C source was not available here), and matters because the two
//!   orders round the intermediate differently. Each pass starts its accumulator at
//!   `1 << (PRECISION_BITS − 1)` (rounding) and clips with `clamp(acc >> PRECISION_BITS, 0, 255)`;
//! * an axis whose size does not change is not resampled at all; an unchanged image is copied.
//!
//! Integer sums are exact, so the order in which this module accumulates them (chosen for vectorisation) does not
//! change any result.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Fixed-point precision of the 8-bit resampling coefficients (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Below this many output bytes a pass runs on the calling thread (batches are already parallel per image).
const PAR_MIN_BYTES: usize = 1 << 16;

/// A resampling filter, as in `PIL.Image.Resampling`.
///
/// The numeric codes (see [`Filter::from_pil_code`]) are the ones stored in `preprocessor_config.json`'s `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `NEAREST` (0): nearest neighbour, Pillow's affine-scale sampling (`floor((x + ½) · in / out)`).
    Nearest,
    /// `LANCZOS` (1): truncated sinc with 3 lobes.
    Lanczos,
    /// `BILINEAR` (2): triangle filter, support 1.
    Bilinear,
    /// `BICUBIC` (3): cubic convolution with `a = −0.5`, support 2 (CLIP's default).
    Bicubic,
    /// `BOX` (4): box filter, support ½.
    Box,
    /// `HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
}

impl Filter {
    /// The filter for a `PIL.Image.Resampling` code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box,
    /// 5 hamming. Other codes (Pillow 13's `MKS2013` = 6 and `MKS2021` = 7 included) give `None`.
    pub fn from_pil_code(code: i64) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    /// The `PIL.Image.Resampling` code of this filter.
    pub fn pil_code(self) -> u8 {
        match self {
            Filter::Nearest => 0,
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    /// Pillow's name for the filter (`"BICUBIC"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Filter::Nearest => "NEAREST",
            Filter::Lanczos => "LANCZOS",
            Filter::Bilinear => "BILINEAR",
            Filter::Bicubic => "BICUBIC",
            Filter::Box => "BOX",
            Filter::Hamming => "HAMMING",
        }
    }

    /// Filter support (half-width) at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The filter kernel, literally as in Resample.c (same operation order, same constants).
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes `0.54f + 0.46f * cos(x)`: single-precision literals promoted to double.
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.pil_code())
    }
}

/// Fixed-point kernels for one axis: for output pixel `i`, the source window starts at `bounds[i].0`, has
/// `bounds[i].1` taps, and its weights are `kk[i * ksize ..][.. bounds[i].1]`.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn precompute_coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    // Pillow passes the box as C floats; for sizes below 2^24 the conversion is exact.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut weights = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // `(int)` truncates toward zero, as does `as`.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0f64;
        for (x, w) in weights.iter_mut().take(n).enumerate() {
            let v = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *w = v;
            ww += v;
        }
        let k = &mut kk[xx * ksize..(xx + 1) * ksize];
        for (dst, w) in k.iter_mut().zip(weights.iter().take(n)) {
            let w = if ww != 0.0 { w / ww } else { *w };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *dst = if w < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin as usize, n));
    }
    Coeffs { ksize, bounds, kk }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One horizontal-pass output row (`C` channels).
#[inline(always)]
fn horizontal_row<const C: usize>(src_row: &[u8], out_row: &mut [u8], c: &Coeffs) {
    for (xx, out_px) in out_row.chunks_exact_mut(C).enumerate() {
        let (xmin, n) = c.bounds[xx];
        let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
        let px = &src_row[xmin * C..(xmin + n) * C];
        let mut acc = [1i32 << (PRECISION_BITS - 1); C];
        for (p, &w) in px.chunks_exact(C).zip(k) {
            for ch in 0..C {
                acc[ch] += i32::from(p[ch]) * w;
            }
        }
        for ch in 0..C {
            out_px[ch] = clip8(acc[ch]);
        }
    }
}

fn horizontal_pass<const C: usize>(src: &[u8], width: usize, rows: std::ops::Range<usize>, c: &Coeffs) -> Vec<u8> {
    let out_w = c.bounds.len();
    let mut out = vec![0u8; rows.len() * out_w * C];
    let src_stride = width * C;
    let out_stride = out_w * C;
    if out_stride == 0 {
        return out;
    }
    let first = rows.start;
    let run = |(i, out_row): (usize, &mut [u8])| {
        let y = first + i;
        horizontal_row::<C>(&src[y * src_stride..(y + 1) * src_stride], out_row, c);
    };
    if out.len() >= PAR_MIN_BYTES {
        out.par_chunks_mut(out_stride).enumerate().for_each(run);
    } else {
        out.chunks_mut(out_stride).enumerate().for_each(run);
    }
    out
}

/// Vertical pass over `src` (`row_len` bytes per row); `row_offset` is subtracted from the kernel bounds.
fn vertical_pass(src: &[u8], row_len: usize, row_offset: usize, c: &Coeffs) -> Vec<u8> {
    let out_h = c.bounds.len();
    let mut out = vec![0u8; out_h * row_len];
    if row_len == 0 {
        return out;
    }
    let run = |(yy, out_row): (usize, &mut [u8])| {
        let (ymin, n) = c.bounds[yy];
        let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
        let mut acc = vec![1i32 << (PRECISION_BITS - 1); row_len];
        for (dy, &w) in k.iter().enumerate() {
            let y = ymin - row_offset + dy;
            let row = &src[y * row_len..(y + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    };
    if out.len() >= PAR_MIN_BYTES {
        out.par_chunks_mut(row_len).enumerate().for_each(run);
    } else {
        out.chunks_mut(row_len).enumerate().for_each(run);
    }
    out
}

/// Pillow's `NEAREST` resize (`ImagingScaleAffine`): source index `(int)(a·½ + a·i)` with the offset accumulated in
/// double precision exactly as Pillow does, `a = in / out`.
fn nearest_table(in_size: usize, out_size: usize) -> Vec<usize> {
    let a = f64::from(in_size as f32) / out_size as f64;
    let mut pos = a * 0.5;
    let mut table = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        // COORD(v): negative -> -1 (out of range); otherwise truncation. In range by construction, clamp anyway.
        let idx = if pos < 0.0 { 0 } else { (pos as usize).min(in_size - 1) };
        table.push(idx);
        pos += a;
    }
    table
}

fn resize_nearest(src: &[u8], width: usize, height: usize, channels: usize, nw: usize, nh: usize) -> Vec<u8> {
    let xs = nearest_table(width, nw);
    let ys = nearest_table(height, nh);
    let mut out = vec![0u8; nw * nh * channels];
    for (oy, out_row) in out.chunks_exact_mut(nw * channels).enumerate() {
        let row = &src[ys[oy] * width * channels..(ys[oy] + 1) * width * channels];
        for (ox, px) in out_row.chunks_exact_mut(channels).enumerate() {
            px.copy_from_slice(&row[xs[ox] * channels..(xs[ox] + 1) * channels]);
        }
    }
    out
}

/// How resize errors name their input; [`crate::processor::image`] renames it to the image's path or index.
const RESIZE_INPUT: &str = "<resize>";

/// Checks that `len` bytes are exactly `width × height × channels` (computed without overflow); the reason if not.
pub(crate) fn check_buffer_len(
    len: usize,
    width: usize,
    height: usize,
    channels: usize,
) -> std::result::Result<(), String> {
    let expected = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| format!("{width}x{height}x{channels} overflows"))?;
    if len != expected {
        return Err(format!(
            "buffer holds {len} bytes, {width}x{height}x{channels} needs {expected}"
        ));
    }
    Ok(())
}

/// Resizes an interleaved 8-bit image with `channels` (1–4) independent channels to `new_width` × `new_height`,
/// bit-identically to Pillow's `Image.resize(size, filter)` (no `box`, no `reducing_gap`).
///
/// `src` holds `height` rows of `width · channels` bytes. Errors ([`Error::InvalidImage`]) on a buffer of the wrong
/// length, a zero dimension, or an unsupported channel count.
pub fn resize_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    if !(1..=4).contains(&channels) {
        return Err(Error::invalid_image(
            RESIZE_INPUT,
            format!("{channels} channels; 1 to 4 are supported"),
        ));
    }
    if width == 0 || height == 0 || new_width == 0 || new_height == 0 {
        return Err(Error::invalid_image(
            RESIZE_INPUT,
            format!("cannot resize {width}x{height} to {new_width}x{new_height}: zero dimension"),
        ));
    }
    check_buffer_len(src.len(), width, height, channels).map_err(|r| Error::invalid_image(RESIZE_INPUT, r))?;
    if width > (1 << 24) || height > (1 << 24) || new_width > (1 << 24) || new_height > (1 << 24) {
        return Err(Error::invalid_image(
            RESIZE_INPUT,
            "dimensions over 2^24 are not supported".to_string(),
        ));
    }
    if new_width == width && new_height == height {
        return Ok(src.to_vec());
    }
    if filter == Filter::Nearest {
        return Ok(resize_nearest(src, width, height, channels, new_width, new_height));
    }
    Ok(match channels {
        1 => resample::<1>(src, width, height, new_width, new_height, filter),
        2 => resample::<2>(src, width, height, new_width, new_height, filter),
        3 => resample::<3>(src, width, height, new_width, new_height, filter),
        _ => resample::<4>(src, width, height, new_width, new_height, filter),
    })
}

/// Pillow's `ImagingResampleInner` for the full-image box.
fn resample<const C: usize>(src: &[u8], width: usize, height: usize, nw: usize, nh: usize, filter: Filter) -> Vec<u8> {
    let need_horizontal = nw != width;
    let need_vertical = nh != height;
    let vert = precompute_coeffs(height, nh, filter);
    // First and one-past-last source rows the vertical pass reads.
    let ybox_first = vert.bounds.first().map_or(0, |b| b.0);
    let ybox_last = vert.bounds.last().map_or(0, |b| b.0 + b.1);

    // Pillow 13 runs the vertical pass first when the image loses more than twice as many rows as it loses
    // columns (measured against Pillow 13.0 on ~700 random size pairs, every filter and mode; the two orders
    // round the 8-bit intermediate differently, so the order matters for bit-exactness).
    let vertical_first =
        need_horizontal && need_vertical && nh < height && (height as i64 - nh as i64) > 2 * (width as i64 - nw as i64);
    if vertical_first {
        let horiz = precompute_coeffs(width, nw, filter);
        let tmp = vertical_pass(src, width * C, 0, &vert);
        return horizontal_pass::<C>(&tmp, width, 0..nh, &horiz);
    }

    if need_horizontal {
        let horiz = precompute_coeffs(width, nw, filter);
        let rows = if need_vertical {
            ybox_first..ybox_last
        } else {
            0..height
        };
        let offset = rows.start;
        let tmp = horizontal_pass::<C>(src, width, rows, &horiz);
        if need_vertical {
            vertical_pass(&tmp, nw * C, offset, &vert)
        } else {
            tmp
        }
    } else {
        // need_vertical must hold: the identical-size case returned earlier.
        vertical_pass(src, width * C, 0, &vert)
    }
}

/// [`resize_u8`] for interleaved RGB (3 bytes per pixel): Pillow's `Image.resize` on an `RGB` image.
pub fn resize_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    resize_u8(src, width, height, 3, new_width, new_height, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_errors() {
        let src: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_rgb8(&src, 2, 3, 2, 3, Filter::Bicubic).unwrap(), src);
        assert!(resize_rgb8(&src, 2, 2, 4, 4, Filter::Bicubic).is_err());
        assert!(resize_rgb8(&src, 2, 3, 0, 4, Filter::Bicubic).is_err());
        assert!(resize_u8(&src, 2, 3, 5, 4, 4, Filter::Bicubic).is_err());
    }

    #[test]
    fn constant_image_stays_constant() {
        for filter in [
            Filter::Nearest,
            Filter::Lanczos,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Box,
            Filter::Hamming,
        ] {
            let src = vec![77u8; 31 * 17 * 3];
            for (nw, nh) in [(5, 3), (64, 40), (31, 9), (8, 17)] {
                let out = resize_rgb8(&src, 31, 17, nw, nh, filter).unwrap();
                assert!(out.iter().all(|&v| v == 77), "{filter} {nw}x{nh}");
            }
        }
    }

    #[test]
    fn pil_codes_roundtrip() {
        for code in 0..6 {
            assert_eq!(Filter::from_pil_code(code).unwrap().pil_code() as i64, code);
        }
        assert!(Filter::from_pil_code(6).is_none());
        assert!(Filter::from_pil_code(-1).is_none());
    }
}
