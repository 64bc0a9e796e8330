"""Document masking: a packed row's loss equals the token-weighted loss of its documents run one by one."""

from __future__ import annotations

import copy

import pytest
import torch

from langadapt.train import masking
from langadapt.train.batches import StepPlan, predicted_tokens


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    return LlamaForCausalLM(cfg).float()


DOC_LENGTHS = [[7, 1, 20, 12], [40], [3, 3, 3, 31]]  # a 1-token document, a row of one document


def _packed():
    torch.manual_seed(1)
    docs = [[torch.randint(0, 97, (n,)) for n in row] for row in DOC_LENGTHS]
    ids = torch.stack([torch.cat(row) for row in docs])
    pos = torch.stack([torch.cat([torch.arange(len(d)) for d in row]) for row in docs])
    return docs, ids, pos


def _separate_loss_tensor(model, docs) -> torch.Tensor:
    """Token-weighted mean over documents run alone (each document's first token is never predicted)."""
    total, count = 0.0, 0
    for row in docs:
        for d in row:
            if len(d) < 2:
                continue
            logits = model(input_ids=d[None], use_cache=False).logits[0, :-1].float()
            total = total + torch.nn.functional.cross_entropy(logits, d[1:], reduction="sum")
            count += len(d) - 1
    return total / count


def _separate_loss(model, docs) -> float:
    with torch.no_grad():
        return _separate_loss_tensor(model, docs).item()


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _has_flash() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


GPU = torch.cuda.is_available()
PATHS = [
    ("sdpa", "cpu"), ("eager", "cpu"), ("flex", "cpu"),
    pytest.param("sdpa", "cuda", marks=pytest.mark.skipif(not GPU, reason="needs a GPU")),
    pytest.param("flex", "cuda", marks=pytest.mark.skipif(not GPU, reason="needs a GPU")),
    pytest.param("flash", "cuda", marks=pytest.mark.skipif(not (GPU and _has_flash()), reason="no flash-attn")),
]  # fmt: skip


@pytest.mark.parametrize(("path", "device"), PATHS)
def test_packed_loss_equals_separate_documents(model, path, device):
    """Loss and gradients of a packed row = those of its documents run one by one (fp32, 1e-5).

    flex_attention has no backward on CPU (torch 2.13), so there only its forward is checkable; on a
    GPU every path trains. flash-attention has no fp32 kernels: it runs in bf16 and is compared with
    the same documents through the same kernel one by one (a bf16 tolerance).
    """
    docs, ids, pos = _packed()
    if path == "flex" and not masking._has_flex():
        pytest.skip("no flex_attention in this torch")
    dtype = torch.bfloat16 if path == "flash" else torch.float32
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    docs = [[d.to(device) for d in row] for row in docs]
    model.set_attn_implementation(masking.HF_IMPLEMENTATION[path])
    kwargs = masking.forward_kwargs(path, ids.to(device), pos.to(device))
    model.train()  # train mode is where the cache trap bites; dropout is 0 in this config
    trains = not (path == "flex" and device == "cpu")
    with torch.enable_grad() if trains else torch.no_grad():
        packed = model(**kwargs).loss
    if trains:
        packed.backward()
        packed_grads = _grads(model)
    if path != "flash":  # the reference: SDPA, one document at a time
        model.set_attn_implementation("sdpa")
    expected = _separate_loss_tensor(model, docs)
    tol = 2e-2 if path == "flash" else 1e-5
    assert packed.item() == pytest.approx(expected.item(), abs=tol)
    if trains:
        expected.backward()
        for name, grad in _grads(model).items():
            torch.testing.assert_close(packed_grads[name].float(), grad.float(), rtol=tol, atol=tol, msg=name)


def test_transformers_position_id_masking_needs_use_cache_false(model):
    """The trap the issue describes, kept as a test: position ids alone mask only without a cache."""
    docs, ids, pos = _packed()
    model.set_attn_implementation("sdpa")
    labels = masking.document_labels(ids, pos)
    expected = _separate_loss(model, docs)
    with torch.no_grad():
        no_cache = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss.item()
    assert no_cache == pytest.approx(expected, abs=1e-5)
    model.eval()  # eval + use_cache=True builds a cache: transformers stops deriving the document mask
    with torch.no_grad():
        cached = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=True).loss.item()
    assert abs(cached - expected) > 1e-3


def test_labels_and_counts():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [3, 4, 0, 1, 2, 3]])  # row 2 starts with a continuation
    labels = masking.document_labels(torch.arange(12).view(2, 6), pos)
    assert labels.tolist() == [[-100, 1, 2, -100, 4, -100], [-100, 7, -100, 9, 10, 11]]
    assert predicted_tokens(pos) == 3 + 4  # the shifted loss never uses column 0
    mask = masking.sdpa_mask(pos)[0, 0]
    assert mask[2].tolist() == [True, True, True, False, False, False]
    assert mask[4].tolist() == [False, False, False, True, True, False]
    flash = masking.flash_kwargs(pos)
    assert flash["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 8, 12] and flash["max_length_q"] == 4


def test_step_plan_shards_one_process_like_two():
    one = StepPlan(rows=50, micro_batch=2, grad_accum=4, processes=1, seed=3)
    two = StepPlan(rows=50, micro_batch=2, grad_accum=2, processes=2, seed=3)
    for step in range(one.steps_per_epoch * 2 + 1):  # crosses epochs
        a = sorted(r for m in range(4) for r in one.micro_rows(step, 0, m))
        b = sorted(r for p in range(2) for m in range(2) for r in two.micro_rows(step, p, m))
        assert a == b and len(set(a)) == 8
