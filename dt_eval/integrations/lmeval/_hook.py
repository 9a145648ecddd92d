"""Run by ``dt_eval_lm_eval.pth`` at interpreter start, only when the command is lm-eval's."""

from __future__ import annotations


def register_quietly() -> None:
    try:
        from dt_eval.integrations.lmeval import register

        register()
    except Exception:  # lm-eval missing or changed: never break the interpreter's start
        pass
