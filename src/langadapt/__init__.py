"""langadapt: teach a pretrained language model a new language (SambaLingo and DictaLM 2.0 recipes)."""

__version__ = "0.1.0"
