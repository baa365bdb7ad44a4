"""Passage vectors on disk, keyed by what produced them and by text hash, shared by jobs.

Inference (``resrank encode``) keys it by checkpoint; a frozen-encoder training stage keys
it by the encoder weights and the training pool, so variants that align their rerankers
to the same frozen encoder embed the training passages once between them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from resrank.errors import ResRankError
from resrank.io import atomic_write

log = logging.getLogger(__name__)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Passage vectors of one checkpoint on disk: ``<root>/<key>/{vectors.safetensors,index.json}``.

    Guarded by a file lock so parallel jobs of the same checkpoint can share it.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.dir = root / key
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> tuple[list[str], torch.Tensor | None]:
        index_path, vec_path = self.dir / "index.json", self.dir / "vectors.safetensors"
        if not (index_path.exists() and vec_path.exists()):
            return [], None
        from safetensors.torch import load_file

        hashes = json.loads(index_path.read_text(encoding="utf-8"))
        vectors = load_file(str(vec_path))["vectors"]
        if len(hashes) != vectors.shape[0]:
            raise ResRankError(f"{self.dir}: embedding cache index and vectors disagree; delete the folder")
        return hashes, vectors

    def get_or_encode(self, texts: list[str], encode: Any) -> torch.Tensor:
        """Vectors for ``texts`` (in order), encoding only those not cached yet."""
        from safetensors.torch import save_file

        with self._locked():
            hashes, vectors = self._load()
            known = {h: i for i, h in enumerate(hashes)}
            wanted = [text_hash(t) for t in texts]
            missing: dict[str, str] = {}
            for h, t in zip(wanted, texts, strict=True):
                if h not in known and h not in missing:
                    missing[h] = t
            if missing:
                log.info("encoding %d new passages (%d cached)", len(missing), len(texts) - len(missing))
                new = encode(list(missing.values())).to(torch.float32)
                vectors = new if vectors is None else torch.cat([vectors, new])
                hashes = hashes + list(missing)
                known = {h: i for i, h in enumerate(hashes)}
                tmp = self.dir / "vectors.safetensors.tmp"
                save_file({"vectors": vectors.contiguous()}, str(tmp))
                tmp.replace(self.dir / "vectors.safetensors")
                with atomic_write(self.dir / "index.json") as handle:
                    json.dump(hashes, handle)
            assert vectors is not None or not texts
            if not texts:
                return torch.empty(0, 0)
            return vectors[torch.tensor([known[h] for h in wanted])]
