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


def test_search_follows_every_op_and_survives_copies_and_restore():
    """The bank's index is edited per op; its results equal an index built anew over the
    bank's entries, also after a deepcopy (env snapshot) and a restore."""
    import copy

    from memgym.retrieval import BM25Index

    bank = MemoryBank()
    texts = ["Caroline went to the LGBTQ support group", "Melanie paints sunsets",
             "Caroline is a counselor", "Melanie ran a charity race", "the group met on Friday"]
    bank.apply_all([Add(t) for t in texts], step=0)
    bank.apply_all([Update("1", "Melanie paints lakes and sunsets"), Delete("2"),
                    Add("Caroline moved from Sweden")], step=1)

    def expected(b, query):
        entries = b.entries()
        return [(entries[i], s) for i, s in BM25Index([e.text for e in entries]).search(query, 3)]

    queries = ["Caroline support group", "sunsets Melanie", "Sweden counselor race"]
    for query in queries:
        assert bank.search(query, 3) == expected(bank, query)
    assert sorted(e.id for e, _ in bank.search("Caroline", 5)) == ["0", "5"]  # "2" deleted
    twin = copy.deepcopy(bank)
    snap = bank.snapshot()
    bank.apply(Delete("0"), step=2)
    for query in queries:
        assert twin.search(query, 3) == expected(twin, query)
        assert bank.search(query, 3) == expected(bank, query)
    assert "0" not in [e.id for e, _ in bank.search("Caroline", 5)]
    bank.restore(snap)
    for query in queries:
        assert bank.search(query, 3) == twin.search(query, 3) == expected(twin, query)
    bank.apply_all([Update("0", "Caroline left the group"), Add("Sweden in June")], step=3)
    for query in queries:  # the index rebuilt after the restore follows ops again
        assert bank.search(query, 3) == expected(bank, query)
