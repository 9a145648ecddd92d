"""`dt-eval tasks`: the tasks on the search path, with item count, data source, metric and scorer."""

from __future__ import annotations

import argparse

from dt_eval.cli.common import add_tasks_dir, describe, echo, use_tasks_dirs

DESCRIPTION = """\
List the tasks: item count, data source, metric and scorer.

Tasks are YAML files: dt-eval's own, those in --tasks-dir folders and in $DT_EVAL_TASKS_PATH.
lm-eval's own generation tasks run too, as lm-eval:NAME (e.g. `dt-eval run --tasks
mmar,lm-eval:gsm8k`; needs the [lm-eval] extra: pip install 'dt-eval[lm-eval]')."""

EXAMPLES = """\
dt-eval tasks
dt-eval tasks --json --tasks-dir ./my-tasks
lm_eval --model dt-audio --include_path "$(dt-eval tasks --lm-eval-path)" --tasks dt_mmau ..."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("--json", dest="as_json", action="store_true", help="Machine-readable output.")
    p.add_argument("--lm-eval-path", action="store_true",
                   help="Print the folder of our lm-eval task configs (dt_mmau, dt_mmar, dt_mmsu) for "
                        "`lm_eval --include_path`, and nothing else.")
    add_tasks_dir(p)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    if args.lm_eval_path:
        from dt_eval.integrations.lmeval import tasks_path

        print(tasks_path())
        return
    from dt_eval.tasks.config import TaskConfigError, is_builtin_task, load_task, task_names, task_path

    use_tasks_dirs(args.tasks_dir)
    rows = []
    for name in task_names():
        try:
            cfg = load_task(name)
        except TaskConfigError as e:
            echo(f"warning: {e}", err=True)
            continue
        src = []
        if cfg.data.local:
            src.append(f"local {cfg.data.local.metadata}")
        if cfg.data.hub:
            src.append(f"hub {cfg.data.hub.dataset}")
        rows.append({
            "task": name,
            "title": cfg.title,
            "family": cfg.family.name,
            "items": cfg.data.expected_items,
            "source": " | ".join(src),
            "metric": cfg.metric if cfg.answers_available else "export only (answers hidden)",
            "scorer": cfg.scorer,
            "version": cfg.version,
            "description": cfg.description,
            "file": None if is_builtin_task(task_path(name)) else str(task_path(name)),
        })
    if args.as_json:
        import json

        print(json.dumps(rows, indent=2))
        return
    from tabulate import tabulate

    shown = ("task", "title", "items", "source", "metric", "version")
    with_file = any(r["file"] for r in rows)
    print(tabulate([{k: r[k] for k in shown} | ({"file": r["file"]} if with_file else {}) for r in rows],
                   headers="keys"))
    print("\nAlso: lm-eval:NAME runs lm-eval's generation task NAME (e.g. lm-eval:gsm8k); "
          "`dt-eval tasks --lm-eval-path` gives our tasks to lm_eval (--include_path, --model dt-audio).")
