"""Recorded conversations to replay (issue 24, item 5), in the ShareGPT `conversations` shape:
one JSON object per line, `{"conversations": [{"from": "system"|"human"|"gpt", "value": TEXT}, ...]}`
(an `id` is kept when present). It is the shape that FastChat, vLLM's benchmarks and most
fine-tuning data sets already use, so a user's own logs replay without conversion.

`read_sharegpt` turns each into a chat message list; the agents replay it (jobs `replay:
fixed | regenerated`, DESIGN.md "Agent loops"), one request wherever an assistant message
would follow. The agents know nothing of ShareGPT: the conversion is the orchestrator's."""

from __future__ import annotations

import json
from pathlib import Path

ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ConversationError(ValueError):
    """A conversations file that cannot be replayed: the message names the line and the key."""


def read_sharegpt(path: str | Path) -> list[dict]:
    """[{"id": str, "line": int (1-based), "messages": [{"role", "content"}, ...]}], one per
    non-blank line, in file order (id: the line's `id`, else its line number). Raises
    ConversationError naming PATH:LINE and the key; OSError where the file cannot be read."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                doc = json.loads(line)
            except ValueError as e:
                raise ConversationError(f"{where}: not JSON: {e}") from None
            turns = doc.get("conversations") if isinstance(doc, dict) else None
            if not isinstance(turns, list) or not turns:
                raise ConversationError(f"{where}: 'conversations' must be a non-empty list")
            messages = []
            for i, t in enumerate(turns):
                if not (isinstance(t, dict) and t.get("from") in ROLES):
                    raise ConversationError(f"{where}: 'conversations[{i}].from' must be one of "
                                            f"{', '.join(sorted(ROLES))}")
                if not (isinstance(t.get("value"), str) and t["value"]):
                    raise ConversationError(f"{where}: 'conversations[{i}].value' must be a non-empty string")
                messages.append({"role": ROLES[t["from"]], "content": t["value"]})
            if messages[0]["role"] == "assistant":
                raise ConversationError(f"{where}: 'conversations[0]' is a gpt turn: a replay opens with the user")
            out.append({"id": str(doc.get("id", n)), "line": n, "messages": messages})
    return out


def requests_of(messages: list[dict]) -> int:
    """How many requests a replay of this conversation sends (the agents' replay_turns)."""
    return sum(m["role"] == "assistant" for m in messages) + (messages[-1]["role"] != "assistant")
