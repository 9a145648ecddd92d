"""trained_recipe: two-stage GRPO-family RL for audio LMs with dt-eval's hybrid reasoning reward.

The reward is dt-eval's own scoring code (dt_eval.pipeline.extract, dt_eval.scoring.official, dt_eval.reasoning):
one implementation, two callers. See trained_recipe/README.md. Heavy modules (torch,
transformers) load only when a trainer or policy is built.
"""

__version__ = "0.1.0"
