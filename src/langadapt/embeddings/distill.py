"""``embeddings distill`` (DictaLM 2.0): teach the new rows to behave like the text they replace.

Stage 1 (distillation): everything frozen except the new input rows. The original model (teacher) reads
a span in the original tokenization, the extended model (student) in the new one; the loss is the mean
squared distance of their final hidden states at aligned positions (``spans.py``).
Stage 2 (calibration): new input rows and new output rows (of a tied matrix: the same rows) train with
next-token loss on the target text, everything else frozen, at ``calibrate_lr`` (default lr / 10): Adam
moves every new output row by about lr per step even when its token never occurs in the batch, which at
the stage-1 rate pushed all new logits down and made Hungarian bpb worse than the init (RESULTS.md).

Only new rows are parameters (``split.py`` says why this and not a gradient mask), so base rows stay
bit-identical; AdamW runs with weight decay 0 on them because decaying new rows towards zero would
undo their initialisation and has nothing to regularise in a few hundred steps.
The data order is a function of the seed and the step, so a run resumes from its last checkpoint
(``.<out>.ckpt/state.pt``, written atomically; kept after a crash, deleted on success) with the
same result it would have had without the interruption.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langadapt.config import DistillConfig
from langadapt.embeddings.spans import Span
from langadapt.embeddings.split import new_rows_trainable
from langadapt.errors import UserError
from langadapt.eval.bpb import resolve_bf16
from langadapt.runs import atomic_output_dir, mark_done, to_jsonable, write_stage_json

STAGES = ("distill", "calibrate")


@dataclass
class Progress:
    stage: str = "distill"
    step: int = 0
    losses: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})


def distill(cfg: DistillConfig, out: Path) -> dict[str, Any]:
    """Stage entry: distil + calibrate the new rows of ``cfg.model`` and write the model to ``out``."""
    from langadapt.corpus.readers import check_corpus, iter_documents
    from langadapt.embeddings.rows import check_extends
    from langadapt.models import load_model, load_tokenizer, resolve_model, save_model

    start = time.perf_counter()
    student_path, teacher_path = resolve_model(cfg.model), resolve_model(cfg.teacher)
    files = check_corpus(cfg.corpus, cfg.text_field)
    student_tok, teacher_tok = load_tokenizer(student_path), load_tokenizer(teacher_path)
    check_extends(teacher_tok, student_tok, str(student_path))
    if len(student_tok) == len(teacher_tok):
        raise UserError("the model's tokenizer has no tokens beyond the teacher's: nothing to distil",
                        student_path)  # fmt: skip
    ckpt = out.with_name(f".{out.name}.ckpt")
    with atomic_output_dir(out) as tmp:
        student, teacher = load_model(student_path), load_model(teacher_path)
        if student.get_input_embeddings().weight.shape[0] < len(student_tok):
            raise UserError("the model has fewer embedding rows than its tokenizer has tokens "
                            "(run `langadapt embeddings init` first)", student_path)  # fmt: skip
        docs = iter_documents(files, cfg.text_field)
        progress = train_new_rows(student, teacher, student_tok, teacher_tok, docs, cfg, ckpt_dir=ckpt)
        save_model(student, student_tok, tmp)
        record = write_stage_json(tmp, "distill", cfg, time.perf_counter() - start, **summary(progress, cfg))
        mark_done(tmp)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record


def summary(progress: Progress, cfg: DistillConfig) -> dict[str, Any]:
    def ends(losses: list[float]) -> dict[str, float | None]:
        k = max(1, min(5, len(losses) // 4))
        mean = lambda xs: sum(xs) / len(xs) if xs else None
        return {"first": mean(losses[:k]), "last": mean(losses[-k:])}

    return {
        "bf16": resolve_bf16(cfg.bf16),
        "seconds_per_stage": progress.seconds,
        "loss": {s: ends(progress.losses[s]) for s in STAGES},
        "losses": progress.losses,
    }


def train_new_rows(
    student, teacher, student_tok, teacher_tok, docs, cfg: DistillConfig, *,
    ckpt_dir: Path | None = None, after_stage: Callable[[str, Any, Progress], None] | None = None,
) -> Progress:  # fmt: skip
    """Both stages on already-loaded models (the in-process entry point; the bench uses it).

    ``after_stage(name, student, progress)`` is called after each stage, the student's matrices updated.
    """
    from langadapt.embeddings.spans import build_spans
    from langadapt.eval.bpb import document_start

    n_base, n_ext = len(teacher_tok), len(student_tok)
    start_id = document_start(teacher_tok).token_id
    need = cfg.batch_size * (cfg.steps + cfg.calibrate_steps)
    spans = build_spans(docs, teacher_tok.backend_tokenizer, student_tok.backend_tokenizer, start_id=start_id,
                        n_base=n_base, seq_len=cfg.seq_len, count=need)  # fmt: skip
    if not spans:
        raise UserError("the corpus has no text that uses the new tokens")
    random.Random(cfg.seed).shuffle(spans)
    torch.manual_seed(cfg.seed)
    student.eval(), teacher.eval()  # no dropout: training only changes rows, not behaviour
    teacher.requires_grad_(False)
    bf16 = resolve_bf16(cfg.bf16)
    state, saved = _load_checkpoint(ckpt_dir, cfg)
    for stage, steps in zip(STAGES, (cfg.steps, cfg.calibrate_steps)):
        if steps == 0 or STAGES.index(stage) < STAGES.index(state.stage):
            continue
        with new_rows_trainable(student, n_base, n_ext, head=stage == "calibrate") as (params, head):
            lr = stage_lr(cfg, stage)
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
            if saved is not None and state.stage == stage and state.step > 0:
                _restore(saved, params, opt)
                saved = None
            loss_fn = _distill_loss(teacher) if stage == "distill" else _lm_loss(head)
            _run_stage(stage, steps, spans, params, opt, loss_fn, student, cfg, state, bf16, ckpt_dir, lr)
        if stage == "distill":
            state.stage, state.step = "calibrate", 0
        if after_stage is not None:
            after_stage(stage, student, state)
    return state


def _batch(spans: list[Span], stage: str, step: int, cfg: DistillConfig) -> list[Span]:
    # stage 2 reads the spans after stage 1's, so calibration sees fresh text where there is enough
    offset = 0 if stage == "distill" else cfg.steps * cfg.batch_size
    return [spans[(offset + step * cfg.batch_size + i) % len(spans)] for i in range(cfg.batch_size)]


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
    return ids, mask


def _distill_loss(teacher) -> Callable:
    def loss(student, batch: list[Span]) -> torch.Tensor:
        t_ids, t_mask = _pad([s.teacher_ids for s in batch], batch[0].teacher_ids[0])
        s_ids, s_mask = _pad([s.student_ids for s in batch], batch[0].student_ids[0])
        rows_t = torch.tensor([r for r, s in enumerate(batch) for _ in s.teacher_pos])
        with torch.no_grad():
            target = teacher.base_model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
            target = target[rows_t, torch.tensor([p for s in batch for p in s.teacher_pos])]
        hidden = student.base_model(input_ids=s_ids, attention_mask=s_mask).last_hidden_state
        got = hidden[rows_t, torch.tensor([p for s in batch for p in s.student_pos])]
        return ((got.float() - target.float()) ** 2).mean()

    return loss


def _lm_loss(head) -> Callable:
    def loss(student, batch: list[Span]) -> torch.Tensor:
        ids, mask = _pad([s.student_ids for s in batch], batch[0].student_ids[0])
        hidden = student.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        keep = mask[:, 1:].bool()
        logits = head(hidden[:, :-1][keep])
        return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][keep])

    return loss


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over 10% of the steps, then cosine to 10% of ``lr`` (a function of the step, so a
    resumed run needs no scheduler state)."""
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def stage_lr(cfg: DistillConfig, stage: str) -> float:
    if stage == "distill":
        return cfg.lr
    return cfg.calibrate_lr if cfg.calibrate_lr is not None else cfg.lr / 10


def _run_stage(stage, steps, spans, params, opt, loss_fn, student, cfg, state, bf16, ckpt_dir, lr) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn()]  # fmt: skip
    with Bar(*columns) as bar:
        task = bar.add_task(stage, total=steps, completed=state.step, loss=float("nan"))
        while state.step < steps:
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(state.step, steps, lr)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(student, _batch(spans, stage, state.step, cfg))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state.step += 1
            state.losses[stage].append(loss.item())
            state.seconds[stage] += time.perf_counter() - t0
            bar.update(task, completed=state.step, loss=loss.item())
            if ckpt_dir is not None and (state.step % cfg.checkpoint_every == 0 or state.step == steps):
                _save_checkpoint(ckpt_dir, cfg, state, params, opt)


# ------------------------------------------------------------------------------------ checkpoints


def _fingerprint(cfg: DistillConfig) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _save_checkpoint(folder: Path, cfg: DistillConfig, state: Progress, params, opt) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"fingerprint": _fingerprint(cfg), "stage": state.stage, "step": state.step,
            "losses": state.losses, "seconds": state.seconds, "params": [p.detach() for p in params],
            "optimizer": opt.state_dict()}  # fmt: skip
    tmp = folder / f".state.pt.tmp-{os.getpid()}"
    torch.save(blob, tmp)
    os.replace(tmp, folder / "state.pt")  # the rename is the commit point


def _load_checkpoint(folder: Path | None, cfg: DistillConfig) -> tuple[Progress, dict[str, Any] | None]:
    """The progress to resume from and the saved rows + optimizer state (read once; fresh if none)."""
    if folder is None or not (folder / "state.pt").exists():
        return Progress(), None
    blob = torch.load(folder / "state.pt", weights_only=False)
    if blob["fingerprint"] != _fingerprint(cfg):
        print(f"{folder}: checkpoint is from other settings; starting over")
        shutil.rmtree(folder)
        return Progress(), None
    print(f"resuming {blob['stage']} at step {blob['step']} from {folder}")
    return Progress(blob["stage"], blob["step"], blob["losses"], blob["seconds"]), blob


def _restore(blob: dict[str, Any], params, opt) -> None:
    with torch.no_grad():
        for p, saved in zip(params, blob["params"]):
            p.copy_(saved)
    opt.load_state_dict(blob["optimizer"])
