"""A GGUF with the shape of gemma3:latest (Gemma 3 4B, Q4_K_M) and synthetic weights.

Speeds measured on it are real (same tensors, shapes, quantization types and vocabulary, so
the same bytes are read per token and the same kernels run); the text it writes is not. Every
report of a run on it says so (MODEL_NOTE).

    write_gemma3_4b_shape(out, vocab)          # 883 tensors, 3.32 GB of tensor data
    write_gemma3_4b_shape(out, vocab, small=True)  # 2 blocks, vocab cut: for tests
    write_text_model(out, vocab)               # TEXT: 2 blocks, no vision tower, 28 tensors (llama.cpp)

llama.cpp's llama-server loads a text model and its vision tower from two files: given one with
the `v.*` and `mm.*` tensors it refuses it ("wrong number of tensors; expected 51, got 28", seen
on an H100, issue 42), so its model is written text-only (no vision tensors, no vision keys).

Pitfalls met on an H100 (../shared/gpu/README.md) and handled here: with random weights the
tied, √2560-scaled embedding makes the model repeat its input token until Ollama aborts the
generation; token_embd's Q6_K scale d is set to 1e-4 so next-token distributions are near
uniform, and rows 1 (EOS) and 106 (end of turn) are zero so generation never stops early.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langbench.vocab import MODEL_NOTE, TEXT_MODEL_NOTE  # what a model says of itself, and every report of a run on it

Q4_K_BYTES, Q6_K_BYTES, QK = 144, 210, 256  # bytes per 256-value block
EOS, END_OF_TURN = 1, 106


@dataclass(frozen=True)
class Shape:
    embedding: int = 2560
    blocks: int = 34
    ffn: int = 10240
    heads: int = 8
    kv_heads: int = 4
    head_dim: int = 256
    vocab: int = 262144
    vision_blocks: int = 27
    vision_embedding: int = 1152
    vision_ffn: int = 4304
    image_size: int = 896
    patch: int = 14


FULL = Shape()
SMALL = Shape(blocks=2, vocab=4096, vision_blocks=1)
# llama-server's model on a GPU (vocab.SYNTHETIC_TEXT_MODEL): SMALL without its vision tower, the
# shape of the issue 42 run that streamed 2.4k tok/s into one session on an H100. The vocabulary
# cut to 4,096 keeps the server's sampling (per slot, on the CPU) from bounding its rate at 64 slots.
TEXT = Shape(blocks=2, vocab=4096, vision_blocks=0)


def _uses_more_bits(i: int, n: int) -> bool:
    """llama.cpp's Q4_K_M rule: these layers' attn_v and ffn_down are Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_specs(shape: Shape = FULL, vision: bool = True) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape = reversed ggml ne, kind) of gemma3:latest, in file order; without
    `vision`, the text model alone (no `v.*` or `mm.*` tensor: llama.cpp's file)."""
    e, hd = shape.embedding, shape.head_dim
    specs = [("token_embd.weight", (shape.vocab, e), "q6k")]
    for i in range(shape.blocks):
        p, big = f"blk.{i}.", _uses_more_bits(i, shape.blocks)
        specs += [(p + "attn_norm.weight", (e,), "one"),
                  (p + "attn_q.weight", (shape.heads * hd, e), "q4k"),
                  (p + "attn_k.weight", (shape.kv_heads * hd, e), "q4k"),
                  (p + "attn_v.weight", (shape.kv_heads * hd, e), "q6k" if big else "q4k"),
                  (p + "attn_q_norm.weight", (hd,), "one"), (p + "attn_k_norm.weight", (hd,), "one"),
                  (p + "attn_output.weight", (e, shape.heads * hd), "q4k"),
                  (p + "post_attention_norm.weight", (e,), "one"), (p + "ffn_norm.weight", (e,), "one"),
                  (p + "ffn_gate.weight", (shape.ffn, e), "q4k"), (p + "ffn_up.weight", (shape.ffn, e), "q4k"),
                  (p + "ffn_down.weight", (e, shape.ffn), "q6k" if big else "q4k"),
                  (p + "post_ffw_norm.weight", (e,), "one")]
    specs.append(("output_norm.weight", (e,), "one"))
    if not vision:
        return specs
    ve, vf = shape.vision_embedding, shape.vision_ffn
    specs += [("v.patch_embedding.weight", (ve, 3, shape.patch, shape.patch), "f16"),
              ("v.patch_embedding.bias", (ve,), "zero"),
              ("v.position_embedding.weight", ((shape.image_size // shape.patch) ** 2, ve), "f16"),
              ("v.post_layernorm.weight", (ve,), "one"), ("v.post_layernorm.bias", (ve,), "zero"),
              ("mm.mm_input_projection.weight", (ve, e), "f16"), ("mm.mm_soft_emb_norm.weight", (ve,), "one")]
    for i in range(shape.vision_blocks):
        p = f"v.blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            specs += [(p + t + ".weight", (ve, ve), "f16"), (p + t + ".bias", (ve,), "zero")]
        specs += [(p + "layer_norm1.weight", (ve,), "one"), (p + "layer_norm1.bias", (ve,), "zero"),
                  (p + "layer_norm2.weight", (ve,), "one"), (p + "layer_norm2.bias", (ve,), "zero"),
                  (p + "mlp.fc1.weight", (vf, ve), "f16"), (p + "mlp.fc1.bias", (vf,), "zero"),
                  (p + "mlp.fc2.weight", (ve, vf), "f16"), (p + "mlp.fc2.bias", (ve,), "zero")]
    return specs


def _f16_bytes(x: float) -> np.ndarray:
    return np.frombuffer(np.float16(x).tobytes(), np.uint8)


def q4k_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Q4_K: d, dmin (f16), 12 scale bytes, 128 nibble bytes; weights ≈ d·(8q − 60), sd ≈ 0.02."""
    a = np.empty((rows, cols // QK, Q4_K_BYTES), np.uint8)
    a[..., 0:2] = _f16_bytes(5.4e-4)
    a[..., 2:4] = _f16_bytes(5.4e-4)
    a[..., 4:16] = np.array([8] * 4 + [252] * 4 + [200] * 4, np.uint8)
    a[..., 16:] = rng.integers(0, 256, (rows, cols // QK, 128), np.uint8)
    return a.reshape(rows, -1)


def q6k_blocks(rng: np.random.Generator, rows: int, cols: int, d: float = 1.1e-3,
               zero_rows: tuple[int, ...] = ()) -> np.ndarray:
    """Q6_K: 128 ql bytes, 64 qh bytes, 16 int8 scales, d (f16); rows in zero_rows are 0."""
    a = np.empty((rows, cols // QK, Q6_K_BYTES), np.uint8)
    a[..., :192] = rng.integers(0, 256, (rows, cols // QK, 192), np.uint8)
    a[..., 192:208] = 1
    a[..., 208:210] = _f16_bytes(d)
    a[[r for r in zero_rows if r < rows]] = 0
    return a.reshape(rows, -1)


# GGUF value types (gguf-py's GGUFValueType) → struct format; 8 is a string, 9 an array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_VOCAB_KEYS = {"tokenizer.ggml.tokens": "tokens", "tokenizer.ggml.scores": "scores",
               "tokenizer.ggml.token_type": "types"}


def read_vocab(source: Path) -> dict:
    """Tokens, scores and token types of a Gemma 3 GGUF (the embedded 270M one has them).

    Read from the file's key-value section directly: gguf.GGUFReader makes a numpy view per
    item of every array, 10 s for the 262,144 tokens, where this takes a fraction of one."""
    import mmap
    import struct
    with open(source, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        magic, version, _tensors, n_kv = struct.unpack_from("<4sIQQ", m, 0)
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{source}: not a GGUF v2+ file")
        pos = 24

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", m, pos)
            pos += 8 + n
            return m[pos - n:pos].decode("utf-8")

        def value(kind: int):
            nonlocal pos
            if kind == 8:
                return string()
            if kind == 9:
                item, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if item in _SCALARS:  # a whole array of numbers at once
                    fmt = f"<{count}{_SCALARS[item]}"
                    out = list(struct.unpack_from(fmt, m, pos))
                    pos += struct.calcsize(fmt)
                    return out
                return [value(item) for _ in range(count)]
            fmt = "<" + _SCALARS[kind]
            (v,) = struct.unpack_from(fmt, m, pos)
            pos += struct.calcsize(fmt)
            return v

        vocab = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", m, pos)
            pos += 4
            v = value(kind)
            if key in _VOCAB_KEYS:
                vocab[_VOCAB_KEYS[key]] = v
            if len(vocab) == len(_VOCAB_KEYS):
                break
    missing = sorted(set(_VOCAB_KEYS.values()) - set(vocab))
    if missing:
        raise ValueError(f"{source}: no tokenizer {', '.join(missing)} in its metadata")
    return {"tokens": [str(t) for t in vocab["tokens"]], "scores": [float(x) for x in vocab["scores"]],
            "types": [int(x) for x in vocab["types"]]}


def write_vocab(source: Path, out: Path) -> Path:
    """A tensor-less GGUF holding only the Gemma 3 vocabulary (for the GPU bundle)."""
    import gguf
    vocab = read_vocab(source)
    w = gguf.GGUFWriter(str(out), "gemma3")
    _add_vocab(w, vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return out


def _add_vocab(w, vocab: dict) -> None:
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_string("tokenizer.ggml.pre", "default")
    w.add_array("tokenizer.ggml.tokens", vocab["tokens"])
    w.add_array("tokenizer.ggml.scores", vocab["scores"])
    w.add_array("tokenizer.ggml.token_type", vocab["types"])
    for key, value in (("bos_token_id", 2), ("eos_token_id", EOS), ("unknown_token_id", 3),
                       ("padding_token_id", 0), ("eot_token_id", END_OF_TURN)):
        w.add_uint32(f"tokenizer.ggml.{key}", value)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("tokenizer.ggml.add_eos_token", False)


def write_gemma3_4b_shape(out: Path, vocab_source: Path, small: bool = False, seed: int = 0) -> dict:
    """Write the model; returns {"tensors", "data_bytes"}. The vocabulary is cut to the
    shape's size when small (tests)."""
    return write_model(out, vocab_source, SMALL if small else FULL, vision=True, seed=seed)


def write_text_model(out: Path, vocab_source: Path, shape: Shape = TEXT, seed: int = 0) -> dict:
    """The text-only model llama-server loads (vocab.SYNTHETIC_TEXT_MODEL): `shape`'s blocks
    without the vision tower's tensors and keys; returns {"tensors", "data_bytes"}."""
    return write_model(out, vocab_source, shape, vision=False, seed=seed, note=TEXT_MODEL_NOTE)


def write_model(out: Path, vocab_source: Path, shape: Shape, vision: bool = True, seed: int = 0,
                note: str = MODEL_NOTE) -> dict:
    """Write a gemma3-shaped GGUF of `shape` (its vision tower too where `vision`); the Gemma 3
    vocabulary is cut to the shape's size. Returns {"tensors", "data_bytes"}."""
    import gguf
    from gguf import GGMLQuantizationType as T
    vocab = read_vocab(vocab_source)
    if len(vocab["tokens"]) > shape.vocab:
        vocab = {k: v[:shape.vocab] for k, v in vocab.items()}
    if len(vocab["tokens"]) != shape.vocab:
        raise ValueError(f"{vocab_source}: {len(vocab['tokens'])} tokens, a Gemma 3 vocabulary has {shape.vocab}")
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "gemma3")
    u = w.add_uint32
    u("general.file_type", 15)  # MOSTLY_Q4_K_M
    u("general.quantization_version", 2)
    u("gemma3.context_length", 131072)
    u("gemma3.embedding_length", shape.embedding)
    u("gemma3.block_count", shape.blocks)
    u("gemma3.feed_forward_length", shape.ffn)
    u("gemma3.attention.head_count", shape.heads)
    u("gemma3.attention.head_count_kv", shape.kv_heads)
    u("gemma3.attention.key_length", shape.head_dim)
    u("gemma3.attention.value_length", shape.head_dim)
    u("gemma3.attention.sliding_window", 1024)
    w.add_float32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("gemma3.rope.local.freq_base", 10000.0)
    w.add_float32("gemma3.rope.global.freq_base", 1e6)
    if vision:
        u("gemma3.mm.tokens_per_image", 256)
        u("gemma3.vision.block_count", shape.vision_blocks)
        u("gemma3.vision.embedding_length", shape.vision_embedding)
        u("gemma3.vision.feed_forward_length", shape.vision_ffn)
        u("gemma3.vision.image_size", shape.image_size)
        u("gemma3.vision.patch_size", shape.patch)
        u("gemma3.vision.num_channels", 3)
        u("gemma3.vision.attention.head_count", 16)
        w.add_float32("gemma3.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_string("general.description", note)
    _add_vocab(w, vocab)

    specs = tensor_specs(shape, vision)
    quant = {"q4k": (T.Q4_K, Q4_K_BYTES), "q6k": (T.Q6_K, Q6_K_BYTES)}
    for name, dims, kind in specs:  # declare every tensor, then stream the data one by one
        if kind in quant:
            rows, cols = dims
            qtype, per_block = quant[kind]
            nbytes = rows * cols // QK * per_block
            w.add_tensor_info(name, (rows, cols // QK * per_block), np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        else:
            dt = np.dtype(np.float16 if kind == "f16" else np.float32)
            w.add_tensor_info(name, dims, dt, int(np.prod(dims)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total = 0
    for name, dims, kind in specs:
        if kind == "q4k":
            data = q4k_blocks(rng, *dims)
        elif kind == "q6k" and name == "token_embd.weight":
            data = q6k_blocks(rng, *dims, d=1e-4, zero_rows=(EOS, END_OF_TURN))
        elif kind == "q6k":
            data = q6k_blocks(rng, *dims)
        elif kind == "one":
            data = np.ones(dims, np.float32)
        elif kind == "zero":
            data = np.zeros(dims, np.float32)
        else:
            data = (rng.standard_normal(dims, np.float32) * 0.02).astype(np.float16)
        total += data.nbytes
        w.write_tensor_data(data)
    w.close()
    return {"tensors": len(specs), "data_bytes": total}
