"""An OpenAI-compatible server for transformers checkpoints (CPU or GPU, no vLLM needed):
`python -m dt_eval.serving.hfserver --model DIR`."""
