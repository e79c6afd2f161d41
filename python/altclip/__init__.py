"""AltCLIP (BAAI's multilingual CLIP) image and text embeddings, computed by the Rust crate ``altclip``.

>>> import altclip
>>> emb = altclip.Embedder("BAAI/AltCLIP")  # or a local model directory
>>> images = emb.embed_images(["cat.jpg", open("dog.png", "rb").read()])
>>> texts = emb.embed_texts(["a photo of a cat", "一张狗的照片"])
>>> emb.logits(images, texts).argmax(axis=1)
"""

from ._altclip import Embedder, __version__, retain_freed_memory
from ._errors import (
    AltClipError,
    AltClipFileNotFoundError,
    AltClipIOError,
    AltClipPermissionError,
    InvalidInputError,
)

__all__ = [
    "Embedder",
    "retain_freed_memory",
    "AltClipError",
    "InvalidInputError",
    "AltClipIOError",
    "AltClipFileNotFoundError",
    "AltClipPermissionError",
    "__version__",
]
