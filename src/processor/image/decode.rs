//! Image inputs and decoding: [`ImageInput`] (path, bytes, decoded image, raw buffer), the decoder limits and
//! [`decode_image`], the one place an encoded image's format is chosen.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::{Error, Result};

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

/// Options for decoding an [`ImageInput`] (EXIF orientation, decoder limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// Rotate / flip according to the EXIF orientation tag (off by default, as in `CLIPImageProcessorPil`).
    pub apply_exif_orientation: bool,
    /// Decoder limits.
    pub limits: DecodeLimits,
}

/// Decodes an encoded image under `options.limits`. `name` labels errors.
///
/// This is the one place the format is chosen: it is sniffed from the bytes (never the file name).
pub fn decode_image(bytes: &[u8], name: &str, options: &DecodeOptions) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::invalid_image(name, "empty (0 bytes)"));
    }
    if let Some(decoded) = super::jpeg::decode_if_jpeg(bytes, name, options) {
        return decoded;
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image_decode(name, image::ImageError::IoError(e)))?;
    let mut limits = options.limits.to_image_limits();
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| Error::image_decode(name, e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::invalid_image(name, format!("image is {w}x{h}")));
    }
    limits
        .reserve(decoder.total_bytes())
        .map_err(|e| Error::image_decode(name, e))?;
    // No or unreadable EXIF means no transform, as with Pillow's `ImageOps.exif_transpose`.
    let orientation = if options.apply_exif_orientation {
        decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms)
    } else {
        image::metadata::Orientation::NoTransforms
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| Error::image_decode(name, e))?;
    img.apply_orientation(orientation);
    Ok(img)
}
