"""Type stubs of the native module ``altclip._altclip`` (the Rust binding)."""

import os
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS (allocations up to
    1 GiB from its heaps, a heap's free top kept, threads started afterwards on the main arena): each layer's large
    output is then not faulted in and zeroed again. Call once, at the start of a process that embeds (e.g. in a Ray
    actor's constructor), before the first ``Embedder``: the native threads that run the forwards start with it.
    Returns whether malloc took the settings; ``False`` off glibc, where nothing changes."""

ImageItem = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

class Embedder:
    """AltCLIP embeddings of images and texts, computed by the Rust crate ``altclip``.

    ``model`` is a Hugging Face Hub id or a local model directory; ``device`` is ``cpu``, ``cuda``, ``cuda:N``,
    ``metal``, ``metal:N`` or ``auto``; ``dtype`` ``f32``, ``f16`` or ``bf16``; ``revision`` a hub branch, tag or
    commit; ``quantize`` ``int8``, ``q8_0``, ``q6k``, ``q5k``, ``q4k``, ``q4_0`` or ``None``. Safe to share between threads.
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"],
        *,
        device: str = "cpu",
        dtype: str = "f32",
        revision: Optional[str] = None,
        quantize: Optional[str] = None,
    ) -> None: ...
    def embed_images(self, items: Iterable[ImageItem]) -> npt.NDArray[np.float32]:
        """L2-normalised image embeddings, shape (len(items), dim); the first unreadable item raises."""
    def embed_images_partial(
        self, items: Iterable[ImageItem]
    ) -> Tuple[npt.NDArray[np.float32], List[Optional[str]]]:
        """Embeddings with an all-NaN row per failed item, and per item ``None`` or its error message."""
    def embed_texts(self, texts: Iterable[str]) -> npt.NDArray[np.float32]:
        """L2-normalised text embeddings, shape (len(texts), dim)."""
    def logits(
        self, image_embeds: npt.NDArray[np.float32], text_embeds: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """``exp(logit_scale) * image_embeds @ text_embeds.T``, shape (N_img, N_txt)."""
    def load_towers(self) -> None:
        """Loads both towers now (each otherwise loads on its first use); a bad checkpoint raises here."""
    @property
    def dim(self) -> int:
        """Width of the embeddings."""
    @property
    def name(self) -> str:
        """The hub id or directory the model was loaded from."""
