"""Config of the corpus stage (``corpus prepare``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from langadapt.config.base import ConfigError, TextField, check_choice, paths


@dataclass(kw_only=True)
class PrepareConfig(TextField):
    input: list[str] = paths()
    """Files or globs of raw text (txt / jsonl[.gz] / parquet / datasets folder)."""
    lang: str = ""
    """ISO 639-1 code of the language to keep (empty: the recipe's target_lang)."""
    executor: str = "local"
    """datatrove executor: local, slurm or ray."""
    workers: int = 1
    """Worker processes of the local executor (-1: one per core)."""
    tasks: int = 1
    """Number of datatrove tasks (input shards processed independently)."""
    normalize: bool = True
    """Unicode NFC, whitespace clean-up, mojibake repair; URLs and e-mails replaced by placeholders."""
    url_placeholder: str = "<URL>"
    """What a URL is replaced with ('' keeps URLs)."""
    email_placeholder: str = "<EMAIL>"
    """What an e-mail address is replaced with ('' keeps them)."""
    min_script_ratio: float = 0.6
    """Share of letters that must be in the language's script(s)."""
    language_id: bool = True
    """Drop documents whose identified language is not ``lang`` (py3langid, shipped in its wheel)."""
    min_language_score: float = 0.5
    """Lowest language-id confidence kept."""
    quality_filter: bool = True
    """Too-short and Gopher-style repetition filters, with defaults suited to non-English text."""
    min_words: int = 10
    """Documents with fewer words (letters/2 for scripts written without spaces: ja, zh, th) are dropped."""
    boilerplate_filter: bool = True
    """Remove paragraphs repeated across many documents and inside one document."""
    boilerplate_min_doc_share: float = 0.1
    """A paragraph found in at least this share of documents is boilerplate."""
    boilerplate_min_docs: int = 1000
    """... or in at least this many documents (large corpora, where a share is too high a bar; 0: off)."""
    exact_dedup: bool = True
    """Drop exact duplicate documents."""
    minhash_dedup: bool = True
    """MinHash-LSH near-duplicate removal."""
    minhash_threshold: float = 0.8
    """Jaccard similarity at which documents count as duplicates."""
    minhash_ngrams: int = 5
    """Words per shingle (characters for scripts written without spaces)."""
    minhash_buckets: int | None = None
    """LSH bands (None: chosen from minhash_threshold, see docs/corpus-prepare.md)."""
    minhash_rows: int | None = None
    """Hashes per band (None: chosen from minhash_threshold)."""
    slurm_partition: str = ""
    """Slurm partition (executor slurm)."""
    slurm_time: str = "24:00:00"
    """Slurm time limit per task (executor slurm)."""
    ray_address: str = ""
    """Ray cluster to run on (executor ray): its head's ``host:port`` (``ray start --head --port``),
    ``ray://host:port`` (Ray Client) or ``auto`` (the cluster ``ray start`` started on this machine);
    empty: the ``RAY_ADDRESS`` variable, else ``auto``."""
    cpus_per_task: int = 1
    """CPUs per task (executors slurm and ray)."""
    mem_per_cpu_gb: float = 2.0
    """Memory per CPU in GB (executors slurm and ray)."""
    output_format: str = "jsonl.gz"
    """Shard format: jsonl.gz or parquet."""
    licenses: list[str] = field(default_factory=list)
    """Licences of the sources, copied into the data card."""

    def validate(self) -> None:
        check_choice("executor", self.executor, ("local", "slurm", "ray"))
        if not 0 < self.minhash_threshold < 1:
            raise ConfigError("minhash_threshold must be between 0 and 1")
        check_choice("output_format", self.output_format, ("jsonl.gz", "parquet"))
        if self.tasks < 1 or self.workers == 0 or self.workers < -1:
            raise ConfigError("tasks must be >= 1 and workers >= 1 (or -1: one per core)")
        if not 0 <= self.min_script_ratio <= 1 or not 0 < self.boilerplate_min_doc_share <= 1:
            raise ConfigError("min_script_ratio must be in [0, 1] and boilerplate_min_doc_share in (0, 1]")
        if (self.minhash_buckets is None) != (self.minhash_rows is None):
            raise ConfigError("set both minhash_buckets and minhash_rows, or neither")
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb <= 0:
            raise ConfigError("cpus_per_task must be >= 1 and mem_per_cpu_gb > 0")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("executor slurm needs slurm_partition")
