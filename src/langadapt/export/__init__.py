"""Export stages: :mod:`.gguf` (llama.cpp's converter) and :mod:`.verify` (the check in a real llama.cpp runtime)."""
