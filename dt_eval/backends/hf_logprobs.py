"""Per-token log-probabilities during a transformers `generate()` (the hf backend, and through it
dt_eval.serving.hfserver), without keeping tokens x vocabulary logits.

`output_logits=True` would hold every step's (batch x vocabulary) logits until generate returns:
4096 steps x 8 rows x 152k vocabulary x 4 bytes = 20 GB for a Qwen-sized model. Instead a forward
hook on the model reads each step's raw logits (the distribution `output_logits` returns, before
any logits processor, temperature, top-k or top-p: like vLLM's default `raw_logprobs`) and
keeps only its entropy and top-K, and a stopping criterion, called once the step's token is
appended, keeps that token's log-probability. Per step that is a few numbers per row.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria

from dt_eval.types import TokenLogprobs


class StepRecorder(StoppingCriteria):
    """Pass as `stopping_criteria=[rec]` to generate inside `with rec:`; it never stops anything."""

    def __init__(self, model: Any, k: int):
        self.model, self.k = model, k
        self.entropy: list[torch.Tensor] = []  # per step: (batch,)
        self.chosen: list[torch.Tensor] = []  # per step: (batch,) log-probability of the appended token
        self.top_lp: list[torch.Tensor] = []  # per step: (batch, k)
        self.top_id: list[torch.Tensor] = []
        self._step: torch.Tensor | None = None  # this step's log-probabilities until its token is known
        self._handle: Any = None

    def __enter__(self) -> StepRecorder:
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        self._step = None

    def _on_forward(self, module: Any, args: Any, output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        self.entropy.append(torch.special.entr(logp.exp()).sum(-1))  # entr(0) = 0: masked entries are fine
        values, ids = logp.topk(min(self.k, logp.shape[-1]), dim=-1)
        self.top_lp.append(values)
        self.top_id.append(ids)
        self._step = logp

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self._step is None:  # a step without a forward this hook saw: report it, never guess
            raise RuntimeError("logprobs: the model's forward hook did not see this step's logits")
        self.chosen.append(self._step.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self._step = None
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def rows(self, tokenizer: Any, token_ids: list[list[int]]) -> list[TokenLogprobs]:
        """Row i's log-probabilities for its first len(token_ids[i]) generated tokens."""
        steps = len(self.chosen)
        if not steps or steps < max((len(t) for t in token_ids), default=0) or len(self.entropy) < steps:
            raise RuntimeError(f"logprobs: {steps} step(s) recorded for up to "
                               f"{max((len(t) for t in token_ids), default=0)} token(s)")
        entropy = torch.stack(self.entropy[:steps], 1).cpu().tolist()
        chosen = torch.stack(self.chosen, 1).cpu().tolist()
        top_lp = torch.stack(self.top_lp[:steps], 1).cpu().tolist()
        top_id = torch.stack(self.top_id[:steps], 1).cpu().tolist()
        memo: dict[int, str] = {}

        def text(i: int) -> str:
            if i not in memo:  # each token on its own, as servers report them
                memo[i] = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            return memo[i]

        out = []
        for r, ids in enumerate(token_ids):
            n = len(ids)
            out.append(TokenLogprobs(
                tokens=[text(t) for t in ids], logprob=chosen[r][:n], entropy=entropy[r][:n], k=None,
                top=[[(text(t), lp) for t, lp in zip(top_id[r][j], top_lp[r][j])] for j in range(n)]))
        return out
