"""An OpenVINO graph of a Llama-family decoder, built straight from its HF directory.

The graph has the shape OpenVINO GenAI's ContinuousBatchingPipeline expects from an exported
model (what `optimum-cli export openvino --task text-generation-with-past` writes): inputs
`input_ids`, `attention_mask`, `position_ids` and `beam_idx`, output `logits`, and per layer a
stateful KV cache (`ReadValue` initialised to an empty `[batch, kv_heads, 0, head_dim]`, reordered
by `beam_idx`, concatenated with the new keys/values, `Assign`) feeding a
`ScaledDotProductAttention`. The pipeline rewrites that attention into its paged form at load.

Built with OpenVINO's own opset instead of tracing the PyTorch model: no tracing (seconds
instead of a minute), no optimum-intel (which pins an older transformers than this project),
and a lean graph (~25 ops per layer) whose compilation is what a cold start pays. The cost:
only the architectures below. Other models run on the PyTorch engine, or are exported with
optimum-cli and deployed as an OpenVINO directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

from slinfer.services.worker.engine import ov_weights
from slinfer.services.worker.engine.weight_format import WeightFormat

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class UnsupportedModel(ValueError):
    """The converter does not know this architecture (the PyTorch engine may)."""


@dataclass(frozen=True, slots=True)
class DecoderShape:
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    tied: bool
    qkv_bias: bool
    qk_norm: bool
    max_position_embeddings: int

    @classmethod
    def read(cls, config: dict) -> DecoderShape:
        kind = config.get("model_type", "")
        if kind not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModel(
                f"the OpenVINO converter supports {sorted(SUPPORTED_MODEL_TYPES)}, not "
                f"{kind!r}; use engine=torch, or export with optimum-cli and deploy that directory"
            )
        if config.get("use_sliding_window") or "sliding_attention" in (
            config.get("layer_types") or ()
        ):
            raise UnsupportedModel("sliding-window attention is not supported by the converter")
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        return cls(
            model_type=kind,
            layers=config["num_hidden_layers"],
            hidden=hidden,
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            vocab=config["vocab_size"],
            rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=kind == "qwen2" or bool(config.get("attention_bias", False)),
            qk_norm=kind == "qwen3",
            max_position_embeddings=config.get("max_position_embeddings", 2048),
        )


# RoPE tables cover at most this many positions (32768 x head_dim 128 x 2 x 4 B = 32 MiB);
# a model with a longer context is served up to it (the engine's max_model_len).
MAX_ROPE_POSITIONS = 32768


def rope_positions(shape: DecoderShape) -> int:
    return min(shape.max_position_embeddings, MAX_ROPE_POSITIONS)


def rope_tables(model_dir: Path) -> tuple[np.ndarray, float]:
    """(inv_freq [head_dim/2], attention scaling) as transformers computes them."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "dynamic":
        raise UnsupportedModel("dynamic RoPE scaling is not supported by the converter")
    if rope_type == "default":
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        return inv.numpy().astype(np.float32), 1.0
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float().numpy(), float(scaling)


class _Weights:
    """The HF checkpoint's tensors by name (safetensors, memory-mapped)."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        self._files = {}
        for path in sorted(model_dir.glob("*.safetensors")):
            handle = safe_open(str(path), framework="pt")
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                self._files[name] = handle
        if not self._files:
            raise ValueError(f"{model_dir} has no *.safetensors weights")

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._files[name].get_tensor(name)


def _rms(x: ov.Output, weight: ov.Node, eps: float) -> ov.Node:
    var = ops.reduce_mean(ops.power(x, ops.constant(np.float32(2))), [-1], keep_dims=True)
    inv = ops.divide(
        ops.constant(np.float32(1)), ops.sqrt(ops.add(var, ops.constant(np.float32(eps))))
    )
    return ops.multiply(ops.multiply(x, inv), weight)


def _rotate(x: ov.Node, cos: ov.Node, sin: ov.Node, half: int) -> ov.Node:
    """x·cos + rotate_half(x)·sin, in the form of transformers' own graph (slices, a
    multiplication by -1), which OpenVINO's CPU plugin fuses into one RoPE kernel."""
    big = np.iinfo(np.int64).max
    lo = ops.slice(x, _i64(0), _i64(half), _i64(1), _i64(3))
    hi = ops.slice(x, _i64(half), _i64(big), _i64(1), _i64(3))
    rotated = ops.concat([ops.multiply(hi, ops.constant(np.float32(-1))), lo], -1)
    return ops.add(ops.multiply(x, cos), ops.multiply(rotated, sin))


def _i64(*values: int) -> ov.Node:
    return ops.constant(np.array(values, dtype=np.int64))


class _Builder:
    def __init__(self, shape: DecoderShape, weights: _Weights, fmt: WeightFormat):
        self.s, self.w, self.fmt = shape, weights, fmt
        self.params = {
            "input_ids": ops.parameter([-1, -1], ov.Type.i64, name="input_ids"),
            "attention_mask": ops.parameter([-1, -1], ov.Type.i64, name="attention_mask"),
            "position_ids": ops.parameter([-1, -1], ov.Type.i64, name="position_ids"),
            "beam_idx": ops.parameter([-1], ov.Type.i32, name="beam_idx"),
        }
        for name, p in self.params.items():
            p.output(0).get_tensor().set_names({name})
        self.sinks: list[ov.Node] = []

    def linear(self, x: ov.Output, name: str, fmt: WeightFormat | None = None) -> ov.Node:
        weight = ov_weights.matrix(self.w[f"{name}.weight"], fmt or self.fmt)
        out = ops.matmul(x, weight, False, True)
        if f"{name}.bias" in self.w:
            out = ops.add(out, ov_weights.vector(self.w[f"{name}.bias"]))
        return out

    def embeddings(self) -> ov.Node:
        table = ov_weights.matrix(
            self.w["model.embed_tokens.weight"], ov_weights.head_format(self.fmt)
        )
        return ops.gather(table, self.params["input_ids"], ops.constant(np.int64(0)))

    def mask(self) -> ov.Node:
        """[B, 1, S, L] additive: causal over past + new tokens, padding hidden."""
        ids, am = self.params["input_ids"], self.params["attention_mask"]
        s = ops.gather(ops.shape_of(ids), _i64(1), ops.constant(np.int64(0)))
        total = ops.gather(ops.shape_of(am), _i64(1), ops.constant(np.int64(0)))
        zero, one = ops.constant(np.int64(0)), ops.constant(np.int64(1))
        rows = ops.add(
            ops.range(zero, ops.squeeze(s, [0]), one, ov.Type.i64), ops.subtract(total, s)
        )
        cols = ops.range(zero, ops.squeeze(total, [0]), one, ov.Type.i64)
        causal = ops.less_equal(ops.unsqueeze(cols, [0]), ops.unsqueeze(rows, [1]))  # [S, L]
        present = ops.unsqueeze(ops.not_equal(am, zero), [1, 2])  # [B, 1, 1, L]
        allowed = ops.logical_and(ops.unsqueeze(causal, [0, 1]), present)
        return ops.select(allowed, ops.constant(np.float32(0)), ops.constant(np.float32(-np.inf)))

    def rope(self, inv_freq: np.ndarray, scaling: float) -> tuple[ov.Node, ov.Node]:
        """cos/sin [B, 1, S, D] gathered from tables computed here in float64.

        Not computed in the graph: with bf16 inference the plugin would multiply positions
        by frequencies in bf16 (8 mantissa bits), and at position 500 the angle is off by
        radians (measured: perplexity +33 % over 512-token windows). Tables of cos/sin
        values lose only the value's own rounding."""
        positions = np.arange(rope_positions(self.s), dtype=np.float64)
        freqs = positions[:, None] * inv_freq.astype(np.float64)[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        tables = []
        for fn in (np.cos, np.sin):
            table = ops.constant((fn(emb) * scaling).astype(np.float32))
            gathered = ops.gather(table, self.params["position_ids"], ops.constant(np.int64(0)))
            tables.append(ops.unsqueeze(gathered, [1]))  # [B, 1, S, D]
        return tables[0], tables[1]

    def heads(self, x: ov.Node, n: int) -> ov.Node:
        """[B, S, n*D] -> [B, n, S, D]."""
        shaped = ops.reshape(x, _i64(0, 0, n, self.s.head_dim), True)
        return ops.transpose(shaped, _i64(0, 2, 1, 3))

    def cached(self, layer: int, kind: str, new: ov.Node) -> ov.Node:
        """Past keys/values of this layer (state), with the new ones appended."""
        s = self.s
        name = f"past_key_values.{layer}.{kind}"
        info = ov.op.util.VariableInfo()
        info.variable_id = name
        info.data_shape = ov.PartialShape([-1, s.kv_heads, -1, s.head_dim])
        info.data_type = ov.Type.f32
        variable = ov.op.util.Variable(info)
        batch = ops.gather(ops.shape_of(self.params["input_ids"]), _i64(0), _i64(0))
        init = ops.broadcast(
            ops.constant(np.float32(0)), ops.concat([batch, _i64(s.kv_heads, 0, s.head_dim)], 0)
        )
        past = ops.gather(ov.op.read_value(init, variable), self.params["beam_idx"], _i64(0))
        merged = ops.concat([past, new], 2)
        self.sinks.append(ov.op.assign(merged, variable))
        return merged

    def repeat_kv(self, x: ov.Node) -> ov.Node:
        """Grouped-query attention: each KV head serves heads/kv_heads query heads."""
        s = self.s
        groups = s.heads // s.kv_heads
        if groups == 1:
            return x
        expanded = ops.unsqueeze(x, [2])  # [B, KV, 1, L, D]
        target = ops.concat(
            [
                ops.gather(ops.shape_of(x), _i64(0, 1), _i64(0)),
                _i64(groups),
                ops.gather(ops.shape_of(x), _i64(2, 3), _i64(0)),
            ],
            0,
        )
        broadcast = ops.broadcast(expanded, target)
        return ops.reshape(broadcast, _i64(0, s.heads, -1, s.head_dim), True)

    def layer(self, i: int, x: ov.Node, cos: ov.Node, sin: ov.Node, mask: ov.Node) -> ov.Node:
        s, p = self.s, f"model.layers.{i}"
        h = _rms(x, ov_weights.vector(self.w[f"{p}.input_layernorm.weight"]), s.rms_eps)
        q = self.heads(self.linear(h, f"{p}.self_attn.q_proj"), s.heads)
        k = self.heads(self.linear(h, f"{p}.self_attn.k_proj"), s.kv_heads)
        v = self.heads(self.linear(h, f"{p}.self_attn.v_proj"), s.kv_heads)
        if s.qk_norm:
            q = _rms(q, ov_weights.vector(self.w[f"{p}.self_attn.q_norm.weight"]), s.rms_eps)
            k = _rms(k, ov_weights.vector(self.w[f"{p}.self_attn.k_norm.weight"]), s.rms_eps)
        half = s.head_dim // 2
        q, k = _rotate(q, cos, sin, half), _rotate(k, cos, sin, half)
        keys = self.repeat_kv(self.cached(i, "key", k))
        values = self.repeat_kv(self.cached(i, "value", v))
        scale = ops.constant(np.float32(s.head_dim**-0.5))
        attn = ops.scaled_dot_product_attention(q, keys, values, mask, scale, causal=False)
        attn = ops.reshape(ops.transpose(attn, _i64(0, 2, 1, 3)), _i64(0, 0, -1), True)
        x = ops.add(x, self.linear(attn, f"{p}.self_attn.o_proj"))
        h = _rms(x, ov_weights.vector(self.w[f"{p}.post_attention_layernorm.weight"]), s.rms_eps)
        gate = ops.swish(self.linear(h, f"{p}.mlp.gate_proj"))
        up = self.linear(h, f"{p}.mlp.up_proj")
        mlp = self.linear(ops.multiply(gate, up), f"{p}.mlp.down_proj")
        return ops.add(x, mlp)


def build_model(
    model_dir: Path,
    fmt: WeightFormat,
    progress: Callable[[int, int], None] | None = None,
) -> ov.Model:
    """The stateful OpenVINO model of the HF checkpoint in `model_dir`, weights in `fmt`."""
    if fmt is WeightFormat.AUTO:
        raise ValueError("resolve the weight format before converting")
    config = json.loads((model_dir / "config.json").read_text())
    shape = DecoderShape.read(config)
    inv_freq, scaling = rope_tables(model_dir)
    weights = _Weights(model_dir)
    b = _Builder(shape, weights, fmt)
    x = b.embeddings()
    cos, sin = b.rope(inv_freq, scaling)
    mask = b.mask()
    for i in range(shape.layers):
        x = b.layer(i, x, cos, sin, mask)
        if progress is not None:
            progress(i + 1, shape.layers + 1)
    x = _rms(x, ov_weights.vector(weights["model.norm.weight"]), shape.rms_eps)
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    logits = ops.matmul(
        x, ov_weights.matrix(weights[head], ov_weights.head_format(fmt)), False, True
    )
    result = ops.result(logits)
    result.output(0).get_tensor().set_names({"logits"})
    model = ov.Model([result], b.sinks, list(b.params.values()), "slinfer_decoder")
    if progress is not None:
        progress(shape.layers + 1, shape.layers + 1)
    return model
