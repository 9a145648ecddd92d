"""Analysis figures on a leaderboard page: a training run's board built with the figures of a
`dt-eval analyze tokens` output (dt_eval.reporting.leaderboard.figures): copied beside the page,
shown with their captions, listed in leaderboard.json, and `verify` still passes."""

from __future__ import annotations

import json
import random

import pytest

from dt_eval.analyze import tokens
from dt_eval.reporting.leaderboard.build import build_leaderboard
from dt_eval.reporting.leaderboard.figures import FiguresError, attach_figures
from dt_eval.reporting.leaderboard.render import write_all
from dt_eval.reporting.leaderboard.verify import verify
from dt_eval.storage.rundir import RunDir

from .synthetic_meta import mmau_records
from .test_leaderboard import fake_run, write_bench

pytest.importorskip("matplotlib")


def _analysis_run(path, step: int):
    rng = random.Random(step)
    words = ["pitch", "rises", "falls", "tone", "loud", "soft", "the", "a"]
    recs = [{"key": f"mmar/{i}/0", "task": "mmar", "id": str(i), "repeat": 0, "output": "", "error": None,
             "reasoning_text": " ".join(rng.choice(words) for _ in range(12 + step))} for i in range(8)]
    with RunDir(path) as rd:
        rd.write_config({"identity": {"model": f"ckpt/step-{step}", "prompt": {}}})
        rd.append(recs)
    return path


@pytest.fixture
def board_with_figures(tmp_path):
    runs = [_analysis_run(tmp_path / f"eval{s}", s) for s in (0, 10, 20)]
    analysis = tmp_path / "analysis" / "tokens"
    result = tokens(runs, output=analysis, plots=True, say=lambda m: None)
    assert len(result["figures"]) == 3
    bench = write_bench(tmp_path, "mmau", mmau_records(12, 1))
    run = fake_run(tmp_path / "runs" / "step-20", {"mmau": bench}, 0.7)
    site = tmp_path / "site"
    lb = build_leaderboard([run], site)
    listed = attach_figures(lb, site, [analysis])
    write_all(lb, site, plots=False)
    return site, analysis, result, listed


def test_figures_are_copied_shown_and_verified(board_with_figures):
    site, analysis, result, listed = board_with_figures
    page = (site / "index.html").read_text()
    stored = json.loads((site / "leaderboard.json").read_text())["figures"]
    assert stored == listed and len(listed) == len(result["figures"])
    assert "<h2>Figures</h2>" in page
    for fig, src in zip(listed, result["figures"]):
        assert fig["file"] == f"figures/1-tokens/{src['file']}" and fig["caption"] == src["caption"]
        assert (site / fig["file"]).read_bytes() == (analysis / src["file"]).read_bytes()
        assert f'src="{fig["file"]}"' in page and src["caption"] in page
    assert verify(site, reextract=False).problems == []
    # the page is rendered from leaderboard.json: a figure section edited by hand is caught
    (site / "index.html").write_text(page.replace(listed[0]["caption"], "a better story"))
    assert any("index.html differs" in p for p in verify(site, reextract=False).problems)


def test_a_board_without_figures_has_no_section_and_bad_sources_are_refused(tmp_path, board_with_figures):
    _, analysis, result, _ = board_with_figures
    bench = write_bench(tmp_path, "mmau", mmau_records(6, 2))
    plain = build_leaderboard([fake_run(tmp_path / "runs" / "plain", {"mmau": bench}, 0.5)], tmp_path / "plain")
    write_all(plain, tmp_path / "plain", plots=False)
    assert "<h2>Figures</h2>" not in (tmp_path / "plain" / "index.html").read_text()
    with pytest.raises(FiguresError, match="no gating.json or tokens.json"):
        attach_figures(plain, tmp_path / "plain", [tmp_path / "runs"])
    (analysis / result["figures"][0]["file"]).unlink()
    with pytest.raises(FiguresError, match="not a file beside it"):
        attach_figures(plain, tmp_path / "plain", [analysis / "tokens.json"])


def test_cli_build_attaches_figures_and_warns_about_subsets(tmp_path):
    """`dt-eval leaderboard build --figures DIR`: the page lists the analysis figures; a subset run
    (--limit) is named in a warning on stderr."""
    from .cli import invoke

    runs = [_analysis_run(tmp_path / f"eval{s}", s) for s in (0, 10)]
    analysis = tmp_path / "analysis"
    tokens(runs, output=analysis, plots=True, say=lambda m: None)
    bench = write_bench(tmp_path, "mmau", mmau_records(12, 1))
    run = fake_run(tmp_path / "runs" / "sub", {"mmau": bench}, 0.7, limit=5)
    site = tmp_path / "site"
    out = invoke(["leaderboard", "build", run, "--out", site, "--no-plots", "--figures", analysis])
    assert out.exit_code == 0, out.output
    assert "warning:" in out.stderr and "subset: 5 of" in out.stderr
    assert json.loads((site / "leaderboard.json").read_text())["figures"]
    assert "<h2>Figures</h2>" in (site / "index.html").read_text()
    bad = invoke(["leaderboard", "build", run, "--out", tmp_path / "site2", "--no-plots",
                  "--figures", tmp_path / "nothing-here"])
    assert bad.exit_code == 2 and "error:" in bad.stderr
