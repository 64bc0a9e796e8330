"""``train pretrain``'s loop on the training core (core.py): packed batches, evaluation, best/ and final/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from langadapt.config import PretrainConfig
from langadapt.models import load_model, load_tokenizer
from langadapt.runs import EXTENSION_JSON, atomic_output_dir
from langadapt.train import masking, optim, trainable
from langadapt.train.batches import StepPlan, predicted_tokens
from langadapt.train.core import TrainCore, accelerator_settings, make_accelerator, start_trackers
from langadapt.train.evaluation import evaluate
from langadapt.train.monitor import Monitor, flops_per_token, gpu_peak


class Trainer:
    def __init__(self, cfg: PretrainConfig, out: Path, model_dir: Path, dataset: Any,
                 eval_texts: dict[str, list[str]]) -> None:  # fmt: skip
        self.cfg, self.out, self.dataset, self.eval_texts = cfg, out, dataset, eval_texts
        self.model_dir = model_dir
        self.accelerator = acc = make_accelerator(out, **accelerator_settings(cfg))
        acc.wait_for_everyone()  # the runner's main process has made the work folder
        torch.manual_seed(cfg.seed)
        self.tokenizer = load_tokenizer(model_dir)
        model = load_model(model_dir)
        # per architecture: what transformers says the model supports (Gemma 2 has no SDPA)
        self.attention = masking.choose_attention(cfg.attention, acc.device, model)
        model.set_attn_implementation(masking.HF_IMPLEMENTATION[self.attention])
        model.config.use_cache = False  # see masking.py: a cache turns packed-sequence masking off
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base = trainable.base_vocab_size(model_dir) if trainable.wants_row_freeze(cfg.train) else None
        self.selection = trainable.select(model, cfg.train, vocab_size=len(self.tokenizer), base_vocab=base)
        embeddings = trainable.embedding_matrices(model) if self.selection.row_freeze else []
        groups = optim.param_groups(model, cfg.weight_decay, embeddings)
        optimizer = optim.make_optimizer(groups, acc.device, lr=cfg.lr, betas=cfg.betas)
        self.plan = StepPlan(len(dataset), cfg.micro_batch, cfg.grad_accum, acc.num_processes, cfg.seed)
        self.plan.check(str(dataset.folder))
        self.total_steps = cfg.max_steps or self.plan.steps_per_epoch
        scheduler = optim.make_scheduler(optimizer, self.total_steps, warmup=cfg.warmup,
                                         min_lr_ratio=cfg.min_lr_ratio)  # fmt: skip
        self.core = TrainCore(acc, model, optimizer, scheduler, grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum,
                              row_freeze=self.selection.row_freeze)  # fmt: skip
        self.model = self.core.model
        self.n_params = sum(trainable.full_numel(p) for p in model.parameters())
        self.state: dict[str, Any] = {"step": 0, "best_step": None, "best_value": None, "tokens": 0,
                                      "train_seconds": 0.0}  # fmt: skip
        self.state.update(self.core.resume(out / "checkpoints") or {})
        start_trackers(acc, "pretrain", cfg)

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        cfg, acc = self.cfg, self.accelerator
        monitor = Monitor(self.out, self.total_steps, self.state["step"], enabled=acc.is_main_process)
        deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
        last_eval = None
        try:
            while self.state["step"] < self.total_steps:
                record = self.train_step()
                monitor.log(record)
                self.core.log(record, record["step"])
                step = self.state["step"]
                if self.eval_texts and cfg.eval_every and step % cfg.eval_every == 0:
                    monitor.log(self.evaluate())
                    last_eval = step
                if deadline is not None and time.time() > deadline:
                    acc.set_trigger()
                stop = acc.check_trigger()  # every process stops at the same step
                if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or stop) \
                        and step < self.total_steps:  # fmt: skip
                    self.core.save(self.out / "checkpoints", step, self.state, cfg.keep_checkpoints)
                if stop:
                    break
            if self.eval_texts and cfg.eval_every and last_eval != self.state["step"]:
                monitor.log(self.evaluate())  # the last weights compete for final/ too
            if self.core.row_freeze is not None:
                self.state["frozen_rows_unchanged"] = self.core.frozen_rows_unchanged()
        finally:
            monitor.close()
        return self.summary()

    def train_step(self) -> dict[str, Any]:
        cfg, acc, plan = self.cfg, self.accelerator, self.plan
        step = self.state["step"]
        started = time.perf_counter()
        # The loss is a sum over the step's predicted tokens divided by their count over the whole
        # step, so accumulation and data parallelism give the same update (HF's num_items_in_batch).
        n_items = predicted_tokens(self.dataset.batch(plan.step_rows(step))["position_ids"])

        def micro_batches() -> Any:
            for micro in range(cfg.grad_accum):
                rows = plan.micro_rows(step, acc.process_index, micro)
                yield {k: torch.from_numpy(v).to(acc.device) for k, v in self.dataset.batch(rows).items()}

        def loss_fn(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            kwargs = masking.forward_kwargs(self.attention, batch["input_ids"], batch["position_ids"],
                                            self.model_config)  # fmt: skip
            return model(**kwargs, num_items_in_batch=n_items).loss

        self.model.train()
        result = self.core.step(micro_batches(), loss_fn)
        seconds = time.perf_counter() - started
        tokens = plan.rows_per_step * self.dataset.seq_len
        self.state["step"] = step + 1
        self.state["tokens"] += tokens
        self.state["train_seconds"] += seconds
        peak = gpu_peak(acc.device)
        flops = flops_per_token(self.model_config, self.dataset.seq_len, self.n_params) * tokens
        return {
            "step": step + 1, "total": self.total_steps, "loss": result.loss, "lr": result.lr,
            "grad_norm": result.grad_norm,
            "tokens": self.state["tokens"], "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mfu": flops / seconds / (peak * acc.num_processes) if peak else None,
        }  # fmt: skip

    @property
    def model_config(self) -> Any:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False).config

    # ------------------------------------------------------------------------------------- evaluate

    def evaluate(self) -> dict[str, Any]:
        """bpb on the held-out texts (every process: sharded models need all ranks in a forward)."""
        step = self.state["step"]
        started = time.perf_counter()
        result = evaluate(self.model, self.tokenizer, self.eval_texts, bf16=self.accelerator.mixed_precision == "bf16",
                          max_len=min(self.dataset.seq_len, 1024))  # fmt: skip
        value = result.get(self.cfg.select_metric)
        if value is not None and (self.state["best_value"] is None or value < self.state["best_value"]):
            self.state.update(best_step=step, best_value=value)
            self.save_best()
        return {"kind": "eval", "step": step, **result, "seconds": time.perf_counter() - started}

    def save_best(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            with atomic_output_dir(self.out / "best", overwrite=True) as tmp:
                self.save_hf(tmp)
        else:
            self.save_hf(None)
        acc.wait_for_everyone()

    def write_final(self, final: Path, summary: dict[str, Any]) -> dict[str, Any]:
        """``final/``: the best evaluated weights if evaluation ran, else the last (says which)."""
        import shutil


        best = self.out / "best"
        use_best = summary.get("best_step") is not None and best.exists()
        if use_best and self.accelerator.is_main_process:
            with atomic_output_dir(final, overwrite=True) as tmp:
                for item in best.iterdir():
                    shutil.copy2(item, tmp / item.name)
        elif not use_best and self.accelerator.is_main_process:
            with atomic_output_dir(final, overwrite=True) as tmp:
                self.save_hf(tmp)
        elif not use_best:
            self.save_hf(None)
        self.accelerator.wait_for_everyone()
        if use_best:
            return {"weights": "best", "step": summary["best_step"], "metric": self.cfg.select_metric,
                    "value": summary["best_value"]}  # fmt: skip
        return {"weights": "last", "step": summary["steps"]}

    def save_hf(self, folder: Path | None) -> None:
        """An HF folder (safetensors + tokenizer); every process takes part (sharded state dicts)."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)
        if folder is None:
            return
        # torch.compile's wrapper would prefix every key with "_orig_mod." (accelerate keeps it).
        state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
        model = acc.unwrap_model(self.model, keep_torch_compile=False)
        model.config.use_cache = True  # for generation later; training turned it off
        model.save_pretrained(folder, state_dict=state_dict, save_function=acc.save)
        model.config.use_cache = False
        self.tokenizer.save_pretrained(folder)
        ext = self.model_dir / EXTENSION_JSON
        if ext.exists():
            (folder / ext.name).write_bytes(ext.read_bytes())

    def summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "steps": s["step"], "planned_steps": self.total_steps, "tokens": s["tokens"],
            "tokens_per_s": s["tokens"] / s["train_seconds"] if s["train_seconds"] else None,
            "best_step": s["best_step"], "best_value": s["best_value"], "select_metric": self.cfg.select_metric,
            "attention": self.attention, "bf16": self.accelerator.mixed_precision == "bf16",
            "processes": self.accelerator.num_processes,
            "distributed": self.accelerator.distributed_type.value, "trainable": self.cfg.train,
            "trainable_params": self.selection.trainable_params, "total_params": self.selection.total_params,
            **({"frozen_rows_unchanged": s["frozen_rows_unchanged"]} if "frozen_rows_unchanged" in s else {}),
        }  # fmt: skip
