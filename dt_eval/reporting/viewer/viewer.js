"use strict";
// dt-eval view. All text from the runs is put on the page with textContent (via el()), never as
// markup: model outputs are untrusted. Only the current page of samples is in the DOM.
(function () {
  const DATA = JSON.parse(document.getElementById("dt-data").textContent);
  const ROWS = DATA.rows;
  const PAGE_SIZE = 50;
  const SCORED_WRONG = new Set(["wrong", "unparsed", "truncated", "error"]);
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function option(value, text) {
    return el("option", { value: value }, text);
  }

  function fill(select, options) {
    select.replaceChildren(...options.map(([v, t]) => option(v, t)));
  }

  const unique = (xs) => Array.from(new Set(xs));
  const fmt = (x, d) => (typeof x === "number" && isFinite(x) ? x.toFixed(d) : "–");
  const catKey = (field, value) => field + ": " + value;

  // ------------------------------------------------------------------------------ header
  function renderRuns() {
    const box = $("runs");
    const table = el("table", { class: "summary" },
      el("thead", null, el("tr", null,
        ["run", "task", "samples", "accuracy (95% CI)", "correct", "wrong", "unparsed", "truncated", "errors",
         "data errors", "ungraded", "reasoning scores"].map((h) => el("th", null, h)))));
    const body = el("tbody");
    DATA.runs.forEach((run, r) => {
      for (const [task, s] of Object.entries(run.tasks)) {
        const c = s.counts;
        body.append(el("tr", { "data-run": r, "data-task": task },
          el("td", { title: run.path }, el("span", { class: "run-tag run-" + (r % 6) }, String.fromCharCode(65 + (r % 26))), " ", run.label),
          el("td", null, task), el("td", null, s.samples),
          el("td", { class: "acc", title: s.accuracy_text || "" },
            s.accuracy ? fmt(s.accuracy.accuracy, 2) + " [" + fmt(s.accuracy.ci_low, 2) + ", " + fmt(s.accuracy.ci_high, 2) + "] " +
              (s.accuracy.method === "wilson" ? "Wilson" : "Wilson, effective n") : "–"),
          el("td", null, c["correct"]), el("td", null, c["wrong"]), el("td", null, c["unparsed"]),
          el("td", null, c["truncated"]), el("td", null, c["error"]), el("td", null, c["data error"]),
          el("td", null, c["ungraded"]), el("td", null, run.cot_scorers.join(", ") || "–")));
      }
      if (run.dropped_lines) {
        body.append(el("tr", null, el("td", { colspan: 12, class: "warn" },
          run.label + ": " + run.dropped_lines + " unreadable samples.jsonl line(s) left out")));
      }
    });
    table.append(body);
    box.replaceChildren(table, el("p", { class: "note" },
      "Accuracy over the scored samples, each item's repeats averaged; 95% CI: Wilson score interval " +
      "(one sample per item; with repeats at the effective sample size). The official tables are in `dt-eval report`."));
  }

  // ------------------------------------------------------------------------------ one sample
  function statusBadge(row) {
    return el("span", { class: "badge st-" + row.status.replace(" ", "-") }, row.status + (row.ambiguous ? " (ambiguous)" : ""));
  }

  function textBlock(cls, title, text, open) {
    if (text === null || text === undefined || text === "") return null;
    const d = el("details", { class: cls }, el("summary", null, title + " (" + text.length + " chars)"), el("pre", null, text));
    if (open) d.open = true;
    return d;
  }

  function cotBlock(row) {
    if (!row.cot.length) return null;
    const table = el("table", { class: "cot" },
      el("thead", null, el("tr", null, el("th", null, "reasoning scorer"), el("th", null, "score"), el("th", null, "components"))));
    const body = el("tbody");
    const rationales = [];
    for (const c of row.cot) {
      const comps = Object.entries(c.components).filter(([, v]) => v !== null && typeof v !== "object")
        .map(([k, v]) => k + "=" + (typeof v === "number" ? +v.toFixed(4) : v)).join(", ");
      body.append(el("tr", { "data-scorer": c.scorer },
        el("td", null, c.scorer + (c.judge_model ? " (" + c.judge_model + ")" : "")),
        el("td", null, c.value === null || c.value === undefined ? "unscored" : fmt(c.value, 3)),
        el("td", null, comps + (c.error ? " · " + c.error : ""))));
      c.rationale.forEach((t, i) => rationales.push("[" + c.scorer + (c.rationale.length > 1 ? " #" + (i + 1) : "") + "]\n" + t));
    }
    table.append(body);
    return el("div", { class: "cot-box" }, table,
      rationales.length ? textBlock("rationale", "Judge's rationale", rationales.join("\n\n"), false) : null);
  }

  function audioBlock(row) {
    if (row.audio !== null && row.audio !== undefined) {
      return el("div", { class: "audio" }, el("audio", { controls: true, preload: "none", src: DATA.audio[row.audio] }),
        el("span", { class: "muted" }, DATA.audio_names[row.audio]));
    }
    return row.audio_note ? el("div", { class: "audio muted" }, row.audio_note) : null;
  }

  function card(row, compact) {
    const labels = DATA.labels[row.task] || "ABCDEFGHIJ";
    const groups = Object.entries(row.groups || {}).filter(([, v]) => v).map(([k, v]) => k + ": " + v).join(" · ");
    const choices = row.choices.length ? el("ol", { class: "choices" }, row.choices.map((c, i) =>
      el("li", { class: [c === row.gold ? "gold" : "", i === row.matched ? "picked" : ""].join(" ").trim() || null },
        el("b", null, "(" + (labels[i] || i + 1) + ") "), c))) : null;
    const tokens = [
      row.prompt_tokens !== null && row.prompt_tokens !== undefined ? "prompt " + row.prompt_tokens + " tok" : null,
      row.completion_tokens !== null && row.completion_tokens !== undefined ? "completion " + row.completion_tokens + " tok" : null,
      typeof row.latency_s === "number" ? "latency " + row.latency_s.toFixed(2) + " s" : null,
      row.finish_reason ? "finish: " + row.finish_reason : null,
      row.correct_raw === null ? null : "official raw: " + (row.correct_raw ? "right" : "wrong"),
    ].filter(Boolean).join(" · ");
    return el("article", { class: "sample st-" + row.status.replace(" ", "-"), "data-key": row.key, "data-status": row.status, "data-run": row.run },
      el("header", null, statusBadge(row), " ",
        DATA.runs.length > 1 && !compact ? el("span", { class: "run-tag run-" + (row.run % 6), title: DATA.runs[row.run].label }, String.fromCharCode(65 + (row.run % 26))) : null, " ",
        el("b", null, row.task), " · ", el("code", null, row.id), " · repeat " + row.repeat,
        groups ? el("span", { class: "muted" }, " · " + groups) : null),
      compact ? null : el("div", { class: "question" }, row.question),
      compact ? null : choices,
      compact ? null : audioBlock(row),
      el("div", { class: "answers" },
        el("span", null, "extracted: ", el("b", { class: "extracted" }, row.extracted === null ? "—" : row.extracted)),
        el("span", null, "gold: ", el("b", { class: "gold-answer" }, row.gold === null ? "—" : row.gold))),
      row.error ? el("div", { class: "error-msg" }, row.error) : null,
      row.warnings.length ? el("div", { class: "warn" }, row.warnings.join("; ")) : null,
      tokens ? el("div", { class: "muted" }, tokens) : null,
      textBlock("reasoning", "Reasoning", row.reasoning, false),
      el("div", { class: "output" }, el("div", { class: "label" }, "Raw output"),
        el("pre", null, row.output === null || row.output === "" ? "(empty)" : row.output)),
      textBlock("prompt", "Prompt as sent", row.prompt, false),
      cotBlock(row));
  }

  // ------------------------------------------------------------------------------ samples tab
  const state = { run: "all", task: "all", cat: "all", status: "all", repeat: "all", q: "", page: 0 };
  let haystack = null;
  function hay(i) {
    if (!haystack) haystack = new Array(ROWS.length);
    if (haystack[i] === undefined) {
      const r = ROWS[i];
      haystack[i] = [r.id, r.key, r.question, r.choices.join("\n"), r.output, r.reasoning, r.extracted, r.gold,
        r.error, r.cot.map((c) => c.rationale.join("\n")).join("\n")].filter(Boolean).join("\n").toLowerCase();
    }
    return haystack[i];
  }

  function matches(r, i) {
    if (state.run !== "all" && String(r.run) !== state.run) return false;
    if (state.task !== "all" && r.task !== state.task) return false;
    if (state.cat !== "all" && !Object.entries(r.groups || {}).some(([k, v]) => catKey(k, v) === state.cat)) return false;
    if (state.repeat !== "all" && String(r.repeat) !== state.repeat) return false;
    if (state.status === "scored-wrong") {
      if (!SCORED_WRONG.has(r.status)) return false;
    } else if (state.status !== "all" && r.status !== state.status) return false;
    if (state.q && !hay(i).includes(state.q)) return false;
    return true;
  }

  function pager(box, page, pages, go) {
    box.replaceChildren(
      el("button", { class: "prev", disabled: page <= 0 }, "‹ prev"),
      el("span", { class: "page-no" }, " page " + (pages ? page + 1 : 0) + " of " + pages + " "),
      el("button", { class: "next", disabled: page >= pages - 1 }, "next ›"));
    box.querySelector(".prev").addEventListener("click", () => go(page - 1));
    box.querySelector(".next").addEventListener("click", () => go(page + 1));
  }

  function renderSamples() {
    const hits = [];
    ROWS.forEach((r, i) => { if (matches(r, i)) hits.push(i); });
    const pages = Math.ceil(hits.length / PAGE_SIZE);
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    const start = state.page * PAGE_SIZE;
    const shown = hits.slice(start, start + PAGE_SIZE);
    $("list").replaceChildren(...shown.map((i) => card(ROWS[i], false)));
    const count = $("count");
    count.dataset.count = hits.length;
    count.textContent = hits.length
      ? "samples " + (start + 1) + "–" + (start + shown.length) + " of " + hits.length + " (" + ROWS.length + " in all)"
      : "no samples match (" + ROWS.length + " in all)";
    const go = (p) => { state.page = p; renderSamples(); window.scrollTo(0, 0); };
    pager($("pager"), state.page, pages, go);
    pager($("pager-bottom"), state.page, pages, go);
  }

  function setupSamples() {
    fill($("f-run"), [["all", "all runs"]].concat(DATA.runs.map((r, i) => [String(i), String.fromCharCode(65 + (i % 26)) + ": " + r.label])));
    fill($("f-task"), [["all", "all tasks"]].concat(unique(ROWS.map((r) => r.task)).map((t) => [t, t])));
    const cats = unique(ROWS.flatMap((r) => Object.entries(r.groups || {}).filter(([, v]) => v).map(([k, v]) => catKey(k, v)))).sort();
    fill($("f-cat"), [["all", "all categories"]].concat(cats.map((c) => [c, c])));
    fill($("f-status"), [["all", "all samples"], ["scored-wrong", "wrong only (wrong, unparsed, truncated, error)"],
      ["correct", "correct"], ["wrong", "wrong answer"], ["unparsed", "unparsed"], ["truncated", "truncated"],
      ["error", "errors"], ["data error", "data errors"], ["ungraded", "ungraded"]]);
    fill($("f-repeat"), [["all", "all repeats"]].concat(unique(ROWS.map((r) => r.repeat)).sort((a, b) => a - b).map((r) => [String(r), String(r)])));
    for (const [id, key] of [["f-run", "run"], ["f-task", "task"], ["f-cat", "cat"], ["f-status", "status"], ["f-repeat", "repeat"]]) {
      $(id).addEventListener("change", (e) => { state[key] = e.target.value; state.page = 0; renderSamples(); });
    }
    let timer = null;
    $("f-search").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = e.target.value.trim().toLowerCase(); state.page = 0; renderSamples(); }, 120);
    });
  }

  // ------------------------------------------------------------------------------ flipped tab
  const flip = { a: "0", b: "1", task: "all", dir: "both", page: 0 };
  let byRun = null;
  function itemsByRun() {
    if (!byRun) {
      byRun = DATA.runs.map(() => new Map());
      ROWS.forEach((r, i) => {
        const k = r.task + "\u0000" + r.id;
        const m = byRun[r.run];
        if (!m.has(k)) m.set(k, []);
        m.get(k).push(i);
      });
    }
    return byRun;
  }

  // an item's accuracy in one run: its graded repeats averaged (null: none graded)
  function itemScore(idx) {
    const graded = idx.filter((i) => ROWS[i].correct !== null);
    if (!graded.length) return null;
    return graded.reduce((s, i) => s + (ROWS[i].correct ? 1 : 0), 0) / graded.length;
  }

  function renderFlipStats(la, lb) {
    const pair = DATA.comparisons[flip.a + "," + flip.b] || {};
    const tasks = Object.keys(pair);
    if (!tasks.length) { $("flip-stats").replaceChildren(); return; }
    const signed = (x) => (x > 0 ? "+" : "") + fmt(x, 2);
    const table = el("table", { class: "summary" },
      el("thead", null, el("tr", null, ["task", "shared items", la + " acc", lb + " acc", lb + " − " + la + " (95% CI, paired bootstrap)",
        "paired test", la + " wrong → " + lb + " right", la + " right → " + lb + " wrong"].map((h) => el("th", null, h)))),
      el("tbody", null, tasks.map((t) => {
        const c = pair[t];
        return el("tr", { "data-task": t },
          el("td", null, t), el("td", null, c.n_shared), el("td", null, fmt(c.acc_a, 2)), el("td", null, fmt(c.acc_b, 2)),
          el("td", { class: "diff" }, signed(c.diff) + " [" + signed(c.ci_low) + ", " + signed(c.ci_high) + "]"),
          el("td", { class: "p" }, c.p_text + " (" + c.test + ")"),
          el("td", null, c.a_wrong_b_right), el("td", null, c.a_right_b_wrong));
      })));
    $("flip-stats").replaceChildren(table);
  }

  function renderFlips() {
    const maps = itemsByRun();
    const A = maps[+flip.a], B = maps[+flip.b];
    let shared = 0, up = 0, down = 0;
    const hits = [];
    for (const [k, ia] of A) {
      const ib = B.get(k);
      if (!ib) continue;
      const sa = itemScore(ia), sb = itemScore(ib);
      if (sa === null || sb === null) continue;
      shared++;
      if (sa === sb) continue;
      const dir = sb > sa ? "gained" : "lost";
      dir === "gained" ? up++ : down++;
      if (flip.task !== "all" && ROWS[ia[0]].task !== flip.task) continue;
      if (flip.dir !== "both" && flip.dir !== dir) continue;
      hits.push({ k, ia, ib, sa, sb, dir });
    }
    const pages = Math.ceil(hits.length / PAGE_SIZE);
    flip.page = Math.max(0, Math.min(flip.page, pages - 1));
    const shown = hits.slice(flip.page * PAGE_SIZE, (flip.page + 1) * PAGE_SIZE);
    const la = String.fromCharCode(65 + (+flip.a % 26)), lb = String.fromCharCode(65 + (+flip.b % 26));
    renderFlipStats(la, lb);
    $("flip-list").replaceChildren(...shown.map((h) => {
      const first = ROWS[h.ia[0]];
      return el("div", { class: "flip-row " + h.dir, "data-item": first.task + "/" + first.id, "data-dir": h.dir },
        el("div", { class: "flip-head" },
          el("span", { class: "badge " + (h.dir === "gained" ? "st-correct" : "st-wrong") },
            h.dir === "gained" ? la + " wrong → " + lb + " right" : la + " right → " + lb + " wrong"),
          " ", el("b", null, first.task), " · ", el("code", null, first.id),
          el("span", { class: "muted" }, " · " + la + " " + fmt(h.sa * 100, 0) + "% → " + lb + " " + fmt(h.sb * 100, 0) + "%")),
        el("div", { class: "question" }, first.question),
        first.choices.length ? el("ol", { class: "choices" }, first.choices.map((c, i) =>
          el("li", { class: c === first.gold ? "gold" : null }, el("b", null, "(" + ((DATA.labels[first.task] || "ABCDEFGHIJ")[i] || i + 1) + ") "), c))) : null,
        audioBlock(first),
        el("div", { class: "sides" },
          el("div", { class: "side side-a" }, el("h3", null, la + ": " + DATA.runs[+flip.a].label), h.ia.map((i) => card(ROWS[i], true))),
          el("div", { class: "side side-b" }, el("h3", null, lb + ": " + DATA.runs[+flip.b].label), h.ib.map((i) => card(ROWS[i], true)))));
    }));
    const count = $("flip-count");
    count.dataset.count = hits.length;
    count.dataset.gained = up;
    count.dataset.lost = down;
    count.textContent = "of " + shared + " shared items, " + (up + down) + " flipped: " + up + " " + la + " wrong → " + lb +
      " right, " + down + " " + la + " right → " + lb + " wrong" + (hits.length !== up + down ? "; " + hits.length + " shown by the filters" : "") +
      " (with repeats: the item's repeat-averaged accuracy went up or down)";
    pager($("flip-pager"), flip.page, pages, (p) => { flip.page = p; renderFlips(); window.scrollTo(0, 0); });
  }

  function setupFlips() {
    if (DATA.runs.length < 2) return;
    $("tab-flips").hidden = false;
    const runs = DATA.runs.map((r, i) => [String(i), String.fromCharCode(65 + (i % 26)) + ": " + r.label]);
    fill($("flip-a"), runs);
    fill($("flip-b"), runs);
    $("flip-b").value = "1";
    fill($("flip-task"), [["all", "all tasks"]].concat(unique(ROWS.map((r) => r.task)).map((t) => [t, t])));
    fill($("flip-dir"), [["both", "both ways"], ["gained", "A wrong → B right"], ["lost", "A right → B wrong"]]);
    for (const [id, key] of [["flip-a", "a"], ["flip-b", "b"], ["flip-task", "task"], ["flip-dir", "dir"]]) {
      $(id).addEventListener("change", (e) => { flip[key] = e.target.value; flip.page = 0; renderFlips(); });
    }
  }

  function showTab(name) {
    const flips = name === "flips";
    $("view-samples").hidden = flips;
    $("view-flips").hidden = !flips;
    $("tab-samples").setAttribute("aria-selected", String(!flips));
    $("tab-flips").setAttribute("aria-selected", String(flips));
    if (flips) renderFlips();
  }

  renderRuns();
  setupSamples();
  setupFlips();
  $("tab-samples").addEventListener("click", () => showTab("samples"));
  $("tab-flips").addEventListener("click", () => showTab("flips"));
  renderSamples();
  document.body.dataset.ready = "1";
})();
