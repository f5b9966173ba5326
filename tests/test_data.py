"""The data registry, `memgym data list` and `memgym data fetch` against a local HTTP mirror.

No network: a threaded ``http.server`` in the test serves a mirror built from the data files
found in the data dirs (``MIRROR/<data set>/<file>``); tests needing a file that is absent skip.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memgym.cli import app, main
from memgym.data import DATASETS, cache_dir, data_dirs, find_data_file, locate, sha256_of
from memgym.data_fetch import fetch
from memgym.errors import ChecksumError, DataFetchError, DataNotFoundError
from tests.conftest import ABSENT_DATA

LOCOMO = [f.path for f in DATASETS["locomo"].files]
FOUND = {path: locate(path) for path in LOCOMO}  # before any test hides the data dirs


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """``serve(directory) -> base URL`` of a threaded HTTP server over ``directory``."""
    servers = []

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0),
                                     functools.partial(_Quiet, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A mirror directory of locomo's two files, copied from the data dirs."""
    if missing := [p for p, found in FOUND.items() if found is None]:
        pytest.skip(f"needs {missing} in a data dir: `memgym data fetch locomo` gets it")
    root = tmp_path / "mirror"
    for path, found in FOUND.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, root / path)
    return root


@pytest.fixture
def no_data(tmp_path, monkeypatch) -> Path:
    """No data dir holds anything: a clone without ../shared; returns ``$MEMGYM_CACHE``."""
    monkeypatch.delenv("MEMGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("MEMGYM_NO_SHARED", "1")
    monkeypatch.setenv("MEMGYM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_and_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMGYM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "memgym"
    monkeypatch.setenv("MEMGYM_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("MEMGYM_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("MEMGYM_NO_SHARED", raising=False)
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    assert data_dirs() == [tmp_path / "d", shared, tmp_path / "c" / "data"]
    monkeypatch.setenv("MEMGYM_NO_SHARED", "1")
    assert data_dirs() == [tmp_path / "d", tmp_path / "c" / "data"]


def test_registered_files_present_match_their_pins():
    files = [f for d in DATASETS.values() for f in d.files]
    assert len({f.path for f in files}) == len(files) == 7
    present = [f for f in files if f.path not in ABSENT_DATA]
    if not present:
        pytest.skip("no registered data file in any data dir: `memgym data fetch all`")
    for f in present:
        assert f.path.split("/")[0] in DATASETS and f.url.startswith("https://")
        assert find_data_file(f.path) == locate(f.path)  # checks the pin


def test_missing_file_names_the_fetch_command(no_data):
    with pytest.raises(DataNotFoundError, match=r"memgym data fetch locomo` .*CC BY-NC") as err:
        find_data_file("locomo/locomo10.json")
    assert (err.value.relative, err.value.dataset) == ("locomo/locomo10.json", "locomo")
    with pytest.raises(DataNotFoundError, match="MEMGYM_DATA_DIR") as err:
        find_data_file("locomo/not_registered.json")
    assert err.value.dataset is None


def test_fetch_from_a_local_mirror(no_data, mirror, serve):
    url = serve(mirror)
    done = fetch("locomo", mirror=url)
    assert [(d.file.path, d.path, d.downloaded) for d in done] == [
        (p, no_data / "data" / p, True) for p in LOCOMO]
    assert all(sha256_of(d.path) == d.file.sha256 for d in done)
    assert find_data_file(LOCOMO[0]) == no_data / "data" / LOCOMO[0]
    assert sorted(p.name for p in (no_data / "data" / "locomo").iterdir()) == sorted(
        Path(p).name for p in LOCOMO)  # no temporary file left
    again = fetch("locomo", mirror=url + "nothing-here/")  # present: nothing downloaded
    assert [(d.path, d.downloaded) for d in again] == [(d.path, False) for d in done]


def test_corrupted_download_is_refused_and_leaves_nothing(no_data, mirror, serve, capsys,
                                                          monkeypatch):
    bad = mirror / LOCOMO[1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    url = serve(mirror)
    pin = DATASETS["locomo"].files[1].sha256
    with pytest.raises(ChecksumError, match=f"expected sha256 {pin}"):
        fetch("locomo", mirror=url)
    # the good first file was kept, the corrupted second one is nowhere
    assert [p.name for p in (no_data / "data" / "locomo").iterdir()] == [Path(LOCOMO[0]).name]
    monkeypatch.setattr("sys.argv", ["memgym", "data", "fetch", "locomo", "--mirror", url])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr().out.strip().splitlines()
    assert exit_info.value.code == 2
    assert out[-1].startswith("error: ") and "refused, nothing written" in out[-1]
    assert [p.name for p in (no_data / "data" / "locomo").iterdir()] == [Path(LOCOMO[0]).name]


def test_http_error_and_unknown_name_leave_nothing(no_data, tmp_path, serve):
    url = serve(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFetchError, match=r"404"):
        fetch("squad_v2", mirror=url)
    assert list((no_data / "data" / "squad_v2").iterdir()) == []
    with pytest.raises(DataFetchError, match=r"unknown data set 'nope'.*locomo, hotpotqa"):
        fetch("locomo", "nope", mirror=url)


def test_data_list_shows_every_set_status_and_source(no_data, mirror, monkeypatch):
    monkeypatch.setenv("MEMGYM_DATA_DIR", str(mirror))  # a mirror is laid out as a data dir
    ok, bad = DATASETS["locomo"].files
    (mirror / bad.path).write_text("not the file")
    result = CliRunner().invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    out = result.output
    for dataset in DATASETS.values():
        assert f"\n{dataset.name}: " in out and dataset.licence in out
        for f in dataset.files:
            assert f"sha256 {f.sha256}" in out and f"source {f.url}" in out
    assert f"  {ok.path}: present in {mirror}\n" in out
    assert f"  {bad.path}: BAD SHA256 in {mirror}\n" in out
    assert f"  {DATASETS['squad_v2'].files[0].path}: missing\n" in out
    assert f"downloads into {no_data / 'data'}" in out


_PROBE = '''
import pytest
from typer.testing import CliRunner
from memgym.cli import app
from memgym.data import find_data_file

def test_needs_locomo():
    find_data_file("locomo/locomo10.json")

def test_cli_needs_locomo():
    result = CliRunner().invoke(app, ["eval", "memgym/LoCoMoMemoryManager-v0", "--policy",
                                      "noop", "--episodes", "1"])
    assert result.exit_code == 0, result.output

def test_bug_after_reading_data():
    find_data_file("locomo/locomo10.json")
    assert False, "a genuine bug"

def test_unregistered_file_is_a_bug():
    find_data_file("locomo/locomo11.json")

@pytest.fixture(scope="module")
def conversations():  # its error is cached and raised again for the second test
    return find_data_file("locomo/locomo10.json")

def test_fixture_a(conversations):
    pass

def test_fixture_b(conversations):
    pass
'''


def test_absent_data_skips_and_fetching_it_makes_the_tests_run(no_data, mirror, serve,
                                                                 tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    probe.mkdir()
    shutil.copyfile(Path(__file__).with_name("conftest.py"), probe / "conftest.py")
    (probe / "test_probe.py").write_text(_PROBE)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    monkeypatch.setenv("COLUMNS", "1000")  # skip reasons in full

    def run() -> str:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                               "no:cacheprovider", str(probe)], cwd=probe,
                              capture_output=True, text=True, timeout=300)
        return done.stdout

    before = run()
    assert "1 failed, 5 skipped" in before, before
    assert "SKIPPED [5] " in before and "`memgym data fetch locomo` gets it" in before
    assert "a genuine bug" not in before and "locomo11.json not found" in before
    fetch("locomo", mirror=serve(mirror))
    after = run()
    assert "2 failed, 4 passed" in after and "a genuine bug" in after, after
