"""Assemble the datatrove stages of ``corpus prepare`` from a PrepareConfig, and their executors.

Stages (each a datatrove executor run with its own ``completions/``, chained with ``depends=``):

    filter      read → normalise → script ratio → language id → quality → repeated paragraphs → (sigs)
    boilerplate count paragraph hashes per partition                       [if boilerplate_filter]
    clean       drop boilerplate paragraphs → too short again → (sigs)     [if boilerplate_filter]
    exact_find  ExactFindDedups                                            [if exact_dedup]
    exact       ExactDedupFilter → (MinHash signatures)                    [if exact_dedup]
    mh_buckets, mh_cluster, minhash: datatrove's MinHash stages 2–4        [if minhash_dedup]
    finalize    DATACARD.md, stage.json, commit (card.Finalize)
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
)
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.hashing import HashConfig

from langadapt.config import PrepareConfig
from langadapt.corpus import scripts
from langadapt.corpus.boilerplate import (
    BoilerplateFinder,
    BoilerplateRemover,
    ParagraphSignature,
    RepeatedParagraphRemover,
)
from langadapt.corpus.card import SHARDS, Finalize
from langadapt.corpus.minhash import minhash_bands_rows
from langadapt.corpus.steps import (
    CorpusReader,
    LanguageIdFilter,
    Meter,
    MinhashSignature,
    MinWordsFilter,
    MojibakeFixer,
    RankFileReader,
    ScriptFilter,
    TextNormalizer,
)


@dataclass
class Stage:
    """One datatrove executor run: its pipeline and how many tasks it has."""

    name: str
    pipeline: list
    tasks: int
    steps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Logical step -> the (stage, datatrove block name) pairs whose stats and time it reports."""


def local_workers(cfg: PrepareConfig, tasks: int) -> int:
    workers = (os.cpu_count() or 1) if cfg.workers == -1 else cfg.workers
    return max(1, min(workers, tasks))


def doc_bytes(doc) -> bytes:  # module level: datatrove pickles the exact-dedup config to its workers
    return doc.text.encode("utf-8")  # bytes: xxhash >= 4 refuses str


def quality_filters(cfg: PrepareConfig) -> list:
    """A word-count floor, then Gopher's repetition and quality rules (datatrove's filters) with
    thresholds loosened for non-English and structured text, and the English-only rule (stop words) off.

    Calibrated on the shared help-page corpora in hu, en, ru, ja, tr and sl (docs/corpus-prepare.md):
    Gopher's web thresholds drop 18–50 % of those clean pages (their tables and lists repeat lines
    and n-grams); these drop about 1 % of the bytes and still catch text that repeats itself, which
    scores near 1 on these fractions. Scripts written without spaces count characters as words, so
    their n-gram windows are twice as long and the word-length rules are off.
    """
    unspaced = scripts.is_unspaced(cfg.lang)
    tok = scripts.ScriptWordTokenizer()
    k = 2 if unspaced else 1
    return [
        MinWordsFilter(cfg.lang, cfg.min_words),
        GopherRepetitionFilter(
            dup_line_frac=0.6, dup_para_frac=0.6, dup_line_char_frac=0.5, dup_para_char_frac=0.5,
            top_n_grams=((2 * k, 0.4), (4 * k, 0.5)), dup_n_grams=((5 * k, 0.45), (10 * k, 0.4)), language=tok,
        ),
        GopherQualityFilter(
            min_doc_words=None, max_doc_words=None, min_stop_words=None, language=tok,
            min_avg_word_length=None if unspaced else 2, max_avg_word_length=None if unspaced else 15,
            max_non_alpha_words_ratio=None if unspaced else 0.5,
        ),
    ]  # fmt: skip


class _Builder:
    """Appends steps stage by stage, putting a Meter after each logical step for docs/bytes out."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []

    @property
    def current(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str, tasks: int) -> Stage:
        self.stages.append(Stage(name, [], tasks))
        return self.current

    def add(self, label: str, *blocks) -> None:
        stage = self.current
        stage.pipeline.extend(blocks)
        stage.pipeline.append(Meter(label))
        stage.steps[label] = [(stage.name, str(b)) for b in blocks]


def text_under(writer, document, *, field: str) -> dict:
    """datatrove's record of a document, with the text under ``field`` instead of ``text``."""
    data = writer._default_adapter(document)
    data[field] = data.pop("text")
    return data


def build_stages(cfg: PrepareConfig, files: list[str], *, staged: Path, scratch: Path, final: Path,
                 started: float) -> list[Stage]:  # fmt: skip
    """The stages of a run: the last data stage writes the shards into ``staged`` (the stage runner's work
    folder), everything else goes to ``scratch``; Finalize commits ``staged`` to ``final``."""
    tmp = scratch / "tmp"
    n = cfg.tasks
    data_stages = ["filter"] + ["clean"] * cfg.boilerplate_filter + ["exact"] * cfg.exact_dedup
    data_stages += ["minhash"] * cfg.minhash_dedup
    last = data_stages[-1]

    def writer(stage: str):
        if stage != last:
            return JsonlWriter(str(tmp / stage), output_filename="${rank}.jsonl", compression=None)
        # The shards keep the input's text field, so every later stage reads them with the same one.
        adapter = functools.partial(text_under, field=cfg.text_field)
        if cfg.output_format == "parquet":
            return ParquetWriter(str(staged / SHARDS), output_filename="${rank}.parquet", adapter=adapter)
        return JsonlWriter(str(staged / SHARDS), output_filename="${rank}.jsonl.gz", compression="gzip",
                           adapter=adapter)  # fmt: skip

    def reader(stage: str):
        return RankFileReader(str(tmp / stage), compression=None)

    b = _Builder()
    b.stage("filter", n)
    b.add("read", CorpusReader(files, text_key=cfg.text_field))
    if cfg.normalize:
        b.add("normalize", MojibakeFixer(), TextNormalizer(cfg.url_placeholder, cfg.email_placeholder))
    if cfg.min_script_ratio > 0:
        b.add("script", ScriptFilter(cfg.lang, cfg.min_script_ratio))
    if cfg.language_id:
        b.add("language", LanguageIdFilter(cfg.lang, cfg.min_language_score))
    if cfg.quality_filter:
        b.add("quality", *quality_filters(cfg))
    if cfg.boilerplate_filter:
        b.add("repeats", RepeatedParagraphRemover(cfg.lang),
              MinWordsFilter(cfg.lang, cfg.min_words, "too_short_after_repeats"))  # fmt: skip
    prev = "filter"
    if cfg.boilerplate_filter:
        bp = tmp / "boilerplate"
        b.current.pipeline += [ParagraphSignature(str(bp), partitions=n), writer("filter")]
        b.stage("boilerplate", n).pipeline.append(
            BoilerplateFinder(str(bp), cfg.boilerplate_min_doc_share, cfg.boilerplate_min_docs)
        )
        b.stage("clean", n).pipeline.append(reader("filter"))
        b.add("boilerplate", BoilerplateRemover(str(bp)),
              MinWordsFilter(cfg.lang, cfg.min_words, "too_short_after_boilerplate"))  # fmt: skip
        prev = "clean"
    if cfg.exact_dedup:
        ex_cfg = ExactDedupConfig(content_getter=doc_bytes, hash_config=HashConfig(precision=64))
        ex_sig = ExactDedupSignature(str(tmp / "exact_sigs"), ex_cfg)
        b.current.pipeline += [writer(prev), ex_sig]
        find = ExactFindDedups(str(tmp / "exact_sigs"), str(tmp / "exact_dups"), ex_cfg)
        b.stage("exact_find", 1).pipeline.append(find)
        b.stage("exact", n).pipeline.append(reader(prev))
        b.add("exact_dedup", ExactDedupFilter(str(tmp / "exact_dups"), ex_cfg))
        b.current.steps["exact_dedup"] += [(prev, str(ex_sig)), ("exact_find", str(find))]
        prev = "exact"
    if cfg.minhash_dedup:
        bands, rows = minhash_bands_rows(cfg)
        mh = MinhashConfig(n_grams=cfg.minhash_ngrams, num_buckets=bands, hashes_per_bucket=rows,
                           hash_config=HashConfig(precision=64))  # fmt: skip
        sig = MinhashSignature(str(tmp / "mh_sigs"), config=mh, language=scripts.ScriptWordTokenizer())
        b.current.pipeline += [writer(prev), sig]
        buckets = MinhashDedupBuckets(str(tmp / "mh_sigs"), str(tmp / "mh_buckets"), config=mh)
        cluster = MinhashDedupCluster(str(tmp / "mh_buckets"), str(tmp / "mh_remove"), config=mh)
        b.stage("mh_buckets", bands).pipeline.append(buckets)  # datatrove: one task per band
        b.stage("mh_cluster", 1).pipeline.append(cluster)
        b.stage("minhash", n).pipeline.append(reader(prev))
        b.add("minhash_dedup", MinhashDedupFilter(str(tmp / "mh_remove")))
        b.current.steps["minhash_dedup"] += [  # the earlier MinHash stages' time counts here too
            (prev, str(sig)),
            ("mh_buckets", str(buckets)),
            ("mh_cluster", str(cluster)),
        ]
        prev = "minhash"
    b.current.pipeline.append(writer(prev))
    plan = [(s.name, s.steps) for s in b.stages]
    finalize = Finalize(cfg, files, staged=staged, scratch=scratch, final=final, plan=plan, started=started)
    return [*b.stages, Stage("finalize", [finalize], 1)]


def make_executors(cfg: PrepareConfig, stages: list[Stage], scratch: Path) -> list:
    """One executor per stage, each depending on the one before (so the last one runs them all); their
    logging folders (completions, stats) are ``scratch/logs/<stage>``."""
    executors: list = []
    for stage in stages:
        logs = str(scratch / "logs" / stage.name)
        prev = executors[-1] if executors else None
        if cfg.executor == "local":
            from datatrove.executor import LocalPipelineExecutor

            ex = LocalPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=local_workers(cfg, stage.tasks),
                                       logging_dir=logs, depends=prev)  # fmt: skip
        elif cfg.executor == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            # The job runs `launch_pickled_pipeline` from this same environment on the compute nodes.
            ex = SlurmPipelineExecutor(stage.pipeline, tasks=stage.tasks, time=cfg.slurm_time,
                                       partition=cfg.slurm_partition, cpus_per_task=cfg.cpus_per_task,
                                       mem_per_cpu_gb=int(max(1, cfg.mem_per_cpu_gb)),
                                       job_name=f"langadapt-prepare-{stage.name}", logging_dir=logs,
                                       depends=prev, venv_path=str(Path(sys.prefix) / "bin" / "activate"))  # fmt: skip
        else:
            from datatrove.executor import RayPipelineExecutor

            # Expects a Ray cluster started beforehand (ray.init() / `ray start`); logs must be on shared disk.
            ex = RayPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=cfg.workers, depends=prev,
                                     logging_dir=logs, cpus_per_task=cfg.cpus_per_task,
                                     mem_per_cpu_gb=cfg.mem_per_cpu_gb)  # fmt: skip
        executors.append(ex)
    return executors
