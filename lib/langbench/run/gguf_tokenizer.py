"""A Hugging Face tokenizer directory made from a GGUF's own vocabulary, for a peer tool that
will not run without one (issue 43: AIPerf loads a tokenizer for every /v1/completions
benchmark, even with --use-server-token-count, and this host reaches no model hub).

    directory = ensure_tokenizer(paths.gguf_path())   # tokenizer.json + tokenizer_config.json

The GGUF holds what the server tokenizes with: `tokenizer.ggml.tokens`, their `scores`
(Gemma 3: minus the merge rank) and `token_type` (1 normal, 3 control, 4 user-defined, 6 byte).
They are written as a `tokenizers` BPE model whose merges are the splits of each piece ranked
by its score (SentencePiece BPE, as llama.cpp's SPM tokenizer and HF's converters read it), with
byte fallback, spaces as `▁`, and the control and user-defined pieces as added tokens; the BOS
the server adds (`add_bos_token`) is added here too. It is used for nothing that is read back:
every token count the peers' table takes from such a tool is the server's own usage. Made once
per GGUF (keyed by its sha256) in the per-user cache, under a lock.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from langbench import paths, storage
from langbench.run.provision import sha256_file

NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6


def tokenizer_dir(gguf: Path, digest: str) -> Path:
    return paths.cache_dir() / "peers" / "tokenizers" / f"{gguf.stem}-{digest[:12]}"


def vocabulary(gguf: Path) -> dict:
    """The GGUF's tokenizer fields: tokens, scores, types and the special ids."""
    import gguf as gg
    reader = gg.GGUFReader(str(gguf))

    def array(key: str) -> list:
        f = reader.fields[key]
        return [f.parts[i] for i in f.data]

    def scalar(key: str, default=None):
        f = reader.fields.get(key)
        return f.parts[f.data[0]][0].item() if f is not None else default

    model = bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode()
    if model != "llama":
        raise ValueError(f"{gguf.name}: tokenizer.ggml.model is {model!r}; only SentencePiece ('llama') "
                         "vocabularies are written as BPE merges")
    return {"tokens": [bytes(p).decode("utf-8") for p in array("tokenizer.ggml.tokens")],
            "scores": [float(p[0]) for p in array("tokenizer.ggml.scores")],
            "types": [int(p[0]) for p in array("tokenizer.ggml.token_type")],
            "bos": scalar("tokenizer.ggml.bos_token_id"), "eos": scalar("tokenizer.ggml.eos_token_id"),
            "unk": scalar("tokenizer.ggml.unknown_token_id", 0), "pad": scalar("tokenizer.ggml.padding_token_id"),
            "add_bos": bool(scalar("tokenizer.ggml.add_bos_token", True)),
            "space_prefix": bool(scalar("tokenizer.ggml.add_space_prefix", False))}


def merges(v: dict) -> list[list[str]]:
    """SentencePiece BPE as merges: every split (left, right) of a normal piece into two normal
    pieces, ranked by the piece's score (its merge rank), as llama.cpp's SPM tokenizer merges the
    adjacent pair whose join scores highest (HF's SentencePieceExtractor does the same)."""
    tokens, scores, types = v["tokens"], v["scores"], v["types"]
    ids = {t: i for i, t in enumerate(tokens) if types[i] == NORMAL}
    found = [(-scores[i], ids[t[:k]], ids[t[k:]]) for t, i in ids.items() for k in range(1, len(t))
             if t[:k] in ids and t[k:] in ids]
    found.sort()
    return [[tokens[left], tokens[right]] for _, left, right in found]


def tokenizer_json(v: dict) -> dict:
    """A `tokenizers` tokenizer.json (BPE with byte fallback) for the vocabulary `v`."""
    tokens, types = v["tokens"], v["types"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == CONTROL}
             for i, t in enumerate(tokens) if types[i] in (CONTROL, USER_DEFINED)]
    bos = tokens[v["bos"]] if v["bos"] is not None else None
    normalizers = ([{"type": "Prepend", "prepend": "▁"}] if v["space_prefix"] else []) + \
        [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    post = None
    if v["add_bos"] and bos is not None:
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [v["bos"]], "tokens": [bos]}}}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": normalizers}, "pre_tokenizer": None,
            "post_processor": post,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": tokens[v["unk"]],
                      "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges(v)}}


def ensure_tokenizer(gguf: Path, digest: str | None = None) -> Path:
    """The tokenizer directory of `gguf` from the cache, else written there once, under a lock."""
    digest = digest or (paths.GGUF_SHA256 if gguf == paths.gguf_path() else sha256_file(gguf))
    target = tokenizer_dir(gguf, digest)
    if (target / "tokenizer.json").exists():
        return target
    with storage.building(target.parent / "build.lock", f"the tokenizer of {gguf.name}",
                          waiting=lambda holder: print(f"peers: waiting for {holder}", file=sys.stderr)):
        if (target / "tokenizer.json").exists():
            return target
        started = time.monotonic()
        v = vocabulary(gguf)
        name = lambda i: v["tokens"][i] if i is not None else None
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(v["bos"]),
                  "eos_token": name(v["eos"]), "unk_token": name(v["unk"]), "pad_token": name(v["pad"]),
                  "add_bos_token": v["add_bos"], "clean_up_tokenization_spaces": False,
                  "source": {"gguf": str(gguf), "sha256": digest, "made_by": "langbench.run.gguf_tokenizer",
                             "model": "BPE: tokenizer.ggml.tokens, merges ranked by scores"}}
        tmp = target.with_name(target.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_json(v), ensure_ascii=False), encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
        tmp.replace(target)
        print(f"peers: tokenizer of {gguf.name} written in {time.monotonic() - started:.0f} s ({target})",
              file=sys.stderr)
    return target
