#!/usr/bin/env python3
"""Builds the tiny random AltCLIP fixtures under tests/fixtures/ with Hugging Face transformers.

Run from the repository root (needs torch, transformers, safetensors):

    python scripts/make_model_fixtures.py

It writes, under tests/fixtures/tiny/:
  st/           config.json + model.safetensors as transformers 5 writes them (`encoder.layer.N` in both towers)
  sharded/      the same split into several shards with model.safetensors.index.json
  hub_bin/      pytorch_model.bin with the hub's original names (vision `encoder.layers.N`), extra unused
                entries (position_ids buffers, a roberta pooler), and a legacy BAAI-style config.json with
                `text_config_dict` / `vision_config_dict` and extra keys
  text_only/    AltCLIPTextModel.save_pretrained (names without the `text_model.` prefix)
  vision_only/  AltCLIPVisionModel.save_pretrained
  expected.safetensors   inputs and transformers' outputs (f32, f16, bf16, interpolated)
and under tests/fixtures/configs/ a few config.json variants with the configs transformers parses from them.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPTextModel, AltCLIPVisionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
TINY = os.path.join(ROOT, "tiny")

# Non-default everywhere: head_dim 16 and 12 (not 64), eps != 1e-5, odd 5x5 patch grid, 3 layers, projection 24.
TEXT = dict(
    vocab_size=123,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=80,
    max_position_embeddings=40,
    layer_norm_eps=1e-6,
    project_dim=40,
    pad_token_id=1,
    hidden_act="gelu",
)
VISION = dict(
    hidden_size=36,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=60,
    image_size=30,
    patch_size=6,
    layer_norm_eps=2e-5,
    hidden_act="quick_gelu",
    projection_dim=24,
)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (norm weights around 1) so that every tensor's loading is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "LayerNorm.weight" in name or "layer_norm" in name and name.endswith("weight") or name.endswith(
                ("pre_LN.weight", "pre_layrnorm.weight", "post_layernorm.weight")
            ):
                p.copy_(1.0 + 0.1 * noise)
            elif name == "logit_scale":
                p.fill_(2.3)
            else:
                p.copy_(0.08 * noise)


def hub_names(state: dict) -> dict:
    """transformers 5 names -> the hub's original names (vision layers as `encoder.layers.N`)."""
    out = {}
    for k, v in state.items():
        if k.startswith("vision_model.encoder.layer."):
            k = k.replace("vision_model.encoder.layer.", "vision_model.encoder.layers.", 1)
        out[k] = v.contiguous()
    return out


def saved_state(directory: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


def main() -> None:
    torch.manual_seed(0)
    if os.path.isdir(TINY):
        shutil.rmtree(TINY)
    os.makedirs(TINY)

    cfg = AltCLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24)
    model = AltCLIPModel(cfg).eval()
    randomize(model, 1234)

    st_dir = os.path.join(TINY, "st")
    model.save_pretrained(st_dir)
    model.save_pretrained(os.path.join(TINY, "sharded"), max_shard_size="150KB")

    # Hub layout: .bin, original names, unused extras, legacy config.
    hub_dir = os.path.join(TINY, "hub_bin")
    os.makedirs(hub_dir)
    state = hub_names(saved_state(st_dir))
    state["text_model.roberta.embeddings.position_ids"] = torch.arange(TEXT["max_position_embeddings"])[None]
    state["vision_model.embeddings.position_ids"] = torch.arange(26)[None]
    state["text_model.roberta.pooler.dense.weight"] = torch.randn(48, 48)
    state["text_model.roberta.pooler.dense.bias"] = torch.randn(48)
    torch.save(state, os.path.join(hub_dir, "pytorch_model.bin"))
    legacy = json.load(open(os.path.join(st_dir, "config.json")))
    text_cfg = dict(legacy["text_config"])
    vision_cfg = dict(legacy["vision_config"])
    legacy["text_config_dict"] = dict(text_cfg)
    legacy["vision_config_dict"] = dict(vision_cfg)
    # The legacy dicts win: put misleading values in the plain sections.
    legacy["text_config"] = dict(text_cfg, hidden_size=999, id2label={"0": "LABEL_0"}, num_beams=1)
    legacy["vision_config"] = dict(vision_cfg, hidden_size=777, patch_size=3)
    legacy.update(direct_kd=False, num_layers=3, text_model_name=None, use_cache=True)
    json.dump(legacy, open(os.path.join(hub_dir, "config.json"), "w"), indent=2)
    reloaded = AltCLIPModel.from_pretrained(st_dir).eval()
    legacy_cfg = AltCLIPConfig.from_pretrained(hub_dir)
    assert legacy_cfg.text_config.hidden_size == 48 and legacy_cfg.vision_config.patch_size == 6

    # Standalone towers.
    text_only = AltCLIPTextModel(cfg.text_config).eval()
    text_only.load_state_dict(model.text_model.state_dict())
    text_only.save_pretrained(os.path.join(TINY, "text_only"))
    vision_only = AltCLIPVisionModel(cfg.vision_config).eval()
    vision_only.load_state_dict(model.vision_model.state_dict())
    vision_only.save_pretrained(os.path.join(TINY, "vision_only"))

    # Inputs: right padding, left padding, no padding; three images.
    input_ids = torch.tensor(
        [
            [0, 17, 45, 99, 2, 1, 1],
            [1, 1, 0, 8, 121, 2, 1],  # left-padded (and one trailing pad)
            [0, 5, 6, 7, 88, 64, 2],
        ]
    )
    attention_mask = (input_ids != 1).long()
    g = torch.Generator().manual_seed(7)
    pixel_values = torch.randn(3, 3, 30, 30, generator=g)
    pixel_interp = torch.randn(2, 3, 44, 32, generator=g)  # 7x5 grid with remainder rows/columns

    out = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
           "pixel_values_interp": pixel_interp}
    with torch.no_grad():
        for m in (model, reloaded):
            o = m(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                  return_loss=True, output_hidden_states=True)
        out["logits_per_image"] = o.logits_per_image
        out["logits_per_text"] = o.logits_per_text
        out["text_embeds"] = o.text_embeds
        out["image_embeds"] = o.image_embeds
        out["loss"] = o.loss.reshape(1)
        out["text_last_hidden_state"] = o.text_model_output.last_hidden_state
        out["text_pooler_output"] = o.text_model_output.pooler_output
        for i, h in enumerate(o.text_model_output.hidden_states):
            out[f"text_hidden_states.{i}"] = h
        out["vision_last_hidden_state"] = o.vision_model_output.last_hidden_state
        out["vision_pooler_output"] = o.vision_model_output.pooler_output
        for i, h in enumerate(o.vision_model_output.hidden_states):
            out[f"vision_hidden_states.{i}"] = h
        out["text_features"] = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        out["image_features"] = model.get_image_features(pixel_values=pixel_values).pooler_output
        vi = model.vision_model(pixel_values=pixel_interp, interpolate_pos_encoding=True)
        out["interp_last_hidden_state"] = vi.last_hidden_state
        out["interp_image_features"] = model.get_image_features(
            pixel_values=pixel_interp, interpolate_pos_encoding=True).pooler_output
        # Hub-layout model must give the same numbers in transformers too.
        for dtype, tag in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
            mh = AltCLIPModel.from_pretrained(st_dir, dtype=dtype).eval()
            oh = mh(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values.to(dtype))
            out[f"{tag}.text_embeds"] = oh.text_embeds.float()
            out[f"{tag}.image_embeds"] = oh.image_embeds.float()
            out[f"{tag}.logits_per_image"] = oh.logits_per_image.float()
    print("text hidden states:", len(o.text_model_output.hidden_states),
          "vision hidden states:", len(o.vision_model_output.hidden_states), file=sys.stderr)
    save_file({k: v.clone().contiguous() for k, v in out.items()}, os.path.join(TINY, "expected.safetensors"))

    make_config_fixtures()


def make_config_fixtures() -> None:
    """config.json variants and the sections transformers parses from them."""
    cdir = os.path.join(ROOT, "configs")
    os.makedirs(cdir, exist_ok=True)
    variants = {
        "defaults": {},
        "dict_only": {"text_config_dict": {"hidden_size": 64, "num_attention_heads": 4},
                      "vision_config_dict": {"patch_size": 14, "hidden_size": 1024, "num_attention_heads": 16}},
        "both_dict_wins": {"text_config": {"hidden_size": 999, "num_hidden_layers": 2},
                           "text_config_dict": {"hidden_size": 96, "num_attention_heads": 6},
                           "vision_config": {"image_size": 336},
                           "projection_dim": 1024, "direct_kd": False, "num_layers": 3, "text_model_name": None},
        "m18_like": {"projection_dim": 1024, "text_config": {"project_dim": 1024, "hidden_act": "gelu"},
                     "vision_config": {"hidden_size": 1024, "patch_size": 14, "num_hidden_layers": 24,
                                       "num_attention_heads": 16, "intermediate_size": 4096}},
    }
    keys_t = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
              "project_dim"]
    keys_v = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
              "image_size", "patch_size", "hidden_act", "layer_norm_eps", "projection_dim"]
    for name, raw in variants.items():
        c = AltCLIPConfig(**json.loads(json.dumps(raw)))
        parsed = {
            "projection_dim": c.projection_dim,
            "logit_scale_init_value": c.logit_scale_init_value,
            "text_config": {k: getattr(c.text_config, k) for k in keys_t},
            "vision_config": {k: getattr(c.vision_config, k) for k in keys_v},
        }
        json.dump(raw, open(os.path.join(cdir, f"{name}.json"), "w"), indent=2)
        json.dump(parsed, open(os.path.join(cdir, f"{name}.expected.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
