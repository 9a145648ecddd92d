"""Developer tools: offline test fixtures (tiny models, synthetic audio, fake benchmarks)."""
