from memgym.memory import MemoryBank
from memgym.ops import Add, Answer, Delete, Noop, Update, op_from_dict, op_to_dict


def test_ops_apply_and_reject_without_raising():
    bank = MemoryBank(max_entries=2, max_text_chars=20)
    r = bank.apply_all([Add("Alice likes tea"), Add("Bob runs")], step=0, provenance="D1:1")
    assert [x.id for x in r] == ["0", "1"] and all(x.applied for x in r)
    assert not bank.apply(Add("third"), 1).applied  # full
    assert bank.apply(Update("0", "Alice likes green tea"), 2, "D1:4").applied is False  # too long
    upd = bank.apply(Update("0", "Alice: green tea"), 2, "D1:4")
    assert upd.applied and bank.get("0").text == "Alice: green tea"
    assert bank.get("0").created_step == 0 and bank.get("0").updated_step == 2
    assert bank.get("0").provenance == "D1:4"
    bad = bank.apply(Delete("7"), 3)
    assert not bad.applied and "7" in bad.reason
    assert not bank.apply(Update("9", "x"), 3).applied
    assert not bank.apply(Add("   "), 3).applied
    assert not bank.apply(Answer("x"), 3).applied
    assert bank.apply(Noop(), 3).applied
    assert bank.apply(Delete("1"), 3).applied and len(bank) == 1
    # ids are never reused within an episode
    assert bank.apply(Add("Carol"), 4).id == "2"


def test_snapshot_restore_is_exact():
    bank = MemoryBank()
    bank.apply_all([Add("a fact"), Add("b fact")], 0)
    snap = bank.snapshot()
    bank.apply_all([Delete("0"), Update("1", "b changed"), Add("c fact")], 1)
    bank.restore(snap)
    assert bank.snapshot() == snap
    assert bank.apply(Add("d fact"), 2).id == "2"  # next id restored too


def test_op_dict_roundtrip():
    for op in [Add("x"), Update("1", "y"), Delete("2"), Noop(), Answer("z")]:
        assert op_from_dict(op_to_dict(op)) == op
