"""config/ as a package (issue 17): the shared bases change neither the recipe keys nor the stage.json
configs (a run folder made before is still skipped), docstrings follow the class hierarchy, the stage's
own options come first, and every class's validation runs once."""

from __future__ import annotations

import dataclasses

import pytest

from langadapt import config as C
from langadapt import runs
from langadapt.stages import BY_NAME, STAGES

# Each stage config's keys in stage.json before config.py became a package, in their order then.
KEYS_BEFORE = {
    "prepare": "input lang text_field executor workers tasks normalize url_placeholder email_placeholder "
    "min_script_ratio language_id min_language_score quality_filter min_words boilerplate_filter "
    "boilerplate_min_doc_share boilerplate_min_docs exact_dedup minhash_dedup minhash_threshold minhash_ngrams "
    "minhash_buckets minhash_rows slurm_partition slurm_time cpus_per_task mem_per_cpu_gb output_format licenses "
    "ray_address",  # ray_address (issue 19) is runtime_only: a folder made without it is still skipped
    "sweep": "base corpus english_corpus sizes min_frequency threshold text_field",
    "extend": "base corpus english_corpus english_heldout target_heldout num_new_tokens min_frequency text_field "
    "max_docs workers",  # workers (issue 19) is runtime_only: a folder made without it is still skipped
    "init": "model tokenizer method output_remedy output_shift pad_to_multiple_of seed kl_corpus kl_max_docs "
    "text_field bf16 device dtype",  # dtype (issue 19): the output keeps the model's dtype (was always fp32)
    "distill": "model teacher corpus steps calibrate_steps lr calibrate_lr batch_size seq_len seed warmup "
    "min_lr_ratio grad_clip bf16 checkpoint_every report_to text_field device dtype",  # dtype: issue 19
    "pack": "tokenizer target english ratio seq_len tokens max_epochs seed workers shuffle_buffer text_field",
    "data_translate": "input kind translator translator_kind back_translator backend src tgt pairs prompt shots "
    "chat_instruction src_tag tgt_tag batch_size max_new_tokens_factor max_new_tokens_extra min_script_ratio "
    "language_id langid_min_letters min_length_ratio max_length_ratio round_trip min_round_trip_chrf max_items "
    "seed bf16 device",
    "pretrain": "model data eval_target eval_english train lr min_lr_ratio warmup weight_decay betas grad_clip "
    "micro_batch grad_accum max_steps max_minutes bf16 compile gradient_checkpointing attention eval_every "
    "eval_max_docs select_metric checkpoint_every keep_checkpoints report_to text_field seed device",
    "sft": "model data translated ratio mix_strategy max_examples chat_template max_length lr epochs max_steps "
    "micro_batch grad_accum warmup scheduler weight_decay grad_clip train lora lora_r lora_alpha lora_dropout "
    "lora_target attention eval_english eval_target eval_max_docs english_tolerance checkpoint_every bf16 "
    "gradient_checkpointing report_to text_field seed device packing",
    "dpo": "model data translated ratio mix_strategy max_examples chat_template max_length lr epochs max_steps "
    "micro_batch grad_accum warmup scheduler weight_decay grad_clip train lora lora_r lora_alpha lora_dropout "
    "lora_target attention eval_english eval_target eval_max_docs english_tolerance checkpoint_every bf16 "
    "gradient_checkpointing report_to text_field seed device beta precompute_ref_log_probs eval_pairs",
    "eval": "models target english max_docs max_doc_chars batch_size max_len stride bf16 text_field device "
    "dtype",  # dtype: added later (issue 19: a bf16 model scored without a float32 copy)
    "make_choice": "pairs src tgt n_choices max_items split seed",
    "choice": "models task max_items batch_size bf16 device",
    "translate": "models pairs src tgt directions shots max_items split seed batch_size max_new_tokens_factor "
    "max_new_tokens_extra bf16 device",
    "samples": "models prompts target english tgt per_language min_chars prompt_chars max_new_tokens batch_size "
    "bf16 text_field device",
    "make_chat": "pairs target english target_heldout src tgt tgt_name translate_prompt heading_prompt "
    "heading_prompt_tgt translation_items heading_items heldout_items heldout_split seed text_field",
    "chat": "models preferences pairs prompts english src tgt tgt_name translate_prompt max_new_tokens "
    "max_new_tokens_factor max_new_tokens_extra max_docs max_doc_chars samples batch_size seed bf16 text_field "
    "device first_is_base",  # first_is_base: added later (the chat demo measures the base model first)
    "report": "run_dir translation_samples max_sample_chars significance",
    "export": "model outtype llama_cpp llama_lib verify verify_target verify_english tokenize_docs bpb_docs "
    "max_doc_chars bpb_tolerance prompts max_new_tokens threads text_field",  # issue 18: a new stage
    "speed": "models target english tgt per_language prompt_words words max_tokens_per_word repeats clock runtimes gguf "
    "llama_cpp llama_lib threads heldout_docs bf16 text_field device",  # issue 18: a new stage
}


def test_every_stage_is_covered():
    assert set(KEYS_BEFORE) == {s.name for s in STAGES}


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_stage_json_config_keeps_its_keys(stage):
    assert set(runs.to_jsonable(stage.config())) == set(KEYS_BEFORE[stage.name].split())


def test_a_run_folder_made_before_the_package_is_skipped(tmp_path):
    """stage.json written with the old key order: the same config, so the finished stage is skipped."""
    cfg = C.EvalConfig(models=["a", "b"], target=["t.jsonl"])
    now = runs.to_jsonable(cfg)
    before = {key: now[key] for key in KEYS_BEFORE["eval"].split()}
    out = tmp_path / "eval"
    out.mkdir()
    runs.write_json_atomic(out / runs.STAGE_JSON, {"stage": "eval", "config": before, "target_bpb": 1.0})
    runs.mark_done(out)
    record = runs.run_stage(BY_NAME["eval"], cfg, out)
    assert record["skipped"] and record["target_bpb"] == 1.0


def test_shared_fields_are_declared_once():
    declaring = {name: {C.declared_in(s.config, name) for s in STAGES if name in C.field_docs(s.config)}
                 for name in ("device", "bf16", "text_field", "models")}  # fmt: skip
    assert declaring == {"device": {C.Runtime}, "bf16": {C.Runtime}, "text_field": {C.TextField},
                         "models": {C.ModelList}}  # fmt: skip


def test_field_docs_follow_the_class_hierarchy():
    runtime = C.field_docs(C.Runtime)
    assert C.field_docs(C.EvalConfig)["device"] == runtime["device"]
    assert C.field_docs(C.SftConfig)["device"] == runtime["device"]  # through AlignConfig
    assert C.field_docs(C.EvalChatConfig)["models"] == C.field_docs(C.ModelList)["models"]
    # a subclass that redeclares a field documents it itself; the rest come from its base
    assert C.field_docs(C.DpoConfig)["ratio"].startswith("Share of translated preference pairs")
    assert C.field_docs(C.DpoConfig)["model"] == C.field_docs(C.AlignConfig)["model"]


def test_own_options_come_first():
    names = [f.name for f in C.option_fields(C.EvalConfig)]
    assert names[:2] == ["models", "target"] and names[-3:] == ["text_field", "bf16", "device"]
    sft = [f.name for f in C.option_fields(C.SftConfig)]
    assert sft[0] == "model" and sft[-4:] == ["packing", "text_field", "bf16", "device"]
    assert {f.name for f in C.option_fields(C.DpoConfig)} == {f.name for f in dataclasses.fields(C.DpoConfig)}


@pytest.mark.parametrize("cls", [C.EvalConfig, C.DpoConfig, C.DataTranslateConfig, C.PretrainConfig])
def test_a_base_check_runs_beside_the_stage_checks(cls):
    with pytest.raises(C.ConfigError, match="device must be"):
        cls(device="gpu")


def test_a_subclass_runs_its_base_checks_and_its_own():
    with pytest.raises(C.ConfigError, match="ratio must be between 0 and 1"):
        C.DpoConfig(ratio=2.0)  # AlignConfig's check
    with pytest.raises(C.ConfigError, match="beta and eval_pairs"):
        C.DpoConfig(beta=0)


def test_configs_stay_keyword_only():
    with pytest.raises(TypeError):
        C.EvalConfig(["a"])
