"""What ``train sft`` and ``train dpo`` share: the model and tokenizer as trl gets them, trl's arguments
from our config, what trains (full / row freeze / LoRA), English bits per byte before and after, the
final folder and the figures.

trl 1.16 does the training itself (collators, packing, loss masking, the DPO loss and its reference);
this module only decides what it is given:

* **Model** loaded from the folder on disk in fp32 (``_name_or_path`` is that folder, so trl's DPO
  reference is the same model with the same vocabulary), with the attention kernel of ``attention``.
* **Chat template** (:mod:`langadapt.train.chat`): the model's own, with ``{% generation %}`` markers for
  training; SambaLingo's plain-text one where it has none. final/ keeps the model's own.
* **Precision and device** by the runtime's rules (``runtime.resolve_device`` / ``use_bf16``), set
  explicitly because trl defaults to bf16 and gradient checkpointing; ``use_cpu`` on the CPU; no hub,
  no loggers unless asked.
* **What trains**: ``train`` as in train pretrain, row freezing through
  :class:`~langadapt.train.trainable.RowFreezeCallback`; or LoRA (peft) with the new token rows of an
  extended tokenizer as ``trainable_token_indices`` (input matrix, and the head when it is untied).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.config import AlignConfig
from langadapt.errors import UserError, reading
from langadapt.models import load_tokenizer, resolve_model
from langadapt.runs import (
    EXTENSION_JSON,
    METRICS_JSONL,
    is_main_process,
    read_json,
    write_json_atomic,
    write_jsonl_atomic,
)
from langadapt.runtime import load_model, resolve_device, use_bf16
from langadapt.train.align_data import read_mix
from langadapt.train.chat import ensure_template, training_template
from langadapt.train.core import reset_single_process_state
from langadapt.train.evaluation import evaluate, load_eval_texts
from langadapt.train.masking import supported_paths
from langadapt.train.monitor import resolve_trackers
from langadapt.train.trainable import (
    RowFreeze,
    RowFreezeCallback,
    base_vocab_size,
    embedding_matrices,
    is_tied,
    select,
    wants_row_freeze,
)

FINAL = "final"
"""The HF folder a stage leaves: model, tokenizer with its chat template, extension.json."""
BEFORE_JSON = "before.json"
"""In the work folder: the figures measured before training (kept for a resumed run)."""
DATA = "data"
"""In the work folder under several processes: the mixed data as Arrow files, shared by the ranks."""


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    model_dir: Path
    device: Any
    bf16: bool
    template: dict[str, str]
    """How the chat template was chosen (saved: what final/ keeps; training: what trl renders with)."""
    saved_template: str
    eval_texts: dict[str, list[str]]
    trainable: dict[str, Any]
    peft_config: Any = None
    row_freeze: Any = None


def check_model(cfg: AlignConfig) -> Path:
    """The model folder (an alias is converted), with max_length within the model's context."""
    if not cfg.model:
        raise UserError("needs a model (--model)")
    model_dir = resolve_model(cfg.model)
    context = read_json(model_dir / "config.json").get("max_position_embeddings")
    if context is not None and cfg.max_length > context:
        raise UserError(f"max_length {cfg.max_length} is above the model's context ({context} tokens)", model_dir)
    return model_dir


def attention_kernel(requested: str, device: Any, model_dir: Path | None = None) -> str:
    """The model's ``attn_implementation``: ``auto`` asks the architecture what transformers supports for
    it (flash-attention 2 on CUDA with flash-attn installed, else SDPA, else eager: Gemma 2 has no SDPA);
    an explicit kernel the architecture lacks is refused before the model loads."""
    import importlib.util

    supported = _supported_kernels(model_dir)
    if requested != "auto":
        family = requested.rsplit("_", 1)[0] if requested.startswith("flash_attention") else requested
        if supported is not None and family not in supported:
            raise UserError(f"attention {requested!r}: this architecture does not support it (transformers "
                            f"supports {', '.join(sorted(supported))}; 'auto' chooses among them)", model_dir)  # fmt: skip
        return requested
    if supported is None:
        supported = {"flash_attention", "sdpa", "eager"}
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") and "flash_attention" in supported:
        return "flash_attention_2"
    return "sdpa" if "sdpa" in supported else "eager"


def _supported_kernels(model_dir: Path | None) -> set[str] | None:
    """``{"flash_attention", "sdpa", "eager"}`` minus what the model class of ``model_dir`` lacks (None: unknown)."""
    if model_dir is None:
        return None

    cls = model_class(model_dir)
    if cls is None:
        return None
    names = {"flash": "flash_attention", "sdpa": "sdpa", "eager": "eager"}
    return {names[p] for p in supported_paths(cls) if p in names}


def model_class(model_dir: Path) -> Any:
    """The transformers causal-LM class of the model folder (its config's model type), None when unknown."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(model_dir))
        return AutoModelForCausalLM._model_mapping[type(config)]
    except (KeyError, OSError, ValueError):
        return None


def setup(cfg: AlignConfig, model_dir: Path) -> Setup:
    """Tokenizer with its training chat template, the fp32 model from disk, what trains, eval text."""
    import torch
    from transformers import AutoModelForCausalLM


    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index not in (None, 0):
        raise UserError(f"device {cfg.device!r}: choose the GPU with CUDA_VISIBLE_DEVICES={device.index} and "
                        "--device cuda (the Trainer places a single process on the first visible GPU)")  # fmt: skip
    eval_texts = load_eval_texts(cfg)
    tokenizer = load_tokenizer(model_dir)
    source = ensure_template(tokenizer)
    saved = tokenizer.chat_template
    train_template, how = training_template(tokenizer, cfg.chat_template or None)
    tokenizer.chat_template = train_template  # what trl renders with; final/ gets `saved` back
    kernel = attention_kernel(cfg.attention, device, model_dir)
    with reading(model_dir, "cannot load model", catch=(OSError, ValueError, ImportError)):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation=kernel)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens, the model's embeddings only "
                        f"{model.get_input_embeddings().weight.shape[0]} rows", model_dir)  # fmt: skip
    template = {"source": "model" if source == "base" else "sambalingo (the model had none)", "training": how}
    s = Setup(model, tokenizer, model_dir, device, use_bf16(cfg.bf16, device), template, saved, eval_texts, {})
    _what_trains(cfg, s)
    return s


def new_rows(model_dir: Path) -> int | None:
    """``base_vocab_size`` of an extended tokenizer (rows at and above it are new), None when not extended."""
    try:
        return base_vocab_size(model_dir)
    except UserError:
        return None


def _what_trains(cfg: AlignConfig, s: Setup) -> None:
    base = new_rows(s.model_dir)
    vocab = len(s.tokenizer)
    if not cfg.lora:
        needs_base = wants_row_freeze(cfg.train)
        selection = select(s.model, cfg.train, vocab_size=vocab, base_vocab=base if needs_base else None)
        s.row_freeze = selection.row_freeze
        s.trainable = {"train": cfg.train, "trainable_params": selection.trainable_params,
                       "total_params": selection.total_params}  # fmt: skip
        return
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise UserError('lora needs peft: pip install "langadapt[lora]"') from exc


    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",")]
    save, tied = None, is_tied(s.model)
    if base is not None and base < vocab:
        # The added rows must train, and trl's fused head reads lm_head.weight and .bias directly (peft's
        # trainable-token wrapper has no bias): train copies of the embedding matrices (modules_to_save)
        # and keep their base rows exact with the row freeze.
        save = [_module_name(s.model, s.model.get_input_embeddings())]
        if not tied:
            save.append(_module_name(s.model, s.model.get_output_embeddings()))
        s.row_freeze = RowFreeze(base, vocab)
    s.peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=target, task_type="CAUSAL_LM", modules_to_save=save,
                               ensure_weight_tying=tied and save is not None)  # fmt: skip
    s.trainable = {"train": "lora", "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_target": cfg.lora_target,
                   "new_token_rows": 0 if save is None else vocab - base}  # fmt: skip


def _module_name(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def trainer_args(config_cls: type, cfg: AlignConfig, work: Path, s: Setup, **specific: Any) -> Any:
    """trl's SFTConfig / DPOConfig from ours: every setting that changes the result is set here, not left
    to trl's defaults (which would turn on bf16 and gradient checkpointing)."""
    save = cfg.checkpoint_every > 0
    return config_cls(
        output_dir=str(work / "trainer"), learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.micro_batch,
        per_device_eval_batch_size=cfg.micro_batch, gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup, lr_scheduler_type=cfg.scheduler, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 0.0, seed=cfg.seed, data_seed=cfg.seed,
        bf16=s.bf16, fp16=False, use_cpu=s.device.type == "cpu", activation_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length, logging_steps=1, logging_first_step=True,
        save_strategy="steps" if save else "no", save_steps=cfg.checkpoint_every if save else 500,
        save_total_limit=2, report_to=resolve_trackers(cfg.report_to) or "none", push_to_hub=False,
        disable_tqdm=True, dataset_num_proc=None, **specific,
    )  # fmt: skip


def attach_row_freeze(trainer: Any, s: Setup) -> None:
    """The row freeze as a Trainer callback, and weight decay 0 on the embedding matrices (decay would move
    the frozen rows; see trainable.py)."""
    if s.row_freeze is None:
        return

    trainer.add_callback(RowFreezeCallback(s.row_freeze))
    decay_names = trainer.get_decay_parameter_names

    def without_embeddings(self: Any, model: Any) -> list[str]:
        frozen = {id(p) for p in embedding_matrices(model)}
        names = {n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in frozen}
        return [n for n in decay_names(model) if n not in names]

    trainer.get_decay_parameter_names = types.MethodType(without_embeddings, trainer)


def row_freeze_result(trainer: Any) -> dict[str, Any]:
    cb = next((c for c in trainer.callback_handler.callbacks if isinstance(c, RowFreezeCallback)), None)
    return {} if cb is None else {"frozen_rows_unchanged": cb.unchanged}


# ----------------------------------------------------------------------------------- before / after


def english_bpb(model: Any, tokenizer: Any, texts: dict[str, list[str]], bf16: bool, max_len: int) -> dict[str, float]:
    """``{"english_bpb", "target_bpb"}`` of the corpora given (none: {})."""
    if not texts:
        return {}
    return evaluate(model, tokenizer, texts, bf16=bf16, max_len=min(max_len, 1024))


def before(work: Path, measure: Any) -> dict[str, Any]:
    """The figures before training: measured once (``measure()``), kept in the work folder for a resume."""
    path = work / BEFORE_JSON
    if path.exists():
        return read_json(path)
    figures = measure()
    if is_main_process():
        write_json_atomic(path, figures)
    return figures


def compare(before_bpb: dict[str, float], after_bpb: dict[str, float], tolerance: float) -> dict[str, Any]:
    """Before / after bits per byte per corpus, and whether English got worse beyond ``tolerance``."""
    out: dict[str, Any] = {}
    for key in sorted(set(before_bpb) | set(after_bpb)):
        b, a = before_bpb.get(key), after_bpb.get(key)
        out[f"{key}_before"], out[f"{key}_after"] = b, a
    b, a = before_bpb.get("english_bpb"), after_bpb.get("english_bpb")
    if b is not None and a is not None:
        out["english_regressed"] = a > b * (1 + tolerance)
        if out["english_regressed"]:
            print(f"warning: English bits per byte rose from {b:.4f} to {a:.4f} ({(a / b - 1) * 100:+.1f}%, above the "
                  f"{tolerance:.0%} tolerance): this stage cost English quality")  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------ training


def train(trainer: Any, work: Path) -> dict[str, Any]:
    """``trainer.train()``, resumed from the newest checkpoint in the work folder; the training figures."""
    from transformers.trainer_utils import get_last_checkpoint

    out_dir = work / "trainer"
    last = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)
    logs = [r for r in trainer.state.log_history if "loss" in r]
    if is_main_process():
        write_jsonl_atomic(work / METRICS_JSONL, trainer.state.log_history)
    runtime = result.metrics.get("train_runtime")
    tokens = logs[-1].get("num_tokens") if logs else None
    return {
        "steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_loss_first": logs[0]["loss"] if logs else None, "train_loss_last": logs[-1]["loss"] if logs else None,
        "train_loss_mean": result.training_loss, "train_seconds": runtime, "tokens": tokens,
        "tokens_per_s": tokens / runtime if tokens and runtime else None,
        "resumed_from": Path(last).name if last else None,
        "processes": trainer.accelerator.num_processes, "distributed": trainer.accelerator.distributed_type.value,
    }  # fmt: skip


def save_final(trainer: Any, s: Setup, work: Path) -> Path:
    """work/final/: the trained model (LoRA merged in) and the tokenizer with the chat template it came with."""
    final = work / FINAL
    s.tokenizer.chat_template = s.saved_template
    if s.peft_config is not None:
        if is_main_process():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(final)
            s.tokenizer.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # every process takes part (sharded state dicts)
    if is_main_process():
        (final / "training_args.bin").unlink(missing_ok=True)
        ext = s.model_dir / EXTENSION_JSON
        if ext.exists():
            (final / EXTENSION_JSON).write_bytes(ext.read_bytes())
    trainer.accelerator.wait_for_everyone()
    if is_main_process():  # the ranks' shared copy of the data (shared_on_disk) is not part of the output
        import shutil

        shutil.rmtree(work / DATA, ignore_errors=True)
    return final


def after_bpb(final: Path, cfg: AlignConfig, s: Setup) -> dict[str, float]:
    """Bits per byte of final/ as saved, reloaded from disk (main process)."""
    if not s.eval_texts or not is_main_process():
        return {}

    model = load_model(final, s.device)
    return english_bpb(model, load_tokenizer(final), s.eval_texts, s.bf16, cfg.max_length)


def common_figures(s: Setup, kernel: str) -> dict[str, Any]:
    return {"device": str(s.device), "bf16": s.bf16, "attention": kernel, "chat_template": s.template,
            **s.trainable, "final": FINAL}  # fmt: skip


def quiet_datasets() -> None:
    """No progress bar per map / filter of trl's dataset preparation (the stage prints its own lines)."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()


def reset_accelerate() -> None:
    reset_single_process_state(device=True)


# ------------------------------------------------------------------------------------------ printing


def print_align(record: dict[str, Any], out: Path) -> None:
    """A finished sft / dpo stage on the terminal: loss, speed, bits per byte and DPO rewards before -> after."""
    lines = [(f"{record.get('stage')}: {record.get('steps')} steps, loss {_f(record.get('train_loss_first'))} -> "
              f"{_f(record.get('train_loss_last'))}, {_f(record.get('tokens_per_s'), 0)} tokens/s")]  # fmt: skip
    for key in ("english_bpb", "target_bpb", "reward_margin", "reward_accuracy"):
        if f"{key}_before" in record or f"{key}_after" in record:
            lines.append(f"  {key}: {_f(record.get(f'{key}_before'))} -> {_f(record.get(f'{key}_after'))}")
    lines.append(f"  model: {Path(out) / record.get('final', FINAL)}")
    print("\n".join(lines))


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def prepare(cfg: AlignConfig, kind: str) -> tuple[Any, dict[str, Any], Setup]:
    """What SFT and DPO do before building their trainer, in this order so that bad input fails before the
    model loads: check the model folder, read and mix the ``kind`` data (chat / preference), then load the
    model and tokenizer (:func:`setup`). Returns (dataset, mix record, setup)."""
    model_dir = check_model(cfg)
    dataset, mix = read_mix(cfg.data, cfg.translated, kind, ratio=cfg.ratio, strategy=cfg.mix_strategy,
                            seed=cfg.seed, max_examples=cfg.max_examples)  # fmt: skip
    quiet_datasets()
    reset_accelerate()
    return dataset, mix, setup(cfg, model_dir)


def shared_on_disk(dataset: Any, folder: Path, args: Any) -> Any:
    """Under several processes, the mixed data saved to ``folder`` by the main process and read back
    memory-mapped by every rank; one process keeps it in memory. ``args``: the trainer's arguments, whose
    process state (set up as the Trainer will use it) says how many processes there are.

    trl's DPO precomputes the reference log-probs on every rank, has rank 0 write them to a cache file
    and every rank read that file back. The file's folder and name come from the dataset's own cache
    files; a dataset built in memory (ours, mixed from JSONL) has none, so each rank draws a random name
    in its own temporary folder and the others fail to find rank 0's (FileNotFoundError, trl 1.16). Saved
    under the work folder (storage every node sees, like the output), the dataset gives every rank the
    same cache path, and trl's tokenized copies are cached beside it.
    """
    import shutil

    from datasets import load_from_disk

    if args.world_size == 1:
        return dataset
    with args.main_process_first(local=False, desc="the mixed data on disk"):
        if args.process_index == 0:
            shutil.rmtree(folder, ignore_errors=True)  # a resumed run mixes again (same seed: same data)
            dataset.save_to_disk(str(folder))
    return load_from_disk(str(folder))
