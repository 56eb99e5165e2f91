"""Decode cost measurement: it times real calls and writes what the report reads."""

from __future__ import annotations

import json

import numpy as np
import torch

from genrec.data import load_prepared
from genrec.devices import peak_memory
from genrec.eval import MostPop
from genrec.report import ReportOptions, build_report
from genrec.report.cost import write_run_cost


class _Counting(MostPop):
    def __init__(self, counts):
        super().__init__(counts)
        self.calls = []

    def recommend(self, histories, k, users):
        self.calls.append(len(histories))
        return super().recommend(histories, k, users)


def test_write_run_cost_times_single_users_and_batches(toy, tmp_path):
    dataset = load_prepared(toy["data"])
    rec = _Counting(dataset.train_item_counts())
    cost = write_run_cost(
        tmp_path,
        recommender=rec,
        dataset=dataset,
        device="cpu",
        train_seconds=12.5,
        parameters=10,
        batch_size=50,
    )
    n = len(dataset.split("test"))
    assert rec.calls.count(1) >= min(200, n)  # one user per latency call
    assert max(rec.calls) == 50  # throughput batches of batch_size
    decode = cost["decode"]
    assert 0 < decode["latency_ms_p50"] <= decode["latency_ms_p95"]
    assert decode["throughput_users_per_s"] > 0 and decode["throughput_users"] == n
    assert cost["decode_peak_memory"]["bytes"] > 0
    assert json.loads((tmp_path / "cost.json").read_text())["train_seconds"] == 12.5
    assert peak_memory(torch.device("cpu"))["kind"] == "process peak RSS"


def test_report_shows_measured_cost(toy, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps({"config": {"run": {"seed": 3, "name": "pop"}}, "train": {"train_seconds": 4.0}})
    )
    dataset = load_prepared(toy["data"])
    from genrec.eval import evaluate

    evaluate(MostPop.from_dataset(dataset), dataset, "test", progress=False, output=run / "test_eval.json")
    write_run_cost(
        run, recommender=MostPop.from_dataset(dataset), dataset=dataset, device="cpu", parameters=7
    )
    report = build_report([run, toy["cooc"]], tmp_path / "out", options=ReportOptions(plots=False))
    cost = report.data["cost"]["pop"]
    assert cost["train_seconds"] == 4.0  # cost.json left it out: the training loop's clock from run.json
    assert (
        cost["parameters"] == 7 and cost["latency_ms_p50"] > 0 and np.isfinite(cost["throughput_users_per_s"])
    )
    assert report.data["methods"][0]["seeds"] == [3]
