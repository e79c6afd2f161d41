//! A small, hand-written reader for SentencePiece `ModelProto` files (`sentencepiece.bpe.model`), and the
//! validation of SentencePiece `precompiled_charsmap` blobs.
//!
//! Only the fields the XLM-R tokenizer needs are decoded; every other field is skipped. The reader never
//! panics: truncated or malformed input, invalid UTF-8, unsupported wire types and over-long length prefixes
//! all become [`Error::Tokenizer`]. Allocations are bounded by the size of the input.
//!
//! ```text
//! ModelProto       1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
//! SentencePiece    1: piece (string)   2: score (float)   3: type (enum, default NORMAL = 1)
//! TrainerSpec      3: model_type   35: byte_fallback   40: unk_id  41: bos_id  42: eos_id  43: pad_id
//!                  45: unk_piece   46: bos_piece   47: eos_piece   48: pad_piece
//! NormalizerSpec   1: name   2: precompiled_charsmap (bytes)   3: add_dummy_prefix   4: remove_extra_whitespaces
//!                  5: escape_whitespaces
//! ```

use std::collections::VecDeque;
use std::path::Path;

use super::read_bounded;
use crate::error::{Error, Result};

/// Largest SentencePiece model file accepted (XLM-R's is about 5 MB).
pub const MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;

/// Maximum nesting of protobuf messages the reader follows (the schema itself is two levels deep).
const MAX_DEPTH: usize = 4;

/// The kind of a SentencePiece piece (`SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece (`NORMAL = 1`).
    Normal,
    /// The unknown piece (`UNKNOWN = 2`).
    Unknown,
    /// A control symbol such as `<s>` (`CONTROL = 3`); never produced from text.
    Control,
    /// A user-defined symbol (`USER_DEFINED = 4`); always emitted whole.
    UserDefined,
    /// An unused piece (`UNUSED = 5`).
    Unused,
    /// A byte-fallback piece such as `<0x41>` (`BYTE = 6`).
    Byte,
}

impl PieceType {
    fn from_proto(value: u64) -> Option<Self> {
        Some(match value {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry of a SentencePiece model.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// The piece's text (`▁` marks a word start).
    pub piece: String,
    /// Its log-probability score (unigram) or merge rank (BPE).
    pub score: f32,
    /// Its kind.
    pub kind: PieceType,
}

/// The `TrainerSpec` fields a tokenizer needs (protobuf defaults where a field is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerSpec {
    /// `model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    /// Whether unknown characters decompose into byte pieces.
    pub byte_fallback: bool,
    /// Id of the unknown piece (default 0).
    pub unk_id: i32,
    /// Id of the beginning-of-sentence piece (default 1; -1 when disabled).
    pub bos_id: i32,
    /// Id of the end-of-sentence piece (default 2; -1 when disabled).
    pub eos_id: i32,
    /// Id of the padding piece (default -1: disabled).
    pub pad_id: i32,
    /// Text of the unknown piece (default `<unk>`).
    pub unk_piece: String,
    /// Text of the beginning-of-sentence piece (default `<s>`).
    pub bos_piece: String,
    /// Text of the end-of-sentence piece (default `</s>`).
    pub eos_piece: String,
    /// Text of the padding piece (default `<pad>`).
    pub pad_piece: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: 1,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
        }
    }
}

/// The `NormalizerSpec` of a SentencePiece model (protobuf defaults where a field is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizerSpec {
    /// Name of the normalisation rule, e.g. `nmt_nfkc`.
    pub name: String,
    /// The compiled normalisation rules (a double-array trie plus replacement strings); may be empty.
    pub precompiled_charsmap: Vec<u8>,
    /// Whether a `▁` is prepended to the text.
    pub add_dummy_prefix: bool,
    /// Whether leading, trailing and repeated spaces are removed.
    pub remove_extra_whitespaces: bool,
    /// Whether spaces are replaced by `▁`.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A decoded SentencePiece `ModelProto` (the subset of fields listed in the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SentencePieceModel {
    /// The vocabulary, in SentencePiece id order.
    pub pieces: Vec<Piece>,
    /// Training options that affect encoding.
    pub trainer_spec: TrainerSpec,
    /// Normalisation options.
    pub normalizer_spec: NormalizerSpec,
}

impl SentencePieceModel {
    /// Reads and decodes a `.model` file. Files over [`MAX_MODEL_BYTES`] are refused.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_bounded(path, MAX_MODEL_BYTES)?;
        Self::from_bytes(&bytes).map_err(|e| e.naming(&path.display().to_string()))
    }

    /// Decodes a serialized `ModelProto`.
    ///
    /// Besides wire-format errors, a model with no pieces, an empty piece, a non-finite score or an
    /// unknown piece type is rejected.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut model = SentencePieceModel::default();
        let mut reader = Reader::new(bytes, 0);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => model.pieces.push(parse_piece(b, model.pieces.len())?),
                (2, Value::Bytes(b)) => parse_trainer_spec(b, &mut model.trainer_spec)?,
                (3, Value::Bytes(b)) => parse_normalizer_spec(b, &mut model.normalizer_spec)?,
                (1..=3, _) => return Err(wire(format!("ModelProto field {field} has the wrong wire type"))),
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(wire("the model has no pieces (not a SentencePiece model?)"));
        }
        Ok(model)
    }
}

fn wire(reason: impl Into<String>) -> Error {
    Error::tokenizer("sentencepiece model", reason)
}

fn parse_piece(bytes: &[u8], index: usize) -> Result<Piece> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut reader = Reader::new(bytes, 1);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => piece.piece = utf8(b, "piece")?,
            (2, Value::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                piece.kind =
                    PieceType::from_proto(v).ok_or_else(|| wire(format!("piece {index} has unknown type {v}")))?;
            }
            (1..=3, _) => return Err(wire(format!("piece {index}: field {field} has the wrong wire type"))),
            _ => {}
        }
    }
    if piece.piece.is_empty() {
        return Err(wire(format!("piece {index} is empty")));
    }
    if !piece.score.is_finite() {
        return Err(wire(format!(
            "piece {index} ({:?}) has a non-finite score",
            piece.piece
        )));
    }
    Ok(piece)
}

fn parse_trainer_spec(bytes: &[u8], spec: &mut TrainerSpec) -> Result<()> {
    let mut reader = Reader::new(bytes, 1);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (3, Value::Varint(v)) => spec.model_type = v,
            (35, Value::Varint(v)) => spec.byte_fallback = v != 0,
            (40, Value::Varint(v)) => spec.unk_id = v as i32,
            (41, Value::Varint(v)) => spec.bos_id = v as i32,
            (42, Value::Varint(v)) => spec.eos_id = v as i32,
            (43, Value::Varint(v)) => spec.pad_id = v as i32,
            (45, Value::Bytes(b)) => spec.unk_piece = utf8(b, "trainer_spec.unk_piece")?,
            (46, Value::Bytes(b)) => spec.bos_piece = utf8(b, "trainer_spec.bos_piece")?,
            (47, Value::Bytes(b)) => spec.eos_piece = utf8(b, "trainer_spec.eos_piece")?,
            (48, Value::Bytes(b)) => spec.pad_piece = utf8(b, "trainer_spec.pad_piece")?,
            (3 | 35 | 40..=43 | 45..=48, _) => {
                return Err(wire(format!("trainer_spec field {field} has the wrong wire type")))
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer_spec(bytes: &[u8], spec: &mut NormalizerSpec) -> Result<()> {
    let mut reader = Reader::new(bytes, 1);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => spec.name = utf8(b, "normalizer_spec.name")?,
            (2, Value::Bytes(b)) => spec.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => spec.escape_whitespaces = v != 0,
            (1..=5, _) => return Err(wire(format!("normalizer_spec field {field} has the wrong wire type"))),
            _ => {}
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| wire(format!("{what} is not valid UTF-8")))
}

/// A decoded protobuf field value.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A cursor over one protobuf message.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], depth: usize) -> Self {
        Self { data, pos: 0, depth }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| wire(format!("truncated varint at byte {}", self.pos)))?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(wire(format!("varint overflows 64 bits at byte {}", self.pos)));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(wire(format!("varint longer than 10 bytes at byte {}", self.pos)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                wire(format!(
                    "field of {n} bytes at byte {} runs past the end of its {}-byte message",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.depth > MAX_DEPTH {
            return Err(wire("messages nested too deeply"));
        }
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(wire(format!("field number 0 at byte {}", self.pos)));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| wire("length prefix does not fit in memory"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            t => return Err(wire(format!("unsupported protobuf wire type {t} (field {field})"))),
        };
        Ok(Some((field, value)))
    }
}

/// Checks that a SentencePiece `precompiled_charsmap` can be used by `tokenizers`' `Precompiled` normalizer
/// without reading out of bounds.
///
/// The blob is `[u32 trie byte length][trie: u32 units][normalized strings, NUL-separated]`. The normalizer
/// walks the double-array trie with the UTF-8 bytes of every grapheme shorter than 6 bytes (or of single
/// characters), so every trie unit reachable within 5 bytes from the root must lie inside the array, and
/// every leaf must point at a character boundary of the normalized strings. An empty blob is valid (no
/// normalisation).
pub fn validate_precompiled_charsmap(blob: &[u8]) -> std::result::Result<(), String> {
    if blob.is_empty() {
        return Ok(());
    }
    let (units, normalized) = split_charsmap(blob)?;
    check_trie(&units, normalized)
}

/// The blob's trie units and its replacement strings.
fn split_charsmap(blob: &[u8]) -> std::result::Result<(Vec<usize>, &str), String> {
    let header: [u8; 4] = blob
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("precompiled_charsmap is shorter than its 4-byte header")?;
    let trie_bytes = u32::from_le_bytes(header) as usize;
    let n_units = trie_bytes / 4;
    let trie_end = 4usize
        .checked_add(n_units.saturating_mul(4))
        .filter(|&e| e <= blob.len())
        .ok_or_else(|| {
            format!(
                "precompiled_charsmap trie of {trie_bytes} bytes exceeds the {}-byte blob",
                blob.len()
            )
        })?;
    let units: Vec<usize> = blob[4..trie_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let normalized = std::str::from_utf8(&blob[trie_end..])
        .map_err(|_| "precompiled_charsmap replacement strings are not valid UTF-8".to_string())?;
    Ok((units, normalized))
}

/// Walks the double-array trie breadth-first, 5 bytes deep, as `spm_precompiled`'s `common_prefix_search` would.
fn check_trie(units: &[usize], normalized: &str) -> std::result::Result<(), String> {
    let has_leaf = |u: usize| (u >> 8) & 1 == 1;
    let value = |u: usize| u & ((1usize << 31) - 1);
    let label = |u: usize| u & ((1usize << 31) | 0xFF);
    let offset = |u: usize| (u >> 10) << ((u & (1usize << 9)) >> 6);
    let oob = || "precompiled_charsmap trie indexes outside its array".to_string();

    let root = *units.first().ok_or("precompiled_charsmap trie is empty")?;
    let mut visited = vec![false; units.len()];
    let mut queue = VecDeque::new();
    queue.push_back((offset(root), 0usize));
    while let Some((node, depth)) = queue.pop_front() {
        if depth >= 5 {
            continue;
        }
        for c in 1usize..=255 {
            let pos = node ^ c;
            let unit = *units.get(pos).ok_or_else(oob)?;
            if label(unit) != c {
                continue;
            }
            let next = pos ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *units.get(next).ok_or_else(oob)?;
                let start = value(leaf);
                if start > normalized.len() || !normalized.is_char_boundary(start) {
                    return Err(format!(
                        "precompiled_charsmap leaf points at byte {start}, not a character boundary of the {}-byte \
                         replacement strings",
                        normalized.len()
                    ));
                }
            }
            if let Some(seen) = visited.get_mut(pos) {
                if !*seen {
                    *seen = true;
                    queue.push_back((next, depth + 1));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        p
    }

    #[test]
    fn parses_a_hand_built_model() {
        let mut m = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, 2), &mut m);
        bytes_field(1, &piece("▁a", -1.5, 1), &mut m);
        let mut t = Vec::new();
        varint(40 << 3, &mut t);
        varint(0, &mut t);
        varint(43 << 3, &mut t);
        varint(u64::MAX, &mut t); // -1 as int32 is sign-extended to 10 bytes
        bytes_field(2, &t, &mut m);
        let mut n = Vec::new();
        bytes_field(1, b"identity", &mut n);
        varint(3 << 3, &mut n);
        varint(0, &mut n);
        bytes_field(3, &n, &mut m);
        let model = SentencePieceModel::from_bytes(&m).unwrap();
        assert_eq!(model.pieces.len(), 2);
        assert_eq!(model.pieces[1].piece, "▁a");
        assert_eq!(model.pieces[1].score, -1.5);
        assert_eq!(model.pieces[0].kind, PieceType::Unknown);
        assert_eq!(model.trainer_spec.pad_id, -1);
        assert_eq!(model.normalizer_spec.name, "identity");
        assert!(!model.normalizer_spec.add_dummy_prefix);
        assert!(model.normalizer_spec.remove_extra_whitespaces);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x0a],
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0xff; 11],
            vec![0x0b, 0x00],
            b"hello world, this is not a protobuf".to_vec(),
            (0..=255u8).collect(),
        ];
        for case in cases {
            assert!(SentencePieceModel::from_bytes(&case).is_err(), "{case:?}");
        }
        // Every prefix and every single-byte corruption of a valid model.
        let mut m = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, 2), &mut m);
        bytes_field(1, &piece("▁a", -1.5, 1), &mut m);
        for i in 0..m.len() {
            let _ = SentencePieceModel::from_bytes(&m[..i]);
            for x in [0u8, 0x7f, 0x80, 0xff] {
                let mut c = m.clone();
                c[i] = x;
                let _ = SentencePieceModel::from_bytes(&c);
            }
        }
    }

    #[test]
    fn charsmap_validation() {
        assert!(validate_precompiled_charsmap(&[]).is_ok());
        assert!(validate_precompiled_charsmap(&[1, 2]).is_err());
        assert!(validate_precompiled_charsmap(&[0xff, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(validate_precompiled_charsmap(&[4, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
