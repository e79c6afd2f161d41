//! JPEG decoding with libjpeg-turbo's decoder — the library Pillow's wheels bundle — set up as Pillow's
//! `JpegDecode.c` sets it up when `CLIPImageProcessorPil` opens a file (`Image.open` → `convert("RGB")`), so decoded
//! pixels are bit-identical to Pillow's.
//!
//! The C library is mozjpeg-sys's vendored copy (libjpeg-turbo 2.x's decoder; mozjpeg changes the encoder), compiled
//! by its build script with the `cc` crate only (no nasm, no cmake, no system libjpeg; `libjpeg-turbo-simd` adds
//! the nasm kernels). Its output matches Pillow 13's libjpeg-turbo 3.2.0 on every fixture, with and without SIMD.
//! libjpeg errors reach Rust by unwinding out of `error_exit`, so under `panic = "abort"` they abort. Without the
//! `libjpeg-turbo`
//! feature, JPEG goes through the `image` crate (pure-Rust zune-jpeg, feature `pure-rust-jpeg`), which differs from
//! Pillow by up to 4 levels (IDCT and chroma upsampling).
//!
//! What is reproduced from Pillow 13 (`JpegImagePlugin.py`, `JpegDecode.c`, `Convert.c`):
//! - 1 component → `L`, 3 → `RGB` (libjpeg's colour-space guess from JFIF / Adobe / component ids, output
//!   `JCS_RGB`), 4 → `CMYK` (output `JCS_CMYK`, YCCK converted by libjpeg); any other count is an error;
//! - default decompression parameters: `JDCT_ISLOW`, fancy upsampling, block smoothing, no DCT scaling;
//! - CMYK is always read as Adobe-inverted (`rawmode = "CMYK;I"`), then `cmyk2rgb`;
//! - libjpeg warnings (corrupt entropy data, premature markers) are ignored (`JpegDecode.c`'s `output` is
//!   empty), but running out of data before the last scanline is an error (`LOAD_TRUNCATED_IMAGES` is off);
//!   a missing EOI after the last scanline is not;
//! - EXIF orientation (first `Exif` APP1 segment) only when asked, as elsewhere in this crate.
//!
//! Not reproduced: lossless JPEG (SOF3, which libjpeg-turbo 3 decodes and 2.x rejects: an error here), 12-bit
//! JPEG (an error in both), and the XMP orientation Pillow's `exif_transpose` falls back to.
//!
//! Called only from `processor::image`'s decoding (for content starting with the JPEG SOI marker).

use image::DynamicImage;

use super::DecodeOptions;
use crate::error::Result;

/// Whether `bytes` start like a JPEG (SOI + a marker), the test Pillow's `JpegImagePlugin._accept` and the
/// `image` crate's format guess both use.
#[cfg(any(test, feature = "libjpeg-turbo"))]
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes `bytes` with libjpeg-turbo when they are a JPEG; `None` leaves them to the `image` crate.
#[cfg(feature = "libjpeg-turbo")]
pub(super) fn decode_if_jpeg(bytes: &[u8], name: &str, options: &DecodeOptions) -> Option<Result<DynamicImage>> {
    is_jpeg(bytes).then(|| turbo::decode(bytes, name, options))
}

/// Without the `libjpeg-turbo` feature every JPEG is left to the `image` crate (zune-jpeg, feature
/// `pure-rust-jpeg`; without that too, a JPEG is an unsupported format).
#[cfg(not(feature = "libjpeg-turbo"))]
pub(super) fn decode_if_jpeg(_bytes: &[u8], _name: &str, _options: &DecodeOptions) -> Option<Result<DynamicImage>> {
    None
}

#[cfg(feature = "libjpeg-turbo")]
mod turbo {
    use std::os::raw::{c_int, c_long, c_uint, c_ulong};
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

    use image::error::{DecodingError, ImageFormatHint, LimitError, LimitErrorKind};
    use image::metadata::Orientation;
    use image::{DynamicImage, GrayImage, ImageError, ImageFormat, RgbImage};
    use mozjpeg_sys as ffi;

    use super::super::DecodeOptions;
    use crate::error::{Error, Result};

    /// libjpeg's error manager plus what the callbacks need; `pub_` first so libjpeg's `err` pointer is ours.
    #[repr(C)]
    struct ErrorMgr {
        pub_: ffi::jpeg_error_mgr,
        /// Set once every scanline is out: running out of data is no longer an error (a missing EOI).
        output_done: bool,
    }

    /// Why a decode stopped, carried out of the C frames by unwinding (`resume_unwind`: no panic hook runs).
    struct Fault(String);

    /// `error_exit`: libjpeg requires it not to return; unwind (mozjpeg-sys compiles the C with `-fexceptions`).
    unsafe extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
        // SAFETY: `err` points at the `ErrorMgr` installed in `decode` for the whole life of `cinfo`.
        let message = unsafe { format_message(cinfo) };
        resume_unwind(Box::new(Fault(message)));
    }

    /// `emit_message`: warnings (level −1) are ignored as Pillow ignores them, except premature end of data
    /// before the last scanline, which Pillow reports as a truncated file; trace messages are dropped.
    unsafe extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
        // SAFETY: as in `error_exit`.
        let mgr = unsafe { &*(cinfo.err as *const ErrorMgr) };
        if level < 0 && mgr.pub_.msg_code == ffi::JWRN_JPEG_EOF as c_int && !mgr.output_done {
            resume_unwind(Box::new(Fault("image file is truncated".to_string())));
        }
    }

    /// libjpeg's own text for the pending message.
    ///
    /// # Safety
    /// `cinfo.err` must point at a live `jpeg_error_mgr` initialised by `jpeg_std_error`.
    unsafe fn format_message(cinfo: &mut ffi::jpeg_common_struct) -> String {
        let mut buffer = [0u8; 80]; // JMSG_LENGTH_MAX
                                    // SAFETY: `jpeg_std_error` set `format_message`; it writes at most JMSG_LENGTH_MAX bytes (NUL included)
                                    // into the buffer. The binding types the buffer `&[u8; 80]`; the C side takes `char *`, so pass it as
                                    // the raw mutable pointer it is (same ABI).
        unsafe {
            let Some(f) = (*cinfo.err).format_message else {
                return "libjpeg error".to_string();
            };
            let f: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) = std::mem::transmute(f);
            f(cinfo, buffer.as_mut_ptr());
        }
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    }

    fn decode_error(name: &str, message: String) -> Error {
        let hint = ImageFormatHint::Exact(ImageFormat::Jpeg);
        Error::image_decode(name, ImageError::Decoding(DecodingError::new(hint, message)))
    }

    fn limit_error(name: &str, kind: LimitErrorKind) -> Error {
        Error::image_decode(name, ImageError::Limits(LimitError::from_kind(kind)))
    }

    /// Decoded pixels as libjpeg returns them (1, 3 or 4 bytes a pixel) and the EXIF orientation.
    struct Decoded {
        width: u32,
        height: u32,
        components: usize,
        pixels: Vec<u8>,
        orientation: Orientation,
    }

    /// A `jpeg_decompress_struct` with our error manager, destroyed on drop (also after an error, as libjpeg
    /// allows).
    struct Decompress {
        cinfo: Box<ffi::jpeg_decompress_struct>,
        // Boxed so its address stays fixed while `cinfo.err` points at it; dropped after `cinfo` is destroyed.
        err: Box<ErrorMgr>,
    }

    impl Drop for Decompress {
        fn drop(&mut self) {
            // SAFETY: `cinfo` was created by `jpeg_create_decompress` and `err` is still alive; destroy does not
            // call error_exit. Unwinding out of drop is impossible here: destroy only frees memory.
            unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) };
        }
    }

    impl Decompress {
        fn new() -> Decompress {
            // SAFETY: both structs are plain C data for which all-zero is the documented "not yet initialised"
            // state; `jpeg_std_error` fills the error manager, `jpeg_create_decompress` the rest. Creation can
            // only fail on out-of-memory, which reaches `error_exit` and unwinds to `decode`'s catch_unwind.
            unsafe {
                let mut err: Box<ErrorMgr> = Box::new(std::mem::zeroed());
                ffi::jpeg_std_error(&mut err.pub_);
                err.pub_.error_exit = Some(error_exit);
                err.pub_.emit_message = Some(emit_message);
                let mut cinfo: Box<ffi::jpeg_decompress_struct> = Box::new(std::mem::zeroed());
                cinfo.common.err = &mut err.pub_;
                ffi::jpeg_create_decompress(&mut *cinfo);
                Decompress { cinfo, err }
            }
        }
    }

    /// Decodes a JPEG as Pillow's `Image.open(...).convert("RGB")` would see it (`L` kept as grey, CMYK already
    /// converted to RGB), under `options.limits`.
    pub(super) fn decode(bytes: &[u8], name: &str, options: &DecodeOptions) -> Result<DynamicImage> {
        let d = match catch_unwind(AssertUnwindSafe(|| run(bytes, name, options))) {
            Ok(result) => result?,
            Err(payload) => {
                let message = match payload.downcast::<Fault>() {
                    Ok(fault) => fault.0,
                    // Not ours (a bug, not input): keep unwinding.
                    Err(other) => resume_unwind(other),
                };
                return Err(decode_error(name, message));
            }
        };
        let invalid = || Error::InvalidImage {
            input: name.to_string(),
            reason: "internal: decoded buffer size mismatch".to_string(),
        };
        let mut img = match d.components {
            1 => DynamicImage::ImageLuma8(GrayImage::from_raw(d.width, d.height, d.pixels).ok_or_else(invalid)?),
            3 => DynamicImage::ImageRgb8(RgbImage::from_raw(d.width, d.height, d.pixels).ok_or_else(invalid)?),
            _ => DynamicImage::ImageRgb8(
                RgbImage::from_raw(d.width, d.height, inverted_cmyk_to_rgb(&d.pixels)).ok_or_else(invalid)?,
            ),
        };
        img.apply_orientation(d.orientation);
        Ok(img)
    }

    /// The libjpeg calls. Errors inside libjpeg unwind out of here (see `error_exit`); limit and layout errors
    /// are returned.
    fn run(bytes: &[u8], name: &str, options: &DecodeOptions) -> Result<Decoded> {
        let mut d = Decompress::new();
        let cinfo = &mut *d.cinfo;
        let len = c_ulong::try_from(bytes.len()).map_err(|_| decode_error(name, "file too large".to_string()))?;
        // SAFETY: `bytes` outlives `d` (both live until the end of this function); libjpeg only reads it.
        unsafe { ffi::jpeg_mem_src(cinfo, bytes.as_ptr(), len) };
        if options.apply_exif_orientation {
            // SAFETY: valid cinfo before jpeg_read_header; APP1 kept whole (max marker length).
            unsafe { ffi::jpeg_save_markers(cinfo, 0xE1, 0xFFFF) };
        }
        // SAFETY: source set; require_image = TRUE, so a tables-only stream is an error (JERR_NO_IMAGE).
        unsafe { ffi::jpeg_read_header(cinfo, 1) };
        let (width, height) = (cinfo.image_width, cinfo.image_height);
        let components = usize::try_from(cinfo.num_components).unwrap_or(0);
        check_header(name, options, width, height, components)?;
        let pixels_bytes = u64::from(width) * u64::from(height) * components as u64;
        // Cap libjpeg's own allocations (whole-image coefficient buffers of progressive files, strip buffers) to
        // what the limits leave after the output buffer; libjpeg errors out (JERR_OUT_OF_MEMORY) beyond it.
        let left = options.limits.max_alloc.saturating_sub(pixels_bytes).max(1);
        // SAFETY: `mem` is set by jpeg_create_decompress.
        unsafe { (*cinfo.common.mem).max_memory_to_use = c_long::try_from(left).unwrap_or(c_long::MAX) };
        cinfo.out_color_space = match components {
            1 => ffi::JCS_GRAYSCALE,
            3 => ffi::JCS_RGB,
            _ => ffi::JCS_CMYK,
        };
        cinfo.dct_method = ffi::J_DCT_METHOD::JDCT_ISLOW;
        cinfo.do_fancy_upsampling = 1;
        let orientation = exif_orientation(cinfo);
        let pixels = read_pixels(cinfo, width, height, components);
        d.err.output_done = true;
        // SAFETY: every scanline was read, as jpeg_finish_decompress requires.
        unsafe { ffi::jpeg_finish_decompress(&mut d.cinfo) };
        Ok(Decoded {
            width,
            height,
            components,
            pixels,
            orientation,
        })
    }

    /// Zero sizes, Pillow's layer counts, and the decoder limits — before anything is allocated for pixels.
    fn check_header(name: &str, options: &DecodeOptions, width: u32, height: u32, components: usize) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidImage {
                input: name.to_string(),
                reason: format!("image is {width}x{height}"),
            });
        }
        if !matches!(components, 1 | 3 | 4) {
            // JpegImagePlugin.SOF: "cannot handle {layers}-layer images"
            return Err(decode_error(name, format!("cannot handle {components}-layer images")));
        }
        let l = options.limits;
        if width > l.max_width || height > l.max_height {
            return Err(limit_error(name, LimitErrorKind::DimensionError));
        }
        if u64::from(width) * u64::from(height) * components as u64 > l.max_alloc {
            return Err(limit_error(name, LimitErrorKind::InsufficientMemory));
        }
        Ok(())
    }

    /// The orientation from the first saved `Exif\0\0` APP1 segment (saved only when it is asked for).
    fn exif_orientation(cinfo: &ffi::jpeg_decompress_struct) -> Orientation {
        let mut marker = cinfo.marker_list;
        while !marker.is_null() {
            // SAFETY: libjpeg's saved-marker list: valid nodes with `data_length` bytes at `data`, alive until
            // the decompressor is destroyed.
            let m = unsafe { &*marker };
            let data: &[u8] = if m.data.is_null() {
                &[]
            } else {
                unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) }
            };
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                return Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
            }
            marker = m.next;
        }
        Orientation::NoTransforms
    }

    /// jpeg_start_decompress + every scanline into one `width · height · components` buffer.
    fn read_pixels(cinfo: &mut ffi::jpeg_decompress_struct, width: u32, height: u32, components: usize) -> Vec<u8> {
        // SAFETY: header read and parameters set; errors unwind.
        unsafe { ffi::jpeg_start_decompress(cinfo) };
        let stride = width as usize * components;
        let mut pixels = vec![0u8; stride * height as usize];
        let mut rows: Vec<*mut u8> = pixels.chunks_exact_mut(stride).map(<[u8]>::as_mut_ptr).collect();
        while cinfo.output_scanline < cinfo.output_height {
            let done = cinfo.output_scanline as usize;
            let left = c_uint::try_from(rows.len() - done).unwrap_or(c_uint::MAX);
            // SAFETY: output_width == width and output_components == components (no scaling, the colour
            // spaces above), so each row pointer has room for one scanline; `rows[done..]` holds `left` rows.
            let n = unsafe { ffi::jpeg_read_scanlines(cinfo, rows[done..].as_mut_ptr(), left) };
            if n == 0 {
                // Cannot happen with a memory source (it never suspends); avoid spinning if it does.
                break;
            }
        }
        pixels
    }

    /// Pillow's `cmyk2rgb` (`Convert.c`) on Adobe-inverted CMYK as libjpeg returns it: with `c = 255 − stored` and
    /// `nk = 255 − k = stored_k`, `out = CLIP8(nk − MULDIV255(c, nk))`.
    fn inverted_cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
        let muldiv255 = |a: u32, b: u32| {
            let t = a * b + 128;
            ((t >> 8) + t) >> 8
        };
        let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
        for p in cmyk.chunks_exact(4) {
            let nk = u32::from(p[3]);
            for &s in &p[..3] {
                // nk − MULDIV255(c, nk) is in 0..=255 for c, nk in 0..=255, so CLIP8 never clips.
                out.push((nk - muldiv255(255 - u32::from(s), nk)) as u8);
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::inverted_cmyk_to_rgb;

        #[test]
        fn cmyk_matches_pillow_formula() {
            // Pillow: CMYK (0, 0, 0, 0) is white, K = 255 black; stored bytes are inverted.
            assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 255]), vec![255, 255, 255]);
            assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
            // c = 255 − 55 = 200, nk = 128: 128 − MULDIV255(200, 128) = 128 − 100 = 28.
            assert_eq!(inverted_cmyk_to_rgb(&[55, 255, 0, 128]), vec![28, 128, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_soi() {
        assert!(is_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!is_jpeg(&[0xFF, 0xD8]));
        assert!(!is_jpeg(b"\x89PNG"));
    }
}
