"""The per-step report: MFU's parts, and the log line and metrics.jsonl record of a step."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from langadapt.train.monitor import Monitor, flops_per_token, gpu_peak, read_metrics


def test_flops_per_token_is_6n_plus_attention():
    smollm2 = SimpleNamespace(num_hidden_layers=30, hidden_size=576)
    assert flops_per_token(smollm2, 2048, 134_515_008) == 6 * 134_515_008 + 12 * 30 * 576 * 2048


def test_gpu_peak_only_for_known_gpus(monkeypatch):
    assert gpu_peak(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert gpu_peak(SimpleNamespace(type="cuda")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Unlisted Accelerator")
    assert gpu_peak(SimpleNamespace(type="cuda")) is None  # no made-up peak: MFU is left out


def test_step_line_and_record(tmp_path, capsys):
    monitor = Monitor(tmp_path, 10, 0, enabled=True)
    step = {"step": 1, "total": 10, "loss": 2.5, "lr": 1e-4, "grad_norm": 0.5, "tokens_per_s": 351234.0}
    monitor.log({**step, "mfu": 0.3512})
    monitor.log({**step, "step": 2, "mfu": None})  # a CPU step: no MFU
    monitor.close()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert lines[0] == "step 1/10 loss 2.5000 lr 0.0001 grad_norm 0.5 tok/s 351,234 mfu 35.1%"
    assert lines[1].endswith("tok/s 351,234")
    assert [r["mfu"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0.3512, None]
