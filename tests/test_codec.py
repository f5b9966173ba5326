import json

from hypothesis import given, settings
from hypothesis import strategies as st

from memgym.codecs import Mem0JsonCodec
from memgym.ops import Add, Delete, Noop, Update

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
