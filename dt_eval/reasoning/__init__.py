"""Reasoning-quality scorers: the hybrid reasoning reward of Audio-DeepThinker and MMAR-Rubrics.

Pure library code (no dependency on the run machinery), batched and async, so an RL recipe can
call the same functions as its reward:

    from dt_eval.reasoning.types import CotInput
    from dt_eval.reasoning.judge import JudgeClient, JudgeConfig
    from dt_eval.reasoning.embedding import Embedder
    from dt_eval.reasoning import hybrid, rubrics, consistency, format

    async with JudgeClient(JudgeConfig(base_url=URL, model=NAME, cache_path="judge.sqlite")) as judge:
        scores = await hybrid.score_batch(items, judge, Embedder())        # gated 0.5*LLM + 0.5*emb
        stage2 = await hybrid.score_batch(items, judge, None, hybrid.HybridConfig(stage=2))
        rub = await rubrics.score_batch(items, judge)                       # MMAR-Rubrics, 5 raters

Every score is a `CotScore` with `value` in [0, 1] or None (unscored: counted, never 0 or 0.5).
`dt_eval.reasoning.rescore.rescore_run` applies the scorers to a finished run directory. Submodules
are not imported here: torch and sentence-transformers load only when an Embedder is built.
"""
