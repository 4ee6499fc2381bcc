"""A metric trigger's firing carries the metric's value and threshold: in the firing,
its ``prefect.automation.triggered`` event's payload, checkpoints and the template
context, so a notification can quote them (the wire: tests/actors/test_metric_wire.py)."""

from __future__ import annotations

from marmot.engine.templates import build_context, render
from marmot.engine.triggers.firing import (
    MetricReading,
    TriggerState,
    dump_firing,
    load_firing,
    triggered_event,
)
from tests.engine.factories import AUTOMATION_ID, automation
from tests.engine.test_rules_metric import SLOW, engine, finished, simulate


def test_a_metric_firing_carries_the_value_and_threshold() -> None:
    # One run of 100 s against "duration > 60": the mean is 100.
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert fired.metric == MetricReading("duration", ">", 60, 100.0)


def test_a_resolution_carries_the_value_that_recovered() -> None:
    out = simulate(engine(SLOW, resolve=True), finished("a", 0, 100), until=5000)
    assert out[0].metric is not None and out[0].metric.value == 100.0
    resolved = out[1]
    assert resolved.state is TriggerState.Resolved
    assert resolved.metric is not None
    assert resolved.metric.threshold == 60
    # The window emptied: no runs measured, no value.
    assert resolved.metric.value is None


def test_the_triggered_event_quotes_the_metric() -> None:
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    announced = triggered_event(automation(SLOW), fired)
    assert announced.payload["metric"] == {
        "name": "duration",
        "operator": ">",
        "threshold": 60,
        "value": 100.0,
    }


def test_other_firings_carry_no_metric() -> None:
    trigger = {"type": "event", "expect": ["prefect.flow-run.Failed"], "threshold": 1}
    (fired,) = engine(trigger).apply(finished("a", 0, 10, state="Failed"))
    assert fired.metric is None
    assert "metric" not in triggered_event(automation(trigger), fired).payload


def test_the_reading_survives_checkpoints() -> None:
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert load_firing(dump_firing(fired), AUTOMATION_ID).metric == fired.metric
    # Checkpoints written before the reading was carried still load.
    old = {k: v for k, v in dump_firing(fired).items() if k != "metric"}
    assert load_firing(old, AUTOMATION_ID).metric is None


def test_a_notification_template_can_quote_the_metric() -> None:
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert fired.metric is not None
    context = build_context(None, automation(SLOW), {}, None, metric=fired.metric.as_payload())
    text = render(
        "{{ metric.name }} is {{ metric.value }} s ({{ metric.operator }} {{ metric.threshold }})",
        context,
        max_bytes=1000,
        deadline_s=5.0,
        now=lambda: 0.0,
    )
    assert text == "duration is 100.0 s (> 60.0)"
