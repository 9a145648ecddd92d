"""`dt-eval view`: the page built from real run directories (a `dt-eval run` against the fault
server, the 0.1.0 fixture run, and two runs written by the real record builder on a fake benchmark
with real audio), its escaping of adversarial outputs, the local server's audio allow-list, and
(slow, browser) the page in headless Debian chromium: filters, search, the reasoning block, the
flipped view, no console errors; screenshots in test-artifacts/."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dt_eval.backends.base import Generation
from dt_eval.pipeline.records import make_sample_record
from dt_eval.reporting.viewer import ViewerError, build_page, load_runs_for_view
from dt_eval.reporting.viewer.page import script_json
from dt_eval.reporting.viewer.server import ViewServer
from dt_eval.storage.rundir import RunDir
from dt_eval.tasks.config import load_task
from dt_eval.tasks.data import load_task_data
from dt_eval.tasks.prompts import PromptSettings
from dt_eval.testing.synth_audio import make_fake_benchmark

from .cli import invoke
from .fault_server import FaultServer
from .paths import REPO

FIXTURE_RUN = REPO / "tests" / "fixtures" / "run-0.1.0"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# an output that would run script, load an image and break out of the data block if it were markup
ATTACK = ('</script><script>window.__pwned = 1</script><img src="http://127.0.0.1:9/x.png" '
          'onerror="window.__pwned = 2"><!-- (A) rising')


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="dt-data">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


# --------------------------------------------------------------------------------------------
# Run directories


def scripted_run(out: Path, bench: Path, answers: dict[int, str], model: str, thinking: str = "on",
                 cot: bool = False) -> Path:
    """A run over the fake MMAU benchmark, written by the real record builder from scripted
    generations. answers[i]: 'right', 'wrong', 'unparsed', 'truncated', 'error' or 'attack'."""
    cfg = load_task("mmau")
    loaded = load_task_data(cfg, bench)
    with RunDir(out) as rd:
        rd.write_config({"dt_eval_version": "0.1.0",
                         "identity": {"model": model, "seed": 0, "prompt": {"thinking": thinking},
                                      "sampling": {"temperature": 0.0, "max_tokens": 256}},
                         "tasks": {"mmau": loaded.to_json() | {"limit": None, "repeats": 1}}})
        for i, item in enumerate(loaded.items):
            right = item.choices.index(item.answer)
            wrong = 1 - right
            kind = answers.get(i, "right")
            gen = Generation(key=f"mmau/{item.id}/0", finish_reason="stop", prompt_tokens=100 + i,
                             completion_tokens=20 + i, latency_s=0.5 + i / 10)
            if kind in ("right", "wrong"):
                k = right if kind == "right" else wrong
                gen.text = f"<think>\nI hear the pitch of item {i}.\n</think>\n\n({'AB'[k]}) {item.choices[k]}"
            elif kind == "unparsed":
                gen.text = "<think>\nno idea which option\n</think>\n\n"  # nothing after the reasoning
            elif kind == "truncated":
                gen.text, gen.finish_reason = "<think>\nthe tone goes on and on and on", "length"
            elif kind == "error":
                gen.error, gen.completion_tokens, gen.latency_s = "HTTP 500 from the server: injected", None, None
            elif kind == "attack":
                gen.text = f"<think>\nreasoning {ATTACK}\n</think>\n\n{ATTACK}"
            rd.append([make_sample_record(cfg, i, item, 0, gen, [], PromptSettings())])
    if cot:
        lines = []
        for rec in (json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()):
            lines.append({"key": rec["key"], "task": "mmau", "id": rec["id"], "repeat": 0, "scorer": "hybrid",
                          "version": "hybrid-test", "value": 0.75 if rec["correct"] else 0.0,
                          "components": {"emb": 0.8, "llm": 0.7, "gate": int(bool(rec["correct"])), "w": 0.5},
                          "raw": [f"The chain for {rec['id']} is coherent. Score: 7 {ATTACK}"], "error": None,
                          "judge_calls": 1, "cached": False, "scored": True, "judge_model": "judge-x", "time": 0.0})
        (out / "cot.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


A_ANSWERS = {0: "right", 1: "wrong", 2: "unparsed", 3: "truncated", 4: "error", 5: "attack", 6: "right", 7: "wrong"}
B_ANSWERS = {0: "wrong", 1: "right", 2: "right", 3: "truncated", 4: "right", 5: "attack", 6: "right", 7: "wrong"}
# A -> B: item 0 right -> wrong; items 1, 2, 4 wrong/unparsed/error -> right


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    bench = make_fake_benchmark(root / "bench", "mmau", 8, seed=3)
    a = scripted_run(root / "run-a", bench, A_ANSWERS, "org/Model-A", cot=True)
    b = scripted_run(root / "run-b", bench, B_ANSWERS, "org/Model-B", thinking="off")
    return {"root": root, "bench": bench, "a": a, "b": b}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """`dt-eval run` against the fault server: one request fails (500, no retries), one comes back
    with no content (cut at the length limit); the others are the server's echo (no answer)."""
    root = tmp_path_factory.mktemp("real")
    bench = make_fake_benchmark(root / "bench", "mmau", 5, seed=2)
    run = root / "run"
    with FaultServer(script=["ok", "500", "ok_null_content"]) as srv:
        res = invoke(["run", "--tasks", "mmau", "--model", "fake-model", "--backend", "openai",
                                       "--base-url", srv.url, "--data-dir", f"mmau={bench}", "--output", str(run),
                                       "--no-progress", "--max-retries", "0", "--concurrency", "1"])
    assert res.exit_code == 1, res.output  # one sample failed
    return run


# --------------------------------------------------------------------------------------------
# The page's data


def test_page_from_a_real_run_directory(real_run):
    runs = load_runs_for_view([real_run])
    page = build_page(runs, "file")
    data = page_data(page.html)
    samples = [json.loads(x) for x in (real_run / "samples.jsonl").read_text().splitlines()]
    rows = {r["key"]: r for r in data["rows"]}
    assert set(rows) == {s["key"] for s in samples} and len(rows) == 5
    for s in samples:
        row = rows[s["key"]]
        assert row["question"] == s["meta"]["question"] and row["choices"] == s["meta"]["choices"]
        assert row["gold"] == s["meta"]["answer"] and row["output"] == s["output"]
        assert row["groups"] == {"task": s["meta"]["task"], "difficulty": s["meta"]["difficulty"],
                                 "sub-category": s["meta"]["sub-category"]}
        assert row["completion_tokens"] == s["completion_tokens"] and row["latency_s"] == s["latency_s"]
        # every clip exists (the fake benchmark wrote it) and plays from its file
        assert data["audio"][row["audio"]] == Path(s["audio"]).as_uri()
    statuses = sorted(r["status"] for r in data["rows"])
    assert statuses.count("error") == 1 and statuses.count("unparsed") >= 1
    err = next(r for r in data["rows"] if r["status"] == "error")
    assert "injected HTTP 500" in err["error"]
    summary = data["runs"][0]["tasks"]["mmau"]
    assert summary["counts"]["error"] == 1 and summary["samples"] == 5
    assert summary["accuracy"]["method"] == "wilson" and summary["accuracy"]["n"] == 5
    assert data["runs"][0]["label"] == "fake-model (think-on, T=0) · run"
    assert page.audio == sorted({Path(s["audio"]) for s in samples}, key=[Path(s["audio"]) for s in samples].index)


def test_page_from_the_0_1_0_fixture_run_with_reasoning_scores():
    data = page_data(build_page(load_runs_for_view([FIXTURE_RUN]), "file").html)
    assert len(data["rows"]) == 14 and {r["task"] for r in data["rows"]} == {"mmau", "mmsu"}
    assert {r["repeat"] for r in data["rows"]} == {0, 1}
    mmsu = next(r for r in data["rows"] if r["task"] == "mmsu")
    assert len(mmsu["choices"]) >= 2 and mmsu["gold"]  # choice columns and answer_gt, via the task config
    scored = [r for r in data["rows"] if r["cot"]]
    assert scored and all(c["scorer"] == "format" for r in scored for c in r["cot"])
    missing = next(r for r in data["rows"] if r["status"] == "error")
    assert missing["audio"] is None and missing["audio_note"].startswith("audio file not found: /tmp/legacy/")
    run = data["runs"][0]
    assert run["cot_scorers"] == ["format"]
    results = json.loads((FIXTURE_RUN / "results.json").read_text())
    for task, s in run["tasks"].items():  # the summary agrees with the run's official accuracy
        assert s["accuracy"]["accuracy"] == pytest.approx(results["tasks"][task]["accuracy_mean"])


def test_statuses_cot_and_labels(two_runs):
    data = page_data(build_page(load_runs_for_view([two_runs["a"], two_runs["b"]]), "file").html)
    a = {r["id"]: r for r in data["rows"] if r["run"] == 0}
    ids = list(a)
    got = [a[i]["status"] for i in ids]
    assert got == ["correct", "wrong", "unparsed", "truncated", "error", "wrong", "correct", "wrong"]
    assert a[ids[3]]["reasoning"] == "the tone goes on and on and on" and a[ids[3]]["finish_reason"] == "length"
    assert a[ids[0]]["reasoning"].strip() == "I hear the pitch of item 0." and a[ids[0]]["extracted"]
    hybrid = a[ids[0]]["cot"][0]
    assert hybrid["scorer"] == "hybrid" and hybrid["value"] == 0.75 and "coherent" in hybrid["rationale"][0]
    assert [r["label"] for r in data["runs"]] == ["Model-A (think-on, T=0) · run-a", "Model-B (think-off, T=0) · run-b"]
    assert data["runs"][0]["cot_scorers"] == ["hybrid"] and data["runs"][1]["cot_scorers"] == []
    # B against A on the 8 shared items: A right on 0 and 6, B on 1, 2, 4 and 6; flips 3 up, 1 down;
    # McNemar exact: 2 * (C(4,0) + C(4,1)) / 2^4 = 2 * 5/16 = 0.625
    cmp = data["comparisons"]["0,1"]["mmau"]
    assert (cmp["n_shared"], cmp["acc_a"], cmp["acc_b"], cmp["diff"]) == (8, 25.0, 50.0, 25.0)
    assert (cmp["a_wrong_b_right"], cmp["a_right_b_wrong"], cmp["p_value"]) == (3, 1, 0.625)
    assert cmp["method"] == "mcnemar-exact" and cmp["p_text"] == "p = 0.625" and cmp["ci_method"] == "paired-bootstrap"
    back = data["comparisons"]["1,0"]["mmau"]
    assert (back["diff"], back["a_wrong_b_right"], back["a_right_b_wrong"], back["p_value"]) == (-25.0, 1, 3, 0.625)


def test_adversarial_output_stays_text(two_runs):
    html = build_page(load_runs_for_view([two_runs["a"]]), "file").html
    data = page_data(html)
    attack_row = next(r for r in data["rows"] if ATTACK in (r["output"] or ""))
    assert ATTACK in attack_row["reasoning"] and ATTACK in attack_row["cot"][0]["rationale"][0]
    # the only script elements are the page's own two, and the markup never appears raw
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert "window.__pwned" in html and "<img" not in html and "<!--" not in html
    # the viewer's script never parses data as markup
    js = (REPO / "dt_eval" / "reporting" / "viewer" / "viewer.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)
    # the escaping keeps lone surrogates and line separators as JSON
    assert json.loads(script_json(["a\u2028b</script>", "\ud800"])) == ["a\u2028b</script>", "\ud800"]


def test_html_is_self_contained_and_embeds_audio_when_asked(two_runs, tmp_path):
    out = tmp_path / "page.html"
    res = invoke(["view", str(two_runs["a"]), "--html", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    # nothing from the network: no http(s) URL in any src/href, and a CSP that forbids it
    assert not re.search(r'(src|href)\s*=\s*["\']?https?:', html)
    assert "default-src 'none'" in html
    data = page_data(html)
    assert len(data["audio"]) == 8 and all(a.startswith("file:///") for a in data["audio"])
    embedded = tmp_path / "embedded.html"
    res = invoke(["view", str(two_runs["a"]), "--html", str(embedded), "--embed-audio"])
    assert res.exit_code == 0 and "embedded" in res.output
    import base64

    data = page_data(embedded.read_text())
    first = next(r for r in data["rows"] if r["audio"] is not None)
    # records are appended by worker threads in completion order: find the first clip by name
    clips = {Path(json.loads(line)["audio"]) for line in (two_runs["a"] / "samples.jsonl").read_text().splitlines()}
    wav = next(c for c in clips if c.name == data["audio_names"][0])
    assert first["audio"] == 0
    prefix = "data:audio/wav;base64,"
    assert data["audio"][0].startswith(prefix) and base64.b64decode(data["audio"][0][len(prefix):]) == wav.read_bytes()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ViewerError, match="not a dt-eval run directory"):
        load_runs_for_view([tmp_path])
    res = invoke(["view", str(tmp_path), "--html", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "not a dt-eval run directory" in res.output


# --------------------------------------------------------------------------------------------
# The local server


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_server_serves_the_page_and_only_the_runs_audio(two_runs):
    page = build_page(load_runs_for_view([two_runs["a"], two_runs["b"]]), "served")
    with ViewServer(page) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        status, body, headers = get(srv.url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        data = page_data(body.decode())
        assert data["audio"][0] == "audio/0" and len(data["audio"]) == 8  # both runs share the clips
        status, wav, headers = get(srv.url + "audio/0")
        assert status == 200 and wav == page.audio[0].read_bytes() and headers["Content-Type"] == "audio/wav"
        status, part, headers = get(srv.url + "audio/0", {"Range": "bytes=4-11"})
        assert status == 206 and part == wav[4:12] and headers["Content-Range"] == f"bytes 4-11/{len(wav)}"
        for bad in ("audio/8", "audio/-1", "audio/..%2fsamples.jsonl", "samples.jsonl", "etc/passwd",
                    "audio/0/../../config.json"):
            assert get(srv.url + bad)[0] == 404, bad
        # a request addressed to another host name (DNS rebinding) is refused
        assert get(srv.url, {"Host": "evil.example:80"})[0] == 403


def test_view_command_serves_and_prints_the_url(two_runs):
    """`dt-eval view RUN` (a real process) listens on a free port, prints the URL, stops on Ctrl-C."""
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "dt_eval.cli", "view", str(two_runs["a"]), str(two_runs["b"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "http://" not in line and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert m, (line, proc.poll())
        assert "16 samples" in line
        status, body, _ = get(m.group(0))
        assert status == 200 and len(page_data(body.decode())["rows"]) == 16
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def big_run(two_runs, tmp_path_factory):
    """3,200 samples: run A's records, each copied 400 times as other items (ids and keys)."""
    out = tmp_path_factory.mktemp("big") / "run-big"
    out.mkdir()
    shutil.copy(two_runs["a"] / "config.json", out / "config.json")
    recs = [json.loads(x) for x in (two_runs["a"] / "samples.jsonl").read_text().splitlines()]
    with open(out / "samples.jsonl", "w") as f:
        for k in range(400):
            for r in recs:
                f.write(json.dumps(r | {"id": f"{r['id']}-{k}", "key": f"mmau/{r['id']}-{k}/0"}) + "\n")
    return out


def test_big_run_page_builds(big_run):
    data = page_data(build_page(load_runs_for_view([big_run]), "file").html)
    assert len(data["rows"]) == 3200 and len(data["audio"]) == 8
    assert data["runs"][0]["tasks"]["mmau"]["counts"]["error"] == 400


# --------------------------------------------------------------------------------------------
# Browser: headless Debian chromium via Playwright


def _chromium() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("Debian chromium not installed (make setup-browser: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    return exe


def wait_data(page, element: str, key: str, value: object) -> None:
    """Wait until the element's data-KEY reads `value` (a function, not a string to eval: the
    page's Content-Security-Policy forbids eval, and it applies to Playwright's polling too)."""
    page.wait_for_function("([id, key, v]) => document.getElementById(id).dataset[key] === v",
                           arg=[element, key, str(value)])


def _exercise(page, shot_prefix: str, two: bool) -> None:
    """Filters, search, the reasoning block and (two runs) the flipped view, on observable state."""
    page.wait_for_selector("body[data-ready='1']")

    def count() -> int:
        return int(page.get_attribute("#count", "data-count"))

    cards = page.locator("#list article.sample")
    total = 16 if two else 8
    assert count() == total and cards.count() == total
    # the adversarial output is on the page as text, and did nothing
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#list pre", has_text="window.__pwned = 1").count() >= 1
    # wrong only: wrong, unparsed, truncated, error
    page.select_option("#f-status", "scored-wrong")
    expect_wrong = sum(1 for k in A_ANSWERS.values() if k != "right") + (
        sum(1 for k in B_ANSWERS.values() if k != "right") if two else 0)
    wait_data(page, "count", "count", expect_wrong)
    assert set(cards.evaluate_all("els => els.map(e => e.dataset.status)")) <= {"wrong", "unparsed", "truncated", "error"}
    # errors
    page.select_option("#f-status", "error")
    wait_data(page, "count", "count", '1')
    assert "injected" in cards.first.inner_text()
    page.select_option("#f-status", "truncated")
    wait_data(page, "count", "count", 2 if two else 1)
    page.select_option("#f-status", "all")
    # task filter, category filter, repeat filter
    page.select_option("#f-task", "mmau")
    wait_data(page, "count", "count", total)
    page.select_option("#f-cat", "task: music")  # items 1, 4, 7 of the fake benchmark
    wait_data(page, "count", "count", 6 if two else 3)
    page.select_option("#f-cat", "all")
    page.select_option("#f-repeat", "0")
    wait_data(page, "count", "count", total)
    # free-text search: a phrase of one reasoning chain
    page.fill("#f-search", "pitch of item 6")
    wait_data(page, "count", "count", 2 if two else 1)
    card = cards.first
    reasoning = card.locator("details.reasoning")
    assert reasoning.get_attribute("open") is None and not card.locator("details.reasoning pre").is_visible()
    reasoning.locator("summary").click()
    page.wait_for_function("() => document.querySelector('#list details.reasoning').open === true")
    assert card.locator("details.reasoning pre").inner_text().strip() == "I hear the pitch of item 6."
    assert card.locator(".gold-answer").inner_text() and card.locator("audio").count() == 1
    if not two:
        assert card.locator("table.cot td", has_text="hybrid").count() == 1
        card.locator("details.rationale summary").click()
        page.wait_for_function("() => document.querySelector('#list details.rationale').open === true")
        assert "coherent" in card.locator("details.rationale pre").inner_text()
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}-samples.png"), full_page=True)
    page.fill("#f-search", "")
    wait_data(page, "count", "count", total)
    if not two:
        assert page.locator("#tab-flips").is_hidden()
        return
    page.click("#tab-flips")
    page.wait_for_selector("#view-flips:not([hidden]) .flip-row")
    stats = page.locator("#flip-stats tr[data-task='mmau']")
    assert "p = 0.625 (McNemar exact test)" in stats.inner_text() and "+25.00 [" in stats.inner_text()
    fc = page.locator("#flip-count")
    assert (fc.get_attribute("data-gained"), fc.get_attribute("data-lost"), fc.get_attribute("data-count")) == ("3", "1", "4")
    rows = page.locator(".flip-row")
    assert rows.count() == 4
    lost = page.locator(".flip-row[data-dir='lost']")
    assert lost.count() == 1
    assert lost.locator(".side-a article").get_attribute("data-status") == "correct"
    assert lost.locator(".side-b article").get_attribute("data-status") == "wrong"
    page.select_option("#flip-dir", "gained")
    wait_data(page, "flip-count", "count", '3')
    assert set(page.locator(".flip-row .side-a article").evaluate_all("els => els.map(e => e.dataset.status)")) == {
        "wrong", "unparsed", "error"}
    assert set(page.locator(".flip-row .side-b article").evaluate_all("els => els.map(e => e.dataset.status)")) == {"correct"}
    page.select_option("#flip-dir", "both")
    wait_data(page, "flip-count", "count", '4')
    # swapping the runs swaps the directions
    page.select_option("#flip-a", "1")
    page.select_option("#flip-b", "0")
    wait_data(page, "flip-count", "gained", '1')
    page.select_option("#flip-a", "0")
    page.select_option("#flip-b", "1")
    wait_data(page, "flip-count", "gained", '3')
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}-flipped.png"), full_page=True)


def _watched_page(browser):
    """A new page, with the console errors/warnings, page errors and requests it will have."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    return page, problems, requests


@pytest.mark.slow
@pytest.mark.browser
def test_viewer_in_headless_chromium(two_runs, tmp_path):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    single = tmp_path / "one-run.html"
    res = invoke(["view", str(two_runs["a"]), "--html", str(single)])
    assert res.exit_code == 0, res.output
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            for name, target, two in (("viewer-html", single.as_uri(), False), ("viewer-served", None, True)):
                page, problems, requests = _watched_page(browser)
                if target is None:  # the served page: two runs, audio from the server
                    built = build_page(load_runs_for_view([two_runs["a"], two_runs["b"]]), "served")
                    with ViewServer(built) as srv:
                        page.goto(srv.url)
                        _exercise(page, name, two)
                        # the audio element plays what the server sends
                        page.locator("#list audio").first.evaluate("a => a.load()")
                        page.wait_for_function("() => document.querySelector('#list audio').readyState >= 1")
                        assert page.evaluate("document.querySelector('#list audio').duration") > 0.5
                        local = srv.url
                    assert all(u.startswith((local, "data:")) for u in requests), requests
                else:
                    page.goto(target)
                    _exercise(page, name, two)
                    assert all(u.startswith(("file:", "data:")) for u in requests), requests
                assert not problems, problems
                page.close()
        finally:
            browser.close()
    assert (ARTIFACTS / "viewer-served-flipped.png").stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.browser
def test_viewer_pages_through_thousands_of_samples(big_run, tmp_path):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "big.html"
    assert invoke(["view", str(big_run), "--html", str(out)]).exit_code == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page, problems, _ = _watched_page(browser)
            page.goto(out.as_uri())
            page.wait_for_selector("body[data-ready='1']")
            assert page.get_attribute("#count", "data-count") == "3200"
            assert page.locator("#list article.sample").count() == 50  # one page in the DOM, not 3,200
            page.locator("#pager .next").click()
            page.wait_for_function("() => document.getElementById('count').textContent.startsWith('samples 51–100 ')")
            page.select_option("#f-status", "error")
            wait_data(page, "count", "count", 400)
            failed = json.loads((big_run / "samples.jsonl").read_text().splitlines()[4])["id"].rsplit("-", 1)[0]
            page.fill("#f-search", f"{failed}-123/")  # one copy's key
            wait_data(page, "count", "count", 1)
            assert page.locator("#list article.sample").get_attribute("data-key") == f"mmau/{failed}-123/0"
            page.fill("#f-search", "no sample says this")
            wait_data(page, "count", "count", 0)
            assert page.locator("#list article.sample").count() == 0
            assert not problems, problems
        finally:
            browser.close()
