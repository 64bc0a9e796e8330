"""llama.cpp, driven from Python without compiling anything.

* :mod:`.sources` finds llama.cpp's converter (``convert_hf_to_gguf.py`` + its vendored ``gguf-py``, from
  the llama-cpp-python source archive or a checkout) and a runtime library (``libllama``: a user's build,
  the prebuilt one in the ``xllamacpp`` wheel, or an installed llama-cpp-python).
* :mod:`.convert` runs the converter in a subprocess, with the base tokenizer's pre-tokenizer name for an
  extended byte-level vocabulary (llama.cpp #8649).
* :mod:`.session` drives the runtime through llama-cpp-python's pure-Python ctypes layer: tokenize,
  detokenize, logits at every position, greedy generation.
"""
