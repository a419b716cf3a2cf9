"""The words that the run and its readers share: what a record's fields mean, which factors are
the load rather than Ollama options, the default equivalence margins, the synthetic model's name,
and the error that bad input raises.

run/ writes with these, analysis/ and report/ read with them; neither side imports the other
(pyproject.toml, [tool.importlinter]), so what both must agree on lives here, below both.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """The parameter file cannot be used; the message names the file and the key."""


# Request-level fields: factors or fixed values that go at the top of the request beside the
# options, never into `options` (Ollama ignores them there, with "invalid option provided").
REQUEST_FIELDS = ("keep_alive", "think")

# Factors of the load, not Ollama options: never sent, kept on baseline rows too.
LOAD_FACTORS = ("concurrency", "arrival_rate_per_s")

# Factors of the workload and of where its requests go, not Ollama options: how the agent asks
# for actions and how it replays recorded conversations (workload: agent), the endpoint, the
# server kind. Never in `options`, kept on baseline rows too (both modes run the same tasks the
# same way, on the same endpoint and server).
WORKLOAD_FACTORS = ("actions", "replay", "endpoint", "server_kind")

# The endpoints: Ollama's own API (NDJSON) and the OpenAI-compatible /v1 (Server-Sent Events).
OLLAMA_ENDPOINTS = ("generate", "chat")
OPENAI_ENDPOINTS = ("openai-chat", "openai-completions")
ENDPOINTS = OLLAMA_ENDPOINTS + OPENAI_ENDPOINTS
ENDPOINT_PATHS = {"generate": "/api/generate", "chat": "/api/chat",
                  "openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions"}

# What /v1 carries of Ollama's options, under its own field names (Ollama v0.11.4,
# openai/openai.go fromChatRequest and fromCompleteRequest): every other option (num_ctx,
# num_gpu, num_thread, top_k, ...) has no field there, and neither have keep_alive, think or raw.
OPENAI_FIELDS = {"num_predict": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                 "seed": "seed", "stop": "stop", "frequency_penalty": "frequency_penalty",
                 "presence_penalty": "presence_penalty"}

# The embedded server kinds (`server.kind`): a factor when the parameter file lists both.
SERVER_KINDS = ("ollama", "llama-cpp")

# The replay server's profile (`python -m langbench profile RUN` writes one; server.kind: replay
# reads it): its `kind`, and the bound on the server's own lateness p99 above which a batch decides
# no client comparison, ms (DESIGN.md, "The replay server").
PROFILE_KIND = "langbench-replay-profile"
REPLAY_LATENESS_P99_MS = 0.2

# TOST equivalence margins, where the parameter file gives none.
MARGINS = {"throughput_pct": 2.0, "ttft_ms": 5.0, "overhead_ms": 0.5}

# The synthetic gemma3:latest-shaped model of the GPU study (gpuhost/gguf_synth.py writes it),
# and what the manifest and the report say of a run on it.
SYNTHETIC_MODEL = "gemma3-4b-shape-synthetic:q4_k_m"
MODEL_NOTE = ("synthetic weights with the shapes and quantization of gemma3:latest "
              "(Gemma 3 4B, Q4_K_M) and the real Gemma 3 vocabulary: speeds are real, text is not")
# Its text-only cut for llama.cpp's llama-server on a GPU (issue 42): llama.cpp wants the vision
# tower in a file of its own, and two blocks stream thousands of tok/s, a production server's pace.
SYNTHETIC_TEXT_MODEL = "gemma3-2block-text-synthetic:q4_k_m"
TEXT_MODEL_NOTE = ("synthetic weights with 2 of gemma3:latest's 34 blocks (its tensor shapes and Q4_K_M "
                   "quantization), no vision tower, and the first 4,096 tokens of the Gemma 3 vocabulary: "
                   "a small model served at a production server's pace; text is not real")
MODEL_NOTES = {SYNTHETIC_MODEL: MODEL_NOTE, SYNTHETIC_TEXT_MODEL: TEXT_MODEL_NOTE}
