#!/usr/bin/env python3
"""Makes a full-size random-weight AltCLIP (the BAAI/AltCLIP config: ViT-L/14 + XLM-R large) and records
transformers' outputs on it, for the `#[ignore]`d Rust test `tests/full_size.rs`.

    python scripts/full_size_parity.py /tmp/altclip-full      # ~3.5 GB on disk, ~8 GB RAM, a few minutes
    ALTCLIP_FULL_DIR=/tmp/altclip-full cargo test --release --test full_size -- --ignored --nocapture

Writes config.json, model.safetensors and expected.safetensors into the directory.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AltCLIPConfig, AltCLIPModel


def baai_config() -> AltCLIPConfig:
    return AltCLIPConfig(
        text_config=dict(
            vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096, max_position_embeddings=514, pad_token_id=1, hidden_act="gelu",
            project_dim=768, layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768,
        ),
        projection_dim=768,
        logit_scale_init_value=2.6592,
    )


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/altclip-full"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = AltCLIPModel(baai_config()).eval()
    model.save_pretrained(out_dir)

    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 250001, (2, 77), generator=g)
    input_ids[:, 0] = 0
    input_ids[0, 76] = 2
    input_ids[1, 40] = 2
    input_ids[1, 41:] = 1
    attention_mask = (input_ids != 1).long()
    pixel_values = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        o = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        text_features = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        image_features = model.get_image_features(pixel_values=pixel_values).pooler_output
    save_file(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "logits_per_image": o.logits_per_image.contiguous(),
            "text_embeds": o.text_embeds.contiguous(),
            "image_embeds": o.image_embeds.contiguous(),
            "text_last_hidden_state": o.text_model_output.last_hidden_state.contiguous(),
            "vision_last_hidden_state": o.vision_model_output.last_hidden_state.contiguous(),
            "text_features": text_features.contiguous(),
            "image_features": image_features.contiguous(),
        },
        os.path.join(out_dir, "expected.safetensors"),
    )
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
