"""The learning-rate schedule: MONAI's warm-up cosine, bounded by a time budget."""

from __future__ import annotations

import time

import pytest
import torch
from monai.optimizers import WarmupCosineSchedule

from training.config import complete_config
from training.errors import ConfigError
from training.trainer import BudgetedWarmupCosine, default_warmup_steps

LR = 1e-3


def _rates(steps: int, **kwargs) -> list[float]:
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    schedule = kwargs.pop("schedule", BudgetedWarmupCosine)(optimiser, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    return rates


@pytest.mark.parametrize(("total", "warmup"), [(1000, 50), (40, 2), (10, 1)])
def test_without_a_budget_the_rates_are_monais(total: int, warmup: int) -> None:
    options = {"warmup_steps": warmup, "t_total": total, "end_lr": 0.02 * LR}
    assert _rates(total, **options) == _rates(
        total, schedule=WarmupCosineSchedule, **options
    )


def test_warm_up_starts_at_zero_and_reaches_the_rate() -> None:
    rates = _rates(30, warmup_steps=10, t_total=100, end_lr=0.02 * LR)
    assert rates[0] == 0.0
    assert rates[5] == pytest.approx(0.5 * LR)
    assert rates[10] == pytest.approx(LR)


def test_the_cosine_ends_at_the_floor_and_stays_there() -> None:
    rates = _rates(130, warmup_steps=10, t_total=100, end_lr=0.02 * LR)
    after = rates[10:101]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert rates[55] == pytest.approx(0.5 * LR)
    assert rates[100:] == pytest.approx([0.02 * LR] * 30)


def test_a_spent_time_budget_takes_the_rate_to_the_floor() -> None:
    """Half the budget gone at step 10 of 1000: the cosine is half-way."""
    half_spent = time.perf_counter() - 50.0
    rates = _rates(
        12,
        warmup_steps=10,
        t_total=1000,
        end_lr=0.02 * LR,
        budget_s=100.0,
        started=half_spent,
    )
    assert rates[9] == pytest.approx(0.9 * LR)  # warm-up follows the steps alone
    assert rates[10] == pytest.approx(0.5 * LR, rel=0.01)
    spent = _rates(
        12,
        warmup_steps=10,
        t_total=1000,
        end_lr=0.02 * LR,
        budget_s=100.0,
        started=time.perf_counter() - 500.0,
    )
    assert spent[10:] == pytest.approx([0.02 * LR] * 2)


@pytest.mark.parametrize(
    ("total", "warmup"), [(10, 1), (100, 5), (500, 25), (10**5, 100)]
)
def test_default_warm_up_is_a_twentieth_of_the_steps_at_most_100(
    total: int, warmup: int
) -> None:
    assert default_warmup_steps(total) == warmup


def test_warm_up_steps_are_configurable_and_checked() -> None:
    raw = {"name": "n", "network": {"kind": "redcnn"}}
    assert complete_config(raw)["train"]["warmup_steps"] is None
    config = complete_config({**raw, "train": {"warmup_steps": 7}})
    assert config["train"]["warmup_steps"] == 7
    with pytest.raises(ConfigError, match="warmup_steps"):
        complete_config({**raw, "train": {"warmup_steps": -1}})
