import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from memgym import write_trajectories
from memgym.cli import app
from memgym.envs import baselines
from memgym.rollouts import run_episodes
from memgym.show import bank_view, build_timeline, new_input
from memgym.show_html import BANNER_COLOR, render_html

from .conftest import ENV_ID

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """store-all episodes (window 4): every step ADDs, the last step answers questions."""
    trajs = run_episodes(ENV_ID, {"window": 4}, baselines(ENV_ID)["store-all"](), [0, 1],
                         progress=False)
    return trajs, write_trajectories(trajs, tmp_path_factory.mktemp("show") / "t.parquet")


def test_timeline_reconstructs_bank_changes(episodes):
    trajs, _ = episodes
    timeline = build_timeline(trajs[0])
    assert timeline.memory_source == "bank" and not timeline.note
    assert [v.bank_size for v in timeline.steps] == [1, 2, 3, 4]
    first = trajs[0].steps[0].info["turn"]  # the turn after step 0 ...
    assert timeline.steps[1].memory == [("+", "1", f"{first['speaker']}: {first['text']}")]
    assert timeline.steps[1].new_input.startswith("New turn: ")  # the instructions are shared
    assert bank_view({"a": 1}) == {"a": "1"} and bank_view(["x"]) == {"0": "x"}
    assert new_input("head\nold tail", "head\nnew tail") == "new tail"
    assert new_input("", "abcdef", tail=3) == "…def"


def test_cli_show_prints_the_timeline(episodes, tmp_path):
    trajs, path = episodes
    out = tmp_path / "page.html"
    result = CliRunner().invoke(app, ["show", str(path), "--episode", trajs[1].id[:10],
                                      "--html", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"episode {trajs[1].id}" in text and "step 3 · bank 4" in text
    assert "ADD" in text and "applied (id 0)" in text and "+ [0]" in text
    assert "segment ends (overwrite)" in text and "segment ends (end)" in text
    assert "Q: " in text and "retrieved" in text and "qa=" in text
    assert out.is_file()
    assert CliRunner().invoke(app, ["show", str(path), "--episode", "zz"]).exit_code != 0


def test_html_is_self_contained(episodes):
    trajs, _ = episodes
    page = render_html(build_timeline(trajs[0]))
    assert page.count("<svg") == 3 and "<script" not in page.lower()
    # nothing loaded from elsewhere: only in-page references (#id) in src/href/url()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)|url\(\s*["']?(?!#)|@import|<link""",
                         page)
    assert f"<title>episode {trajs[0].id}" in page and 'id="title-banner"' in page
    assert page.count('class="segment-end"') == 4


def _chromium(*args, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium; "
                                              ".ci/run installs it)")
def test_html_renders_in_headless_chromium(episodes, tmp_path):
    trajs, path = episodes
    page = tmp_path / "page.html"
    assert CliRunner().invoke(app, ["show", str(path), "--html", str(page)]).exit_code == 0
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri(), tmp_path=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (900, 1200, 3)
    assert pixels.std() > 30  # not blank
    assert (pixels.min(axis=2) < 240).mean() > 0.15  # a good part of the page is not white
    banner = np.array([int(BANNER_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    is_banner = (np.abs(pixels - banner).max(axis=2) <= 8)
    assert is_banner[:80].mean() > 0.5  # the title banner is at the top ...
    assert is_banner[400:].mean() < 0.05  # ... and only there
    dom = _chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout
    banner_text = re.search(r'<header id="title-banner">(.*?)</header>', dom).group(1)
    assert banner_text == f"episode {trajs[0].id} · {ENV_ID} · store-all"
    assert dom.count("<svg") == 3


def test_terminal_control_sequences_in_model_text_are_shown_not_sent(tmp_path):
    """An action that would clear the screen, retitle the window and recolour the terminal, and
    a stored memory with a bell: `memgym show` prints them as visible \\xNN escapes."""
    import io

    from rich.console import Console

    from memgym.engine import Completion
    from memgym.show import render_terminal

    evil = ('\x1b[2J\x1b]0;pwned\x07{"memory": [{"event": "ADD", "text": "Ann\x1b[31m red '
            '\x07\x9b"}]}')

    class Evil:
        name = "evil\x1b[5m"

        def act(self, observations, infos):
            return [Completion(evil) for _ in observations]

    (traj,) = run_episodes(ENV_ID, {"window": 2}, Evil(), [0], progress=False)
    out = io.StringIO()
    render_terminal(build_timeline(traj), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in text and "\\x1b[31m red" in text
    result = CliRunner().invoke(app, ["show", str(write_trajectories([traj],
                                                                       tmp_path / "t.parquet"))])
    assert result.exit_code == 0 and "\x1b" not in result.output and "\\x1b[2J" in result.output
