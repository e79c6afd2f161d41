#!/usr/bin/env python3
"""ONNX Runtime (CPU, f32) column for the side-by-side benchmark: exports AltCLIP's two towers to ONNX once, then
times them on the same workloads, input shapes and token ids as the PyTorch side of `bench_side_by_side.py`.

    python scripts/bench_onnx.py export /work/altclip-full /work/altclip-onnx        # once (torch needed here only)
    python scripts/bench_onnx.py run /work/altclip-onnx [--reps 3] [--threads 2] [--only vision_b1,text_mixed]
    python scripts/bench_onnx.py load-probe /work/altclip-onnx [--threads 2]

`export` loads `AltCLIPModel.from_pretrained` (f32, eval) and writes `image_features.onnx` (pixel_values
(batch, 3, H, W) -> `get_image_features(...).pooler_output`, dynamic batch) and `text_features.onnx` (input_ids,
attention_mask int64 (batch, seq) -> `get_text_features(...).pooler_output`, dynamic batch and seq) with the
torch.export-based exporter (`torch.onnx.export(dynamo=True)`, needs onnxscript). Weights always go to external
data (`<graph>.onnx.data`): the full-size text tower alone is over protobuf's 2 GB limit. It then checks ONNX
Runtime against torch on padded inputs of two shapes (max |diff| printed) and writes `export_info.json`, which
`run` and `load-probe` read for the image size, vocabulary and longest text the model takes.

`run` prints one JSON line per workload ({"side": "onnx", "workload": ..., "items": ..., "times": [...]}), names
as on the PyTorch side, one warm-up then `--reps` timed calls; `load-probe` prints one line with side "onnx",
workload "load" (run it in a fresh process: it reports peak RSS). Sessions: CPU provider, `--threads` intra-op
threads, 1 inter-op thread, sequential execution, all graph optimizations. On a model smaller than the full-size
one (tests/fixtures/tiny_full), text lengths are capped at what its position table allows and token ids folded
into its vocabulary; each line's "shape" says what actually ran. Needs `pip install onnxruntime onnx onnxscript`.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_side_by_side import mixed_lengths, peak_rss_bytes, text_batch, time_reps  # noqa: E402  (stdlib-only imports)

IMAGE, TEXT, INFO = "image_features.onnx", "text_features.onnx", "export_info.json"


class _NumpyAsTorch:
    """Just enough of the `torch` namespace for `bench_side_by_side.text_batch` to build numpy int64 arrays, so
    the token-id formula is shared and this process never imports torch (which would inflate the peak RSS)."""

    long = np.int64
    ones = staticmethod(lambda *shape, dtype: np.ones(shape, dtype=dtype))
    zeros = staticmethod(lambda *shape, dtype: np.zeros(shape, dtype=dtype))


def text_inputs(info, lengths, seq):
    """`text_batch` ids and mask as numpy int64; ids past a small test model's vocabulary are folded into it
    (3 + (id - 3) mod (vocab - 3): never <s>, <pad>, </s>), a no-op for the full-size 250 002-token vocabulary."""
    ids, mask = text_batch(_NumpyAsTorch, lengths, seq)
    vocab = info["vocab_size"]
    ids = np.where(ids >= vocab, 3 + (ids - 3) % (vocab - 3), ids)
    return {"input_ids": ids, "attention_mask": mask}


def pixels(info, batch, seed=0):
    """Pseudo-random pixels in [-1, 1) (the values do not change the work)."""
    h, w = info["image_size"]
    return np.random.default_rng(seed).uniform(-1, 1, (batch, info["num_channels"], h, w)).astype(np.float32)


def read_info(onnx_dir):
    with open(os.path.join(onnx_dir, INFO)) as f:
        return json.load(f)


def session(onnx_dir, name, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(os.path.join(onnx_dir, name), so, providers=["CPUExecutionProvider"])


def export(model_dir, onnx_dir, verify=True):
    """Export both towers (weights as external data), check them against torch, write `export_info.json`."""
    import onnx
    import onnxruntime
    import torch
    import transformers
    from transformers import AltCLIPModel

    os.makedirs(onnx_dir, exist_ok=True)
    t0 = time.perf_counter()
    model = AltCLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    vc, tc = model.config.vision_config, model.config.text_config
    size = vc.image_size if isinstance(vc.image_size, (list, tuple)) else (vc.image_size, vc.image_size)
    info = dict(image_size=list(size), num_channels=vc.num_channels, vocab_size=tc.vocab_size,
                pad_token_id=tc.pad_token_id, projection_dim=model.config.projection_dim,
                # RoBERTa positions run pad+1 .. pad+seq, so the table caps the sequence length.
                max_text_len=tc.max_position_embeddings - tc.pad_token_id - 1)

    class Image(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values).pooler_output

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    # Example inputs of batch 2 (a size-1 dimension would be specialised away), a padded row in the text batch.
    seq = min(16, info["max_text_len"])
    img_args = (torch.from_numpy(pixels(info, 2)),)
    txt_args = tuple(torch.from_numpy(a) for a in text_inputs(info, [seq, seq // 2], seq).values())
    times = {}
    # input_ids and attention_mask share their "seq" axis on purpose; the exporter warns that one name goes unused.
    warnings.filterwarnings("ignore", message=".*axis name: seq will not be used.*")
    with torch.no_grad():
        for name, module, args, dyn, out in (
                (IMAGE, Image().eval(), img_args, {"pixel_values": {0: "batch"}}, "image_embeds"),
                (TEXT, Text().eval(), txt_args, {"input_ids": {0: "batch", 1: "seq"},
                                          "attention_mask": {0: "batch", 1: "seq"}}, "text_embeds")):
            t = time.perf_counter()
            path = os.path.join(onnx_dir, name)
            prog = torch.onnx.export(module, args, path, dynamo=True, external_data=True, dynamic_shapes=dyn,
                                     input_names=list(dyn), output_names=[out])
            info.setdefault("opset", prog.model.opset_imports.get("", None))
            del prog
            times[name] = time.perf_counter() - t
            print(f"# exported {path} (+ {os.path.basename(path)}.data) in {times[name]:.1f} s", file=sys.stderr)
    info["export_s"] = times
    if verify:
        info["max_abs_diff"] = _verify(model, onnx_dir, info)
    info.update(exporter=f"torch.onnx.export(dynamo=True) torch {torch.__version__}",
                transformers=transformers.__version__, onnx=onnx.__version__, onnxruntime=onnxruntime.__version__,
                total_s=time.perf_counter() - t0)
    with open(os.path.join(onnx_dir, INFO), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


def _verify(model, onnx_dir, info):
    """ORT vs torch on shapes other than the export example's (dynamic axes), with padding; one session at a
    time so that the full-size check holds one extra copy of a tower's weights, not of both."""
    import torch

    diffs = {}
    n = info["max_text_len"]
    with torch.no_grad():
        sess = session(onnx_dir, IMAGE, 2)
        for b in (1, 3):
            px = pixels(info, b, seed=b)
            ref = model.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output.numpy()
            got = sess.run(None, {"pixel_values": px})[0]
            diffs[f"image_b{b}"] = float(np.abs(got - ref).max())
        del sess
        sess = session(onnx_dir, TEXT, 2)
        for lengths, seq in (([min(7, n)], min(7, n)), ([n, n // 2, 5], n)):
            feed = text_inputs(info, lengths, seq)
            ref = model.get_text_features(**{k: torch.from_numpy(v) for k, v in feed.items()}).pooler_output.numpy()
            got = sess.run(None, feed)[0]
            diffs[f"text_b{len(lengths)}x{seq}"] = float(np.abs(got - ref).max())
        del sess
    for k, v in diffs.items():
        print(f"# parity {k}: max |onnx - torch| = {v:.3g}", file=sys.stderr)
    return diffs


def run(onnx_dir, reps, threads, mixed, only):
    """The PyTorch side's workloads on ONNX Runtime; a list of {"side": "onnx", "workload", "items", "times",
    "shape"} (shape: the input that ran, which on a small test model may be shorter than the name says)."""
    info = read_info(onnx_dir)
    wanted = lambda n: only is None or n in only.split(",")
    n = info["max_text_len"]
    res = []

    def timed(sess, workload, feed):
        shape = list(next(iter(feed.values())).shape)
        times = time_reps(reps, lambda: sess.run(None, feed))
        res.append(dict(side="onnx", workload=workload, items=shape[0], times=times, shape=shape))

    if any(wanted(f"vision_b{b}") for b in (1, 8)):
        sess = session(onnx_dir, IMAGE, threads)
        for b in (1, 8):
            if wanted(f"vision_b{b}"):
                timed(sess, f"vision_b{b}", {"pixel_values": pixels(info, b)})
        del sess
    text = [(f"text_b{b}x{s}", [min(s, n)] * b, min(s, n)) for b, s in ((1, 77), (8, 77), (32, 16))]
    capped = [min(x, n) for x in mixed]
    text.append(("text_mixed_padded", capped, max(capped)))
    text = [t for t in text if wanted(t[0] if t[0] != "text_mixed_padded" else "text_mixed")]
    if text:
        sess = session(onnx_dir, TEXT, threads)
        for workload, lengths, seq in text:
            timed(sess, workload, text_inputs(info, lengths, seq))
        del sess
    return res


def load_probe(onnx_dir, threads):
    """Run in a fresh process: like the torch probe, times are cumulative from the start: text session created
    (`text_session_s`), first 16-token text embedding (`first_text_s`), image session created, first image
    embedding (`first_image_s`); `load_s` is the two session creations alone (torch: `from_pretrained`)."""
    import onnxruntime  # noqa: F401  (the import is not part of the load time, as torch's is not on its side)

    info = read_info(onnx_dir)
    feed_text = text_inputs(info, [min(16, info["max_text_len"])], min(16, info["max_text_len"]))
    feed_image = {"pixel_values": pixels(info, 1)}
    t = time.perf_counter()
    text = session(onnx_dir, TEXT, threads)
    text_session = time.perf_counter() - t
    text.run(None, feed_text)
    first_text = time.perf_counter() - t
    t_img = time.perf_counter()
    image = session(onnx_dir, IMAGE, threads)
    image_session = time.perf_counter() - t_img
    image.run(None, feed_image)
    first_image = time.perf_counter() - t
    rss = peak_rss_bytes()
    print(json.dumps(dict(side="onnx", workload="load", load_s=text_session + image_session,
                          text_session_s=text_session, first_text_s=first_text, first_image_s=first_image,
                          peak_rss=rss)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="export both towers to ONNX (external data) and check them against torch")
    e.add_argument("model_dir")
    e.add_argument("onnx_dir")
    e.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch check")
    r = sub.add_parser("run", help="time the benchmark workloads, one JSON line each")
    r.add_argument("onnx_dir")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--only", default=None, help="comma-separated workloads (vision_b1,text_b8x77,text_mixed,...)")
    lp = sub.add_parser("load-probe", help="sessions to first text / image embedding and peak RSS (fresh process)")
    lp.add_argument("onnx_dir")
    lp.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "export":
        export(a.model_dir, a.onnx_dir, verify=not a.no_verify)
    elif a.cmd == "run":
        for r in run(a.onnx_dir, a.reps, a.threads, mixed_lengths(), a.only):
            print(json.dumps(r))
    else:
        load_probe(a.onnx_dir, a.threads)


if __name__ == "__main__":
    main()
