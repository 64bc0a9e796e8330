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

import contextlib
import functools
import os
import socket
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
from langadapt.errors import UserError


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

            # Runs through the connection ray_cluster() made; logs and output must be on storage every node sees.
            ex = RayPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=cfg.workers, depends=prev,
                                     logging_dir=logs, cpus_per_task=cfg.cpus_per_task,
                                     mem_per_cpu_gb=cfg.mem_per_cpu_gb)  # fmt: skip
        executors.append(ex)
    return executors


def run_executors(cfg: PrepareConfig, executors: list) -> None:
    """Run (or, on Slurm, submit) every stage.

    Local and Slurm: the last executor runs its ``depends=`` chain. Ray: one stage after the other, each
    checked before the next, because datatrove's Ray executor logs a failed task as a warning and the next
    stage then waits for it forever (it polls the dependency's completions every 2 minutes).
    """
    if cfg.executor != "ray":
        executors[-1].run()
        return
    for ex in executors:
        ex.run()  # the next one finds this one launched and complete, and does not run it again
        if missing := ex.get_incomplete_ranks():
            logs = ex.logging_dir.path
            raise RuntimeError(f"corpus prepare: {len(missing)} task(s) of {Path(logs).name!r} failed on the Ray "
                               f"cluster (ranks {missing[:5]}); their logs: {logs}/logs")  # fmt: skip


# ---------------------------------------------------------------------------------------------- Ray

PROBE_SECONDS = 5.0
"""How long the Ray head may take to accept a TCP connection: ray.init on an address where nothing answers
retries for minutes before it gives up."""


@contextlib.contextmanager
def ray_cluster(cfg: PrepareConfig):
    """Connect this process to the Ray cluster for the run, and disconnect after.

    datatrove's RayPipelineExecutor submits through the connection of the process it runs in; without one
    its first ``ray.put`` would start a private Ray instance on this machine instead. Everything that can
    be wrong with the cluster (not installed, nothing answering, too small for one task) is a UserError
    raised here, before anything is written.
    """
    try:
        import ray
    except ImportError as exc:
        raise UserError('executor ray needs the ray package: pip install "langadapt[ray]"') from exc
    if ray.is_initialized():  # a Python caller connected already (ray.init): run on that cluster
        _check_resources(cfg, "this process is connected to", ray.nodes())
        yield
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    host, port = _head(address)
    shown = address if address != "auto" else f"auto ({host}:{port})"
    _probe(shown, (host, port))
    try:
        # Something answers, but it may not be a Ray head: Ray's client retries for ~20 s by default, a line
        # on fd 2 per try; 10 s (unless the user set it) and the lines kept out of the console.
        with _env_default("RAY_gcs_server_port_wait_time_s", "10"), _stderr_discarded():
            # log_to_driver off: the workers' datatrove logs go to the stages' logging folders
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"ray_address {shown!r}: cannot connect ({_reason(exc)})") from exc
    try:
        _check_resources(cfg, f"at {shown}", ray.nodes())
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _env_default(name: str, value: str):
    had = name in os.environ
    os.environ.setdefault(name, value)
    try:
        yield
    finally:
        if not had:
            os.environ.pop(name, None)


@contextlib.contextmanager
def stderr_fd_to(fd: int):
    """File descriptor 2 pointed at ``fd`` for the block: what native code and child processes write there
    (Ray's C++ client, datatrove's workers) goes past Python's ``sys.stderr``."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _stderr_discarded():
    """File descriptor 2 to /dev/null: Ray's C++ client logs there directly, past Python's logging."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with stderr_fd_to(devnull):
            yield
    finally:
        os.close(devnull)


def _reason(exc: BaseException) -> str:
    """The first line of the innermost error: ray.init's own says only "Failed to connect" and keeps the
    reason (wrong token, version mismatch) in the exception it raises from, as a traceback text."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].split(". ")[0] if lines else type(exc).__name__


def _head(address: str) -> tuple[str, int]:
    """The (host, port) a Ray address connects to first (GCS, or the Ray Client server for ray://)."""
    hostport = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # how ray.init resolves "auto"

        try:
            hostport = canonicalize_bootstrap_address("auto")
        except ConnectionError as exc:
            raise UserError("no Ray cluster is running on this machine: start one (`ray start --head`) or give "
                            "its address (--ray-address host:port or RAY_ADDRESS)") from exc  # fmt: skip
    host, _, port = (hostport or "").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"ray_address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)  # [::1]:6379


def _probe(shown: str, head: tuple[str, int]) -> None:
    try:
        socket.create_connection(head, timeout=PROBE_SECONDS).close()
    except OSError as exc:
        why = f"within {PROBE_SECONDS:g} s" if isinstance(exc, TimeoutError) else f"({exc.strerror or exc})"
        raise UserError(f"the Ray cluster at {shown} does not answer {why}") from exc


def _check_resources(cfg: PrepareConfig, where: str, nodes: list[dict]) -> None:
    """A task asks Ray for ``cpus_per_task`` CPUs and ``cpus_per_task * mem_per_cpu_gb`` GiB of memory on one
    node; where no node has that, its placement group would wait forever."""
    need_cpu, need_mem = cfg.cpus_per_task, cfg.cpus_per_task * cfg.mem_per_cpu_gb * 2**30
    sizes = [(n["Resources"].get("CPU", 0), n["Resources"].get("memory", 0)) for n in nodes if n.get("Alive")]
    if not any(cpu >= need_cpu and mem >= need_mem for cpu, mem in sizes):
        largest = ", ".join(f"{cpu:g} CPU / {mem / 2**30:.1f} GiB" for cpu, mem in sorted(sizes, reverse=True)[:3])
        raise UserError(f"no node of the Ray cluster {where} has {need_cpu} CPU and "
                        f"{need_mem / 2**30:g} GiB for one task (nodes: {largest or 'none'}); "
                        "lower cpus_per_task or mem_per_cpu_gb")  # fmt: skip
