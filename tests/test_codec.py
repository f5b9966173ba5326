import importlib
import inspect
import itertools
import json
import pkgutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memgym.codecs
from memgym.codecs import Codec, Mem0JsonCodec, ParseResult
from memgym.ops import Add, Delete, Noop, Update, op_to_dict

codec = Mem0JsonCodec()
ids = st.integers(0, 999).map(str)
ops = st.lists(st.one_of(
    st.builds(Add, st.text()), st.builds(Update, ids, st.text()), st.builds(Delete, ids),
    st.just(Noop())), max_size=6)


@given(ops)
def test_roundtrip(op_list):
    assert codec.decode(codec.encode(op_list)).ops == tuple(op_list)


@settings(max_examples=500)
@given(st.text())
def test_arbitrary_text_never_raises(text):
    result = codec.decode(text)
    assert result.ok or (result.ops == () and 0 <= result.error.position <= len(text))


def test_lenient_forms_and_precise_errors():
    item = {"event": "ADD", "text": "Alice likes tea"}
    for text in ("```json\n" + json.dumps({"memory": [item]}) + "\n```",
                 json.dumps([item]), "Sure! " + json.dumps(item)):
        assert codec.decode(text).ops == (Add("Alice likes tea"),)
    assert codec.decode('{"memory": [{"id": 3, "event": "delete"}]}').ops == (Delete("3"),)
    err = codec.decode('{"memory": [{"event": "MOVE"}]}').error
    assert "MOVE" in err.reason and "memory[0]" in err.reason
    err = codec.decode('xx {"memory": [}').error
    assert err.position == 15 and "invalid JSON" in err.reason
    assert codec.decode("no json here").error.position == 0
    assert "needs an 'id'" in codec.decode('[{"event": "UPDATE", "text": "t"}]').error.reason
    assert codec.decode("[" * 100000).error is not None


def _codecs():
    """Every codec class of ``memgym.codecs`` (anything with a ``decode`` method), built with
    its defaults: a new codec module gets the fuzz tests below for free."""
    found = {}
    for module in pkgutil.iter_modules(memgym.codecs.__path__):
        mod = importlib.import_module(f"memgym.codecs.{module.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and callable(getattr(cls, "decode", None)) and (
                    cls is not Codec):
                found[name] = cls()
    return found


CODECS = _codecs()
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
PREFIXES = st.sampled_from(
    ["", '{"memory": [{"event": "ADD", "text": "', "<think>", "<search>", "<answer>",
     "<ranking>1,", '<tool_call>{"name": "search", "arguments": {"query": "',
     '<tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": "core", "content": "',
     "FINAL_ANSWER: ", "\\boxed{", "Updated memory: "])
ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.builds(lambda p, a, s, b: p + a + s + b, PREFIXES, st.text(max_size=40), SURROGATE,
              st.text(max_size=40)),
)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def test_the_codec_list_is_complete():
    assert {"Mem0JsonCodec", "MemAlphaCodec", "MemActCodec", "MemoryRewriteCodec",
            "BoxedAnswerCodec", "RankingCodec", "XmlTagsCodec"} <= set(CODECS)


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_any_text_decodes_to_a_parse_result_and_invalid_unicode_is_a_parse_error(name, text):
    result = CODECS[name].decode(text)
    assert isinstance(result, ParseResult)
    assert result.ok or (result.ops == () and 0 <= result.error.position <= len(text))
    if _has_surrogate(text):
        assert not result.ok and "not valid Unicode" in result.error.reason
        assert _has_surrogate(text[result.error.position])
    # nothing a codec returns can fail to encode (trajectory files, logs)
    json.dumps([op_to_dict(op) for op in result.ops], ensure_ascii=False).encode()
    if result.error is not None:
        result.error.reason.encode()


def test_json_escaped_lone_surrogates_are_parse_errors():
    """``\\ud800`` spelled as a JSON escape is valid text that decodes to invalid text: no codec
    lets it into an op or an error reason."""
    escaped = "a \\ud800 b"
    texts = [f'{{"memory": [{{"event": "ADD", "text": "{escaped}"}}]}}',
             f'{{"memory": [{{"event": "{escaped}"}}]}}',
             f'<tool_call>{{"name": "search", "arguments": {{"query": "{escaped}"}}}}</tool_call>',
             f'<tool_call>{{"name": "{escaped}", "arguments": {{}}}}</tool_call>',
             '<tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": "core", '
             f'"content": "{escaped}"}}}}</tool_call>']
    for (name, codec), text in itertools.product(CODECS.items(), texts):
        result = codec.decode(text)
        assert not any(_has_surrogate(json.dumps(op_to_dict(op), ensure_ascii=False))
                       for op in result.ops), (name, text)
        if result.error is not None:
            result.error.reason.encode()
    pair = '{"memory": [{"event": "ADD", "text": "\\ud83d\\ude00"}]}'  # a valid pair: an emoji
    assert Mem0JsonCodec().decode(pair).ops == (Add("\U0001F600"),)
