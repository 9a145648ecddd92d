"""Leaderboard publishing: measured runs beside published anchors, rendered as Markdown, CSV,
JSON, a static HTML page and plots, and verifiable against the runs' samples.jsonl.

    dt-eval leaderboard build RUN_DIR... --published leaderboard/published.yaml --out site/
    dt-eval leaderboard verify site/

Submodules: `build` (runs -> rows), `published` (published.yaml), `render` (outputs),
`verify` (recompute and compare); the commands live in dt_eval/cli/leaderboard.py. Importing
this package imports none of them (and never matplotlib).
"""
