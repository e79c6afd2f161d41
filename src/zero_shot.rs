//! Zero-shot classification: labels × prompt templates → ensembled label embeddings, computed once, then any
//! number of images scored against them.
//!
//! Follows CLIP's prompt ensembling: each label's prompts are embedded and L2-normalised, averaged, and the mean
//! renormalised; probabilities are the softmax over labels of `exp(logit_scale) · cosine`.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::model::l2_normalize;
use crate::pipeline::AltClip;
use crate::processor::image::ImageInput;

/// CLIP-style English templates (`{}` is replaced by the label).
pub const ENGLISH_TEMPLATES: &[&str] = &[
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a good photo of a {}.",
];

/// Chinese counterparts of [`ENGLISH_TEMPLATES`].
pub const CHINESE_TEMPLATES: &[&str] = &[
    "一张{}的照片。",
    "一张{}的糟糕照片。",
    "一张大{}的照片。",
    "一张小{}的照片。",
    "一张{}的特写照片。",
    "一张{}的明亮照片。",
    "一张{}的裁剪照片。",
    "一张{}的好照片。",
];

/// One label's score for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    /// The label, as given.
    pub label: String,
    /// Its index in the label list.
    pub index: usize,
    /// Softmax probability over all labels.
    pub probability: f32,
    /// `exp(logit_scale) · cosine`.
    pub logit: f32,
}

/// Zero-shot classifier with precomputed label embeddings.
#[derive(Debug, Clone)]
pub struct ZeroShotClassifier {
    labels: Vec<String>,
    templates: Vec<String>,
    /// (labels, dim), L2-normalised, f32 on the CPU.
    label_embeds: Tensor,
}

/// Checks labels (non-empty list, no blank or duplicate entries) and templates (each contains `{}`).
fn validate(labels: &[String], templates: &[String]) -> Result<()> {
    if labels.is_empty() {
        return Err(Error::invalid_argument("labels", "no labels given"));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return Err(Error::invalid_argument("labels", format!("label #{i} is empty")));
        }
        if labels[..i].contains(label) {
            return Err(Error::invalid_argument(
                "labels",
                format!("label {label:?} is given twice"),
            ));
        }
    }
    if templates.is_empty() {
        return Err(Error::invalid_argument("templates", "no templates given"));
    }
    if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
        return Err(Error::invalid_argument(
            "templates",
            format!("template {t:?} has no {{}} placeholder"),
        ));
    }
    Ok(())
}

impl ZeroShotClassifier {
    /// Embeds every label with every template (one text batch) and ensembles per label.
    pub fn new<L: AsRef<str>, T: AsRef<str>>(clip: &AltClip, labels: &[L], templates: &[T]) -> Result<Self> {
        let labels: Vec<String> = labels.iter().map(|l| l.as_ref().trim().to_string()).collect();
        let templates: Vec<String> = templates.iter().map(|t| t.as_ref().to_string()).collect();
        validate(&labels, &templates)?;
        let prompts: Vec<String> = labels
            .iter()
            .flat_map(|l| templates.iter().map(move |t| t.replace("{}", l)))
            .collect();
        let prompt_refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let embeds = clip.embed_texts(&prompt_refs)?; // (labels · templates, dim), normalised
        let dim = embeds.dim(1)?;
        let mean = embeds.reshape((labels.len(), templates.len(), dim))?.mean(1)?;
        Ok(Self {
            labels,
            templates,
            label_embeds: l2_normalize(&mean)?,
        })
    }

    /// With the default templates: English and Chinese CLIP-style prompts together.
    pub fn with_default_templates<L: AsRef<str>>(clip: &AltClip, labels: &[L]) -> Result<Self> {
        let templates: Vec<&str> = ENGLISH_TEMPLATES.iter().chain(CHINESE_TEMPLATES).copied().collect();
        Self::new(clip, labels, &templates)
    }

    /// The labels, in the order given.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The templates in use.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// The ensembled label embeddings: (labels, dim), L2-normalised, f32.
    pub fn label_embeddings(&self) -> &Tensor {
        &self.label_embeds
    }

    /// Classifies images; per image, every label with its probability, most probable first.
    pub fn classify(&self, clip: &AltClip, images: &[ImageInput<'_>]) -> Result<Vec<Vec<LabelScore>>> {
        let image_embeds = clip.embed_images(images)?;
        self.classify_embeddings(&image_embeds, clip.model().logit_scale()?)
    }

    /// Scores precomputed normalised image embeddings (images, dim) with the given `exp(logit_scale)`.
    pub fn classify_embeddings(&self, image_embeds: &Tensor, logit_scale: f32) -> Result<Vec<Vec<LabelScore>>> {
        let (_, dim) = image_embeds.dims2()?;
        let want = self.label_embeds.dim(1)?;
        if dim != want {
            return Err(Error::bad_input(
                "image_embeds",
                format!("embedding width {dim}, the label embeddings have {want}"),
            ));
        }
        let image_embeds = image_embeds
            .to_dtype(DType::F32)?
            .to_device(self.label_embeds.device())?;
        let logits = (image_embeds.matmul(&self.label_embeds.t()?)? * f64::from(logit_scale))?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        Ok(logits
            .into_iter()
            .zip(probs)
            .map(|(l, p)| {
                let mut scores: Vec<LabelScore> = self
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(index, label)| LabelScore {
                        label: label.clone(),
                        index,
                        probability: p[index],
                        logit: l[index],
                    })
                    .collect();
                scores.sort_by(|a, b| b.probability.total_cmp(&a.probability).then(a.index.cmp(&b.index)));
                scores
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn label_and_template_validation() {
        let t = s(&["a photo of a {}."]);
        assert!(validate(&s(&["cat", "dog"]), &t).is_ok());
        assert!(matches!(
            validate(&[], &t),
            Err(Error::InvalidArgument { argument: "labels", .. })
        ));
        assert!(matches!(
            validate(&s(&["cat", " "]), &t),
            Err(Error::InvalidArgument { argument: "labels", .. })
        ));
        assert!(matches!(
            validate(&s(&["cat", "cat"]), &t),
            Err(Error::InvalidArgument { argument: "labels", .. })
        ));
        assert!(matches!(
            validate(&s(&["cat"]), &[]),
            Err(Error::InvalidArgument {
                argument: "templates",
                ..
            })
        ));
        let err = validate(&s(&["cat"]), &s(&["no placeholder"])).unwrap_err();
        assert!(err.to_string().contains("no placeholder"), "{err}");
    }
}
