#!/usr/bin/env python3
"""Bundled example photos and a complete tiny model repository, with transformers' zero-shot and embedding
results on them.

    pip install torch transformers pillow sentencepiece protobuf scikit-image
    python scripts/make_model_fixtures.py      # first (shared sizes)
    python scripts/make_tokenizer_fixtures.py  # first (the tokenizer copied here)
    python scripts/make_pipeline_fixtures.py

Writes:
  examples/images/{cat,coffee,astronaut}.png   real CC0 / public-domain photos from scikit-image's sample data,
                                                downscaled so the short side is 256 px (provenance in README.md there)
  tests/fixtures/tiny_full/                    config.json, model.safetensors (random weights, vocabulary sized to
                                                the fixture tokenizer), tokenizer files, preprocessor_config.json
  tests/fixtures/tiny_full/expected_pipeline.json   zero-shot probabilities and embeddings from transformers
"""

import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from transformers import AltCLIPConfig, AltCLIPModel, XLMRobertaTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from make_model_fixtures import TEXT, VISION, randomize

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..")
IMAGES = os.path.join(REPO, "examples", "images")
OUT = os.path.join(REPO, "tests", "fixtures", "tiny_full")
TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizer", "with_json")

LABELS = ["cat", "coffee", "astronaut", "猫"]
TEMPLATES = ["a photo of a {}.", "一张{}的照片。"]
TEXTS = ["a photo of a cat", "一杯咖啡", "宇宙飛行士の写真", ""]


def save_photos() -> list:
    os.makedirs(IMAGES, exist_ok=True)
    paths = []
    for name, fn in (("cat", skdata.chelsea), ("coffee", skdata.coffee), ("astronaut", skdata.astronaut)):
        img = Image.fromarray(fn())
        w, h = img.size
        s = 256 / min(w, h)
        img = img.resize((round(w * s), round(h * s)), Image.LANCZOS)
        path = os.path.join(IMAGES, f"{name}.png")
        img.save(path, optimize=True)
        paths.append(path)
    return paths


def main() -> None:
    photos = save_photos()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    for f in os.listdir(TOKENIZER):
        shutil.copy(os.path.join(TOKENIZER, f), OUT)
    tokenizer = XLMRobertaTokenizer.from_pretrained(OUT)

    text_cfg = dict(TEXT, vocab_size=len(tokenizer))
    cfg = AltCLIPConfig(text_config=text_cfg, vision_config=VISION, projection_dim=24)
    torch.manual_seed(0)
    model = AltCLIPModel(cfg).eval()
    randomize(model, 4321)
    model.save_pretrained(OUT)

    size = VISION["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    image_processor.save_pretrained(OUT)
    # What the hub's processor config looks like: keep the keys our parser must accept.
    pc = json.load(open(os.path.join(OUT, "preprocessor_config.json")))
    pc["feature_extractor_type"] = "CLIPFeatureExtractor"
    json.dump(pc, open(os.path.join(OUT, "preprocessor_config.json"), "w"), indent=2)

    images = [Image.open(p) for p in photos]
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
    max_len = min(tokenizer.model_max_length, TEXT["max_position_embeddings"] - 2)
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=pixel_values).pooler_output
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        scale = model.logit_scale.exp().item()

        def embed_texts(texts):
            enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            f = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
            return f / f.norm(dim=-1, keepdim=True)

        prompts = [t.replace("{}", label) for label in LABELS for t in TEMPLATES]
        prompt_embeds = embed_texts(prompts).reshape(len(LABELS), len(TEMPLATES), -1)
        label_embeds = prompt_embeds.mean(dim=1)
        label_embeds = label_embeds / label_embeds.norm(dim=-1, keepdim=True)
        probs = (scale * image_embeds @ label_embeds.T).softmax(dim=-1)

        text_embeds = embed_texts(TEXTS)
        out = model(input_ids=tokenizer(TEXTS, padding=True, return_tensors="pt")["input_ids"],
                    attention_mask=tokenizer(TEXTS, padding=True, return_tensors="pt")["attention_mask"],
                    pixel_values=pixel_values)
        assert torch.allclose(out.text_embeds, text_embeds, atol=1e-6)
        assert torch.allclose(out.image_embeds, image_embeds, atol=1e-6)

    expected = {
        "images": [os.path.relpath(p, REPO) for p in photos],
        "labels": LABELS,
        "templates": TEMPLATES,
        "zero_shot_probs": probs.tolist(),
        "texts": TEXTS,
        "image_embeds": image_embeds.tolist(),
        "text_embeds": text_embeds.tolist(),
        "logits_per_image": out.logits_per_image.tolist(),
        "pixel_values_sum": float(pixel_values.double().sum()),
    }
    json.dump(expected, open(os.path.join(OUT, "expected_pipeline.json"), "w"), indent=1)
    print("zero-shot probabilities:", np.round(probs.numpy(), 4))


if __name__ == "__main__":
    main()
