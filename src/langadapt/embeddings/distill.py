"""``embeddings distill`` (DictaLM 2.0): teach the new rows to behave like the text they replace.

Stage 1 (distillation): only the new input rows train (``new-input-embeddings``). The original model
(teacher) reads a span in the original tokenization, the extended model (student) in the new one; the
loss is the mean squared distance of their final hidden states at aligned positions (``spans.py``).
Stage 2 (calibration): new input rows and new output rows (of a tied matrix: the same rows) train with
next-token loss on the target text, at ``calibrate_lr`` (default lr / 10): Adam moves every new output
row by about lr per step even when its token never occurs in the batch, which at the stage-1 rate pushed
all new logits down and made Hungarian bpb worse than the init (RESULTS.md).

Both stages run on the training core (``langadapt.train.core``), like ``train pretrain``: accelerate
places the models (the GPU when there is one; under ``accelerate launch`` one process per device, data
parallel), bf16 follows ``runtime.use_bf16``, each stage has the linear warm-up + cosine schedule
(``warmup``, ``min_lr_ratio``) and clipping at ``grad_clip``. AdamW runs with weight decay 0 on the rows,
because decaying new rows towards zero would undo their initialisation and has nothing to regularise in
a few hundred steps. The teacher is frozen on the same device.

"Only the new rows" (issue 19): the models are loaded in the dtype they are stored in (``dtype: auto``;
bf16 stays bf16, in memory and in the saved model) and none of their weights trains. The new tokens'
rows train as a separate module, :class:`NewRows`: float32 master copies of rows ``[n_base, n_ext)`` of
the input matrix (and of an untied head), which forward hooks put in place of the matrices' rows, and
which are written back, rounded once, after each stage. float32 because bf16 cannot hold the updates:
at the calibration rate (3e-4, decaying to 3e-5) Adam moves an entry of ~0.02, where bf16's values are
1.2e-4 apart, by 2.5 down to 0.25 of a bf16 step, so rounded bf16 rows would take the early updates
coarsely and lose the late ones entirely. So the gradients and Adam's moments exist for these rows only (a 128k x 4096 matrix's
gradient and moments in float32 would be 6 GB); base and padding rows stay bit-identical by construction,
and ``frozen_rows_unchanged`` still checks their sha256 after each stage.

The spans are a pure function of the seed; optimizer step k of a stage reads ``batch_size`` spans
(stage 2 the ones after stage 1's), each process its contiguous share, and each loss is normalised over
the whole step, so N processes give the update of one. In the work folder (the runner's
``.<out>.partial/``) the core checkpoints ``checkpoints/<stage>/step-N/`` (model, optimizer, scheduler,
RNG; meta.json: stage, step, losses, seconds) every ``checkpoint_every`` steps and at each stage's end;
a resumed run continues from the newest and ends equal to an uninterrupted one. The checkpoints are
removed before the stage returns, leaving the HF model folder (and ``logs/`` when a tracker is on).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from langadapt.config import DistillConfig
from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.embeddings.rows import check_extends
from langadapt.embeddings.spans import Span, build_spans
from langadapt.errors import UserError
from langadapt.models import load_model, load_tokenizer, resolve_dtype, resolve_model, save_model
from langadapt.runs import EXTENSION_JSON
from langadapt.runtime import autocast
from langadapt.tokenizer.document import document_start
from langadapt.train import optim
from langadapt.train.checkpoint import latest
from langadapt.train.core import TrainCore, accelerator_settings, make_accelerator, share, start_trackers
from langadapt.train.trainable import RowFreeze, embedding_matrices, is_tied

STAGES = ("distill", "calibrate")
TRAIN = {"distill": "new-input-embeddings", "calibrate": "new-embeddings"}
"""What trains in each stage, in ``train/trainable.py``'s words (here: which :class:`NewRows` train)."""
CHECKPOINTS = "checkpoints"


@dataclass
class Progress:
    stage: str = "distill"
    step: int = 0
    losses: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    frozen_rows_unchanged: bool = True


def distill(cfg: DistillConfig, out: Path) -> dict[str, Any]:
    """Stage entry: distil + calibrate the new rows of ``cfg.model``; write the model into work folder
    ``out`` (resumed from its newest checkpoint when there is one); return the figures for stage.json."""
    out = Path(out)
    student_path, teacher_path = resolve_model(cfg.model), resolve_model(cfg.teacher)
    files = check_corpus(cfg.corpus, cfg.text_field)
    student_tok, teacher_tok = load_tokenizer(student_path), load_tokenizer(teacher_path)
    check_extends(teacher_tok, student_tok, str(student_path))
    if len(student_tok) == len(teacher_tok):
        raise UserError("the model's tokenizer has no tokens beyond the teacher's: nothing to distil",
                        student_path)  # fmt: skip
    acc = make_accelerator(out / "logs", **accelerator_settings(cfg))
    acc.wait_for_everyone()  # the runner's main process has made the work folder
    student = load_model(student_path, dtype=resolve_dtype(cfg.dtype, student_path))
    teacher = load_model(teacher_path, dtype=resolve_dtype(cfg.dtype, teacher_path))
    if student.get_input_embeddings().weight.shape[0] < len(student_tok):
        raise UserError("the model has fewer embedding rows than its tokenizer has tokens "
                        "(run `langadapt embeddings init` first)", student_path)  # fmt: skip
    start_trackers(acc, "distill", cfg)
    docs = iter_documents(files, cfg.text_field)
    progress = train_new_rows(student, teacher, student_tok, teacher_tok, docs, cfg, accelerator=acc,
                              checkpoints=out / CHECKPOINTS)  # fmt: skip
    if acc.is_main_process:
        save_model(student, student_tok, out)
        if (student_path / EXTENSION_JSON).exists():
            shutil.copy2(student_path / EXTENSION_JSON, out / EXTENSION_JSON)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    acc.wait_for_everyone()
    acc.end_training()
    return {**summary(progress, acc), "dtype": str(student.dtype).removeprefix("torch.")}


def summary(progress: Progress, accelerator: Any) -> dict[str, Any]:
    def ends(losses: list[float]) -> dict[str, float | None]:
        k = max(1, min(5, len(losses) // 4))
        mean = lambda xs: sum(xs) / len(xs) if xs else None
        return {"first": mean(losses[:k]), "last": mean(losses[-k:])}

    return {
        "device": str(accelerator.device),
        "bf16": accelerator.mixed_precision == "bf16",
        "processes": accelerator.num_processes,
        "seconds_per_stage": progress.seconds,
        "loss": {s: ends(progress.losses[s]) for s in STAGES},
        "losses": progress.losses,
        "frozen_rows_unchanged": progress.frozen_rows_unchanged,
    }


def train_new_rows(
    student, teacher, student_tok, teacher_tok, docs, cfg: DistillConfig, *, accelerator: Any = None,
    checkpoints: Path | None = None, after_stage: Callable[[str, Any, Progress], None] | None = None,
) -> Progress:  # fmt: skip
    """Both stages on already-loaded models, trained in place (the in-process entry point; the bench uses it).

    ``accelerator``: from :func:`langadapt.train.core.make_accelerator` (default: one made from ``cfg``,
    without trackers). ``checkpoints``: where to checkpoint and resume from (None: no checkpoints).
    ``after_stage(name, student, progress)`` is called after each stage, the student's matrices updated.
    """
    acc = accelerator or make_accelerator(**{**accelerator_settings(cfg), "report_to": "none"})
    if acc.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise UserError(f"embeddings distill runs on one process or data parallel (DDP), not under "
                        f"{acc.distributed_type.value}: only embedding rows train, so use an accelerate "
                        "config without sharding")  # fmt: skip
    if cfg.batch_size < acc.num_processes:
        raise UserError(f"batch_size {cfg.batch_size} is below the number of processes ({acc.num_processes})")
    n_base, n_ext = len(teacher_tok), len(student_tok)
    start_id = document_start(teacher_tok).token_id
    need = cfg.batch_size * (cfg.steps + cfg.calibrate_steps)
    spans = build_spans(docs, teacher_tok.backend_tokenizer, student_tok.backend_tokenizer, start_id=start_id,
                        n_base=n_base, seq_len=cfg.seq_len, count=need)  # fmt: skip
    if not spans:
        raise UserError("the corpus has no text that uses the new tokens")
    random.Random(cfg.seed).shuffle(spans)
    torch.manual_seed(cfg.seed)
    teacher.requires_grad_(False)
    teacher.eval().to(acc.device)
    progress = Progress()
    resume_from = _newest_stage(checkpoints)
    frozen = _frozen_rows(student, n_base, n_ext)
    for stage, steps in zip(STAGES, (cfg.steps, cfg.calibrate_steps)):
        if steps == 0 or (resume_from is not None and STAGES.index(stage) < STAGES.index(resume_from)):
            continue  # a later stage's checkpoint holds the weights this stage trained
        rows = NewRows(student, n_base, n_ext)
        core = _stage_core(acc, student, rows, cfg, stage, steps)
        meta = core.resume(checkpoints / stage) if checkpoints is not None else None
        if meta is not None:
            progress = Progress(**{k: meta[k] for k in asdict(Progress())})
            if acc.is_main_process:
                print(f"[distill] resuming {stage} at step {progress.step}")
        else:
            progress.stage, progress.step = stage, 0
        _run_stage(core, stage, steps, spans, cfg, progress, teacher, checkpoints)
        student = core.release()
        rows.remove(student)  # the trained rows into the matrices: the student is a plain model again
        progress.frozen_rows_unchanged &= frozen.unchanged()
        if not progress.frozen_rows_unchanged and acc.is_main_process:
            print("warning: training changed frozen embedding rows (a bug: report it)")
        if after_stage is not None:
            after_stage(stage, student, progress)
    return progress


def stage_lr(cfg: DistillConfig, stage: str) -> float:
    if stage == "distill":
        return cfg.lr
    return cfg.calibrate_lr if cfg.calibrate_lr is not None else cfg.lr / 10


def step_spans(spans: list[Span], stage: str, step: int, cfg: DistillConfig) -> list[Span]:
    """The ``batch_size`` spans of optimizer step ``step`` of ``stage``: every process's, in order."""
    # stage 2 reads the spans after stage 1's, so calibration sees fresh text where there is enough
    offset = 0 if stage == "distill" else cfg.steps * cfg.batch_size
    return [spans[(offset + step * cfg.batch_size + i) % len(spans)] for i in range(cfg.batch_size)]


def _newest_stage(checkpoints: Path | None) -> str | None:
    if checkpoints is None:
        return None
    return next((s for s in reversed(STAGES) if latest(checkpoints / s) is not None), None)


def _stage_core(acc: Any, student, rows: NewRows, cfg: DistillConfig, stage: str, steps: int) -> TrainCore:
    """The stage's trainable rows (the input rows; in calibration the head's too), AdamW without decay
    and the schedule, prepared."""
    student.requires_grad_(False)
    rows.input.requires_grad_(True)
    if rows.output is not None:
        rows.output.requires_grad_(TRAIN[stage] == "new-embeddings")
    groups = [{"params": [p for p in rows.parameters() if p.requires_grad], "weight_decay": 0.0}]
    optimizer = optim.make_optimizer(groups, acc.device, lr=stage_lr(cfg, stage))
    scheduler = optim.make_scheduler(optimizer, steps, warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio)
    return TrainCore(acc, student, optimizer, scheduler, grad_clip=cfg.grad_clip)


def _frozen_rows(model, n_base: int, n_ext: int) -> RowFreeze:
    """The sha256 of every row outside ``[n_base, n_ext)`` of the embedding matrices, taken now.

    Nothing but :meth:`NewRows.remove` writes into the matrices, and only those rows; the check is the
    same one pretrain's row freeze makes (``frozen_rows_unchanged`` in stage.json)."""
    freeze = RowFreeze(n_base, n_ext)
    freeze.params = embedding_matrices(model)
    freeze.attached_fingerprint = freeze.fingerprint()
    return freeze


class NewRows(torch.nn.Module):
    """float32 master copies of the new tokens' rows, the only parameters that train.

    Registered as a submodule of the model (so accelerate prepares, wraps and checkpoints them with it),
    with forward hooks on the model's input embedding (the output at new-token ids is replaced by these
    rows, scaled as the module scales its own: Gemma's ``embed_scale``) and on its head (the new tokens'
    logits are computed from these rows; a tied head reads the input rows). In the forward pass they are
    rounded to the model's dtype, as a bf16 matrix's rows would be; the gradient reaches the float32
    copies. :meth:`remove` writes them back into the matrices (rounded once) and takes the hooks off.
    """

    ATTR = "langadapt_new_rows"

    def __init__(self, model: torch.nn.Module, n_base: int, n_ext: int) -> None:
        super().__init__()
        self.n_base, self.n_ext = n_base, n_ext
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        self.input = torch.nn.Parameter(embed.weight[n_base:n_ext].detach().float().clone())
        if is_tied(model):
            self.register_parameter("output", None)
        else:
            self.output = torch.nn.Parameter(head.weight[n_base:n_ext].detach().float().clone())
        self._handles = [embed.register_forward_hook(self._embed, with_kwargs=True),
                         head.register_forward_hook(self._head, with_kwargs=True)]  # fmt: skip
        model.add_module(self.ATTR, self)

    def _embed(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        ids = args[0] if args else next(iter(kwargs.values()))
        new = (ids >= self.n_base) & (ids < self.n_ext)
        # every position looks a row up (clamped), so the rows take part in every step's graph: DDP wants
        # each trainable parameter used in each forward, whether or not the batch has new tokens
        local = (ids - self.n_base).clamp(0, self.n_ext - self.n_base - 1)
        rows = torch.nn.functional.embedding(local, self.input).to(output.dtype)
        scale = getattr(module, "embed_scale", None)
        if isinstance(scale, torch.Tensor):
            rows = rows * scale.to(output.dtype)
        return torch.where(new[..., None], rows, output)

    def _head(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        hidden = args[0] if args else next(iter(kwargs.values()))
        weight = self.input if self.output is None else self.output
        logits = torch.nn.functional.linear(hidden, weight.to(hidden.dtype))
        # in place: the head's backward needs its input and weight, not its output
        output[..., self.n_base : self.n_ext] = logits.to(output.dtype)
        return output

    @torch.no_grad()
    def remove(self, model: torch.nn.Module) -> None:
        """Write the rows into the model's matrices (in their dtype) and detach from the model."""
        for handle in self._handles:
            handle.remove()
        embed = model.get_input_embeddings().weight
        embed[self.n_base : self.n_ext] = self.input.to(embed.dtype)
        if self.output is not None:
            head = model.get_output_embeddings().weight
            head[self.n_base : self.n_ext] = self.output.to(head.dtype)
        del model._modules[self.ATTR]


def _run_stage(core: TrainCore, stage: str, steps: int, spans: list[Span], cfg: DistillConfig,
               progress: Progress, teacher, checkpoints: Path | None) -> None:  # fmt: skip
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    acc = core.accelerator
    core.model.eval()  # no dropout: training only changes rows, not behaviour
    offset = 0 if stage == "distill" else cfg.steps  # tracker steps run on across the stages
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn()]  # fmt: skip
    with Bar(*columns, disable=not acc.is_main_process) as bar:
        task = bar.add_task(stage, total=steps, completed=progress.step, loss=float("nan"))
        while progress.step < steps:
            t0 = time.perf_counter()
            batch = step_spans(spans, stage, progress.step, cfg)
            loss_fn = _distill_loss(teacher, acc, batch) if stage == "distill" else _lm_loss(acc, batch)
            result = core.step([share(batch, acc.process_index, acc.num_processes)], loss_fn)
            progress.step += 1
            progress.losses[stage].append(result.loss)
            progress.seconds[stage] += time.perf_counter() - t0
            figures = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm}
            core.log({f"{stage}/{k}": v for k, v in figures.items()}, offset + progress.step)
            bar.update(task, completed=progress.step, loss=result.loss)
            due = progress.step % cfg.checkpoint_every == 0 or progress.step == steps
            if checkpoints is not None and due:
                core.save(checkpoints / stage, progress.step, asdict(progress), keep=1)
                if stage != STAGES[0] and acc.is_main_process:  # this checkpoint holds stage 1's weights too
                    shutil.rmtree(checkpoints / STAGES[0], ignore_errors=True)


# ---------------------------------------------------------------------------------------------- losses


def _pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
    return ids.to(device), mask.to(device)


def _distill_loss(teacher, acc: Any, step: list[Span]) -> Callable:
    """Squared distance of the final hidden states at aligned positions, summed over this process's spans
    and divided by the number of (position, dimension) pairs in the whole step."""
    positions = sum(len(s.teacher_pos) for s in step)
    bf16, device = acc.mixed_precision == "bf16", acc.device

    def loss(student, batch: list[Span]) -> torch.Tensor:
        t_ids, t_mask = _pad([s.teacher_ids for s in batch], batch[0].teacher_ids[0], device)
        s_ids, s_mask = _pad([s.student_ids for s in batch], batch[0].student_ids[0], device)
        rows = torch.tensor([r for r, s in enumerate(batch) for _ in s.teacher_pos], device=device)
        t_pos = torch.tensor([p for s in batch for p in s.teacher_pos], device=device)
        s_pos = torch.tensor([p for s in batch for p in s.student_pos], device=device)
        with torch.no_grad(), autocast(device, bf16):
            target = teacher.base_model(input_ids=t_ids, attention_mask=t_mask, use_cache=False)
            target = target.last_hidden_state
        # through the (DDP-wrapped) model's own forward; hidden_states[-1] is the final, normed one
        out = student(input_ids=s_ids, attention_mask=s_mask, output_hidden_states=True, logits_to_keep=1,
                      use_cache=False)  # fmt: skip
        got = out.hidden_states[-1][rows, s_pos]
        diff = got.float() - target[rows, t_pos].float()
        return (diff**2).sum() / (positions * diff.shape[-1])

    return loss


def _lm_loss(acc: Any, step: list[Span]) -> Callable:
    """Next-token loss on the student's tokens, summed over this process's spans and divided by the number
    of predicted tokens in the whole step."""
    predicted = sum(len(s.student_ids) - 1 for s in step)

    def loss(student, batch: list[Span]) -> torch.Tensor:
        ids, mask = _pad([s.student_ids for s in batch], batch[0].student_ids[0], acc.device)
        labels = ids.masked_fill(mask == 0, -100)
        return student(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=predicted,
                       use_cache=False).loss  # fmt: skip

    return loss
