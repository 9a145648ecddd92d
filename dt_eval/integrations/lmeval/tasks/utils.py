# lm-eval loads this file for the `!function utils.*` entries of the dt_* task configs.
from functools import partial

from dt_eval.integrations.lmeval.taskfuncs import (  # noqa: F401
    doc_to_audio,
    doc_to_text,
    load_docs,
    process_results,
)

load_mmau = partial(load_docs, "mmau")
load_mmar = partial(load_docs, "mmar")
load_mmsu = partial(load_docs, "mmsu")
