//! Top-k cosine search over stored embeddings (text → image, image → image, ...), saved and loaded as
//! safetensors (tensor `embeddings`, ids in the `ids` metadata entry as a JSON list).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::export::save_f32_safetensors;
use crate::model::l2_normalize;

/// Name of the embedding tensor in a saved index.
pub const EMBEDDINGS_TENSOR: &str = "embeddings";
/// Metadata key holding the ids (a JSON array of strings).
pub const IDS_METADATA: &str = "ids";

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Row in the index.
    pub index: usize,
    /// The row's id (a path, a caption, ...).
    pub id: String,
    /// Cosine similarity with the query.
    pub score: f32,
}

/// A set of L2-normalised embeddings with ids, searchable by cosine similarity.
#[derive(Debug, Clone)]
pub struct EmbeddingIndex {
    ids: Vec<String>,
    /// (n, dim) f32 on the CPU, L2-normalised.
    embeddings: Tensor,
}

impl EmbeddingIndex {
    /// Builds an index; rows are (re)normalised, so raw features are accepted too.
    pub fn new(ids: Vec<String>, embeddings: &Tensor) -> Result<Self> {
        let (n, dim) = embeddings.dims2().map_err(|_| {
            Error::bad_input(
                "embeddings",
                format!("expected (n, dim), got shape {:?}", embeddings.dims()),
            )
        })?;
        if ids.len() != n {
            return Err(Error::bad_input(
                "embeddings",
                format!("{} ids for {n} embedding rows", ids.len()),
            ));
        }
        if dim == 0 {
            return Err(Error::bad_input("embeddings", "zero-width embeddings"));
        }
        let embeddings = l2_normalize(&embeddings.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)?;
        Ok(Self { ids, embeddings })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the index holds no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, in row order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The normalised embeddings, (n, dim).
    pub fn embeddings(&self) -> &Tensor {
        &self.embeddings
    }

    /// For each query row (q, dim), the `k` most similar rows, best first (ties by row order).
    pub fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let queries = match queries.rank() {
            1 => queries.unsqueeze(0)?,
            _ => queries.clone(),
        };
        let (_, dim) = queries
            .dims2()
            .map_err(|_| Error::bad_input("queries", format!("expected (q, dim), got shape {:?}", queries.dims())))?;
        let want = self.embeddings.dim(1)?;
        if dim != want {
            return Err(Error::bad_input(
                "queries",
                format!("width {dim}, the index has {want}"),
            ));
        }
        let queries = l2_normalize(&queries.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)?;
        let scores: Vec<Vec<f32>> = queries.matmul(&self.embeddings.t()?)?.to_vec2()?;
        Ok(scores
            .into_iter()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                order
                    .into_iter()
                    .take(k)
                    .map(|index| Hit {
                        index,
                        id: self.ids[index].clone(),
                        score: row[index],
                    })
                    .collect()
            })
            .collect())
    }

    /// Writes the index as safetensors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let ids = serde_json::to_string(&self.ids).map_err(|source| Error::Json {
            what: "index ids".into(),
            source,
        })?;
        let metadata: HashMap<String, String> = [(IDS_METADATA.to_string(), ids)].into();
        save_f32_safetensors(&[(EMBEDDINGS_TENSOR, &self.embeddings)], metadata, path)
    }

    /// Reads an index written by [`EmbeddingIndex::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let file_err = |reason: String| Error::WeightFile {
            path: path.into(),
            reason,
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| file_err(e.to_string()))?;
        let ids_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(IDS_METADATA))
            .ok_or_else(|| file_err(format!("no `{IDS_METADATA}` metadata")))?;
        let ids: Vec<String> = serde_json::from_str(ids_json).map_err(|source| Error::Json {
            what: format!("{}: ids metadata", path.display()),
            source,
        })?;
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| file_err(e.to_string()))?;
        let embeddings = tensors.get(EMBEDDINGS_TENSOR).ok_or_else(|| Error::MissingTensor {
            name: EMBEDDINGS_TENSOR.into(),
        })?;
        Self::new(ids, embeddings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ranks_by_cosine_and_round_trips() {
        let e = Tensor::new(&[[1f32, 0., 0.], [0.6, 0.8, 0.], [0., 0., 2.]], &Device::Cpu).unwrap();
        let index = EmbeddingIndex::new(vec!["a".into(), "b".into(), "c".into()], &e).unwrap();
        let q = Tensor::new(&[[1f32, 1., 0.]], &Device::Cpu).unwrap();
        let hits = index.search(&q, 2).unwrap();
        assert_eq!(hits[0].iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let want_b = 1.4 / 2f32.sqrt();
        assert!((hits[0][0].score - want_b).abs() < 1e-6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.safetensors");
        index.save(&path).unwrap();
        let back = EmbeddingIndex::load(&path).unwrap();
        assert_eq!(back.ids(), index.ids());
        assert_eq!(back.search(&q, 3).unwrap(), index.search(&q, 3).unwrap());
        assert!(matches!(
            index.search(&Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap(), 1),
            Err(Error::BadInput { .. })
        ));
        assert!(EmbeddingIndex::new(vec!["x".into()], &e).is_err());
    }
}
