//! Preprocessing: images and text.
pub mod image;
pub mod resize;
pub mod sentencepiece;
pub mod text;
