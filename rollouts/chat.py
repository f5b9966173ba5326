"""Token-faithful chat prompts: step k+1's prompt ids extend step k's prompt + completion ids.

A multi-turn env (``context_mode = "append"``) gives the policy its whole context as chat
messages every step. Rendering them with the model's chat template and tokenizing the text anew
would re-tokenize history: the sampled completion ids need not be the canonical tokenization of
their text, so the new prompt would not extend the old prompt + completion token for token and
every step would start a new training sample (verl found re-tokenized history kept PPO from
converging; prime-rl's renderers and SkyRL's step-wise mode keep the engine's ids instead).

:class:`ChatRenderer` keeps the engine's ids. After each generation it remembers, under the
conversation that now ends with the assistant's reply, the ids and text of prompt + completion.
When the next prompt's conversation continues one it remembers (same messages up to that reply)
and its templated text starts with the remembered text, its ids are the remembered ids followed
by the tokenization of the new text only (the template's end-of-turn, tool results, the next
assistant header). Anything else, a context edit included, is tokenized whole, which is exactly
where a new segment starts (DCPO).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from transformers import PreTrainedTokenizerBase

from memgym.engine import ChatMessages, Completion
from memgym.errors import EngineError


@dataclass(frozen=True)
class RenderedPrompt:
    """A chat prompt rendered for generation.

    Attributes:
        text: The chat-templated text, ending with the assistant header.
        ids: Its token ids (int); extends a remembered prompt + completion where possible.
    """

    text: str
    ids: tuple[int, ...]


def _key(messages: Sequence[dict]) -> bytes:
    """Digest of the roles and contents of ``messages`` (other keys do not identify a turn)."""
    canon = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ChatRenderer:
    """Renders chat prompts with a tokenizer's chat template, keeping earlier turns' token ids.

    Args:
        tokenizer: Tokenizer with a chat template.
        max_entries: Most remembered conversations (least recently used go first).

    Raises:
        EngineError: The tokenizer has no chat template.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_entries: int = 4096) -> None:
        if not tokenizer.chat_template:
            raise EngineError(f"{type(tokenizer).__name__} has no chat template")
        self.tokenizer, self.max_entries = tokenizer, max_entries
        self._memory: OrderedDict[bytes, tuple[str, tuple[int, ...]]] = OrderedDict()
        self._lock = threading.Lock()  # engines may be called from several threads

    def _encode(self, text: str) -> list[int]:
        # The template writes every special token itself (as apply_chat_template(tokenize=True)).
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, messages: ChatMessages) -> RenderedPrompt:
        """The prompt of ``messages`` with the assistant header (generation prompt).

        When the conversation up to its last assistant message was remembered by
        :meth:`record` and the new text starts with the remembered text, the ids are the
        remembered ids plus the new text's tokens; otherwise the whole text is tokenized.
        """
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        if last >= 0:
            key = _key(messages[:last + 1])
            with self._lock:
                known = self._memory.get(key)
                if known is not None:
                    self._memory.move_to_end(key)
            if known is not None and text.startswith(known[0]):
                return RenderedPrompt(text, known[1] + tuple(self._encode(text[len(known[0]):])))
        return RenderedPrompt(text, tuple(self._encode(text)))

    def record(self, messages: ChatMessages, prompt: RenderedPrompt, completion_ids: Sequence[int],
               completion_text: str) -> None:
        """Remember that ``messages`` (rendered as ``prompt``) were answered with
        ``completion_ids``, whose text without special tokens is ``completion_text`` (what the
        env will store as the assistant message)."""
        decoded = self.tokenizer.decode(list(completion_ids), skip_special_tokens=False)
        key = _key([*messages, {"role": "assistant", "content": completion_text}])
        with self._lock:
            self._memory[key] = (prompt.text + decoded, prompt.ids + tuple(completion_ids))
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def finish(self, prompts: Sequence[ChatMessages], rendered: Sequence[RenderedPrompt],
               completions: Sequence[Completion]) -> list[Completion]:
        """After a batch is generated: :meth:`record` each completion (``prompts[i]``, rendered
        as ``rendered[i]``, was answered with ``completions[i]``) and return the completions
        with their token ``offsets`` (:func:`token_offsets`)."""
        out = []
        for messages, prompt, completion in zip(prompts, rendered, completions, strict=True):
            self.record(messages, prompt, completion.completion_ids, completion.text)
            out.append(replace(completion, offsets=token_offsets(self.tokenizer,
                                                                 completion.completion_ids)))
        return out

    def completion_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as a finished assistant turn: its tokens and EOS (how a
        scripted action is recorded as if a model had written it)."""
        return [*self._encode(text), self.tokenizer.eos_token_id]


def token_offsets(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> tuple[int, ...]:
    """Where each token of a completion ends in its text: ``ends[i]`` is the length of
    ``decode(ids[:i + 1], skip_special_tokens=True)`` (incremental decoding, so a character
    split over several byte-level tokens is reached at its last token; special tokens add 0).

    Args:
        tokenizer: The tokenizer that produced ``ids``.
        ids: Completion token ids.

    Returns:
        ``len(ids)`` non-decreasing character offsets (int); the last is the text's length.
    """
    ends, top = [], 0
    for i in range(len(ids)):
        top = max(top, len(tokenizer.decode(list(ids[:i + 1]), skip_special_tokens=True)))
        ends.append(top)
    return tuple(ends)


def chat_prompt(observation: str, info: dict) -> ChatMessages:
    """The chat messages a policy sends for one step: the env's ``info["chat"]`` where it gives
    its context as messages (``context_mode = "append"`` envs), else the observation as one
    user message."""
    chat = info.get("chat")
    return list(chat) if chat else [{"role": "user", "content": observation}]
