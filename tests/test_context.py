"""Context behaviour: the original's context_test items 1-15, plus immutability and key checks."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from crucible import Context, Experiment


@pytest.fixture
def ctx() -> Context:
    return Context(experiment_id="exp1", run_id="run1", experiment=Experiment(id="exp1"))


# 1-3: construction, defaults, exactly nine fields
def test_required_fields_are_exposed_unchanged(ctx: Context) -> None:
    assert ctx.experiment_id == "exp1"
    assert ctx.run_id == "run1"
    assert ctx.experiment == Experiment(id="exp1")


def test_defaults(ctx: Context) -> None:
    assert list(ctx.outputs) == []
    assert dict(ctx.metrics) == {}
    assert dict(ctx.artifacts) == {}
    assert dict(ctx.telemetry_context) == {}
    assert dict(ctx.assigns) == {}
    assert ctx.trace is None


def test_exactly_nine_fields_and_no_legacy_ones(ctx: Context) -> None:
    names = [f.name for f in dataclasses.fields(Context)]
    assert names == [
        "experiment_id", "run_id", "experiment", "outputs", "metrics",
        "artifacts", "trace", "telemetry_context", "assigns",
    ]  # fmt: skip
    for legacy in ("dataset", "batches", "examples", "backend_sessions", "backend_state"):
        assert not hasattr(ctx, legacy)


def test_required_fields_are_required() -> None:
    with pytest.raises(TypeError):
        Context(experiment_id="e", run_id="r")  # type: ignore[call-arg]


# 4-8: metrics
def test_put_metric_adds_overwrites_and_keeps_others(ctx: Context) -> None:
    c = ctx.put_metric("accuracy", 0.9).put_metric("loss", 0.1).put_metric("accuracy", 0.95)
    assert dict(c.metrics) == {"accuracy": 0.95, "loss": 0.1}


def test_put_metric_also_callable_on_the_class(ctx: Context) -> None:
    assert Context.put_metric(ctx, "a", 1).get_metric("a") == 1


def test_get_metric_value_none_and_default(ctx: Context) -> None:
    c = ctx.put_metric("a", 1).put_metric("stored_none", None)
    assert c.get_metric("a") == 1
    assert c.get_metric("missing") is None
    assert c.get_metric("missing", "default") == "default"
    assert c.get_metric("stored_none", "default") is None  # a stored None wins over the default


def test_update_metric_applies_function(ctx: Context) -> None:
    c = ctx.put_metric("count", 1).update_metric("count", lambda x: x + 1)
    assert c.get_metric("count") == 2


def test_update_metric_passes_stored_none(ctx: Context) -> None:
    seen: list[Any] = []
    c = ctx.put_metric("n", None).update_metric("n", lambda x: seen.append(x) or "called")
    assert seen == [None]
    assert c.get_metric("n") == "called"


def test_update_metric_missing_key_stores_default_without_calling(ctx: Context) -> None:
    def boom(_: Any) -> Any:
        raise AssertionError("must not be called")

    c = ctx.update_metric("absent", boom)
    assert c.has_metric("absent") and c.get_metric("absent") is None
    assert ctx.update_metric("absent", boom, default=0).get_metric("absent") == 0


def test_merge_metrics_adds_and_overwrites(ctx: Context) -> None:
    c = ctx.put_metric("accuracy", 0.5).merge_metrics({"accuracy": 0.95, "loss": 0.05})
    assert dict(c.metrics) == {"accuracy": 0.95, "loss": 0.05}
    with pytest.raises(TypeError):
        ctx.merge_metrics([("a", 1)])  # type: ignore[arg-type]


def test_has_metric(ctx: Context) -> None:
    c = ctx.put_metric("a", None)
    assert c.has_metric("a") is True
    assert c.has_metric("b") is False


# 9: outputs
def test_add_output_appends_at_the_end(ctx: Context) -> None:
    c = ctx.add_output({"result": "a"}).add_output({"result": "b"})
    assert list(c.outputs) == [{"result": "a"}, {"result": "b"}]


def test_add_outputs_appends_in_order_and_empty_is_noop(ctx: Context) -> None:
    c = ctx.add_output(1).add_outputs([2, 3])
    assert list(c.outputs) == [1, 2, 3]
    assert c.add_outputs([]) is c
    with pytest.raises(TypeError):
        c.add_outputs("abc")


# 10: artifacts
def test_artifacts(ctx: Context) -> None:
    c = ctx.put_artifact("report", "report.html")
    assert c.get_artifact("report") == "report.html"
    assert c.put_artifact("report", "r2.html").get_artifact("report") == "r2.html"
    assert c.get_artifact("missing") is None
    assert c.get_artifact("missing", "not_found") == "not_found"
    assert c.has_artifact("report") and not c.has_artifact("missing")


# 11-12: assigns
def test_assign_key_value_sets_overwrites_preserves(ctx: Context) -> None:
    c = ctx.assign("user", "alice").assign("role", "admin").assign("user", "bob")
    assert dict(c.assigns) == {"user": "bob", "role": "admin"}


def test_assign_keywords_and_mapping_merge(ctx: Context) -> None:
    c = ctx.assign("keep", 1).assign(user="alice", priority="high")
    assert c.assigns["user"] == "alice" and c.assigns["keep"] == 1
    c = c.assign({"priority": "low", "extra": True})
    assert dict(c.assigns) == {"keep": 1, "user": "alice", "priority": "low", "extra": True}
    c = c.assign([("k", 1), ("k", 2)])  # key/value pairs: last duplicate wins
    assert c.assigns["k"] == 2


def test_assigns_hold_arbitrary_domain_payloads(ctx: Context) -> None:
    class Session:
        pass

    s = Session()
    c = ctx.assign(dataset=[{"x": 1}], batches=[[1, 2], [3]], session=s, nested={"a": {"b": [1]}})
    assert c.assigns["session"] is s
    assert c.assigns["batches"] == [[1, 2], [3]]
    assert c.assigns["nested"]["a"]["b"] == [1]


# 13-14: stage completion
def test_mark_stage_complete_tracks_and_never_duplicates(ctx: Context) -> None:
    c = ctx.mark_stage_complete("load").mark_stage_complete("train").mark_stage_complete("load")
    assert c.completed_stages() == ["load", "train"]
    assert c.stage_completed("load") and c.stage_completed("train")
    assert not c.stage_completed("eval")


def test_completed_stages_empty_and_in_order(ctx: Context) -> None:
    assert ctx.completed_stages() == []
    c = ctx
    for name in ["data_load", "backend_call", "bench"]:
        c = c.mark_stage_complete(name)
    assert c.completed_stages() == ["data_load", "backend_call", "bench"]


def test_caller_assigns_preseed_completed_stages() -> None:
    c = Context(
        experiment_id="e",
        run_id="r",
        experiment=Experiment(id="e"),
        assigns={"completed_stages": ["a", "b", "a"]},
    )
    assert c.completed_stages() == ["a", "b"]
    assert c.mark_stage_complete("b").completed_stages() == ["a", "b"]
    assert c.assign(completed_stages=["z"]).mark_stage_complete("y").completed_stages() == [
        "z",
        "y",
    ]


# 15: integration
def test_combined_workflow(ctx: Context) -> None:
    c = (
        ctx.assign(dataset=[1, 2, 3])
        .put_metric("count", 0)
        .update_metric("count", lambda n: n + 1)
        .update_metric("count", lambda n: n + 1)
        .add_outputs([{"i": 1}, {"i": 2}])
        .put_artifact("model", "/tmp/model.bin")
        .mark_stage_complete("load")
        .mark_stage_complete("train")
    )
    assert c.get_metric("count") == 2
    assert len(c.outputs) == 2 and c.outputs[1] == {"i": 2}
    assert c.get_artifact("model") == "/tmp/model.bin"
    assert c.completed_stages() == ["load", "train"]
    assert c.assigns["dataset"] == [1, 2, 3]


# Immutability, keys, events, serialisation
def test_helpers_never_change_the_old_context(ctx: Context) -> None:
    before = ctx.to_dict()
    ctx.put_metric("a", 1).assign(x=1).add_output(1).put_artifact("r", "p").mark_stage_complete("s")
    ctx.record_event("e", k=1)
    assert ctx.to_dict() == before


def test_fields_and_mappings_are_read_only(ctx: Context) -> None:
    c = ctx.put_metric("a", 1).assign(u=1).add_output(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.run_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.metrics["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        c.assigns["u"] = 2  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        del c.metrics["a"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        c.outputs[0] = 5  # type: ignore[index]
    c.assigns.update({"u": 3})  # type: ignore[attr-defined]  # returns a new map
    assert c.assigns["u"] == 1


def test_plain_dicts_passed_in_are_copied_not_shared() -> None:
    metrics = {"a": 1}
    c = Context(experiment_id="e", run_id="r", experiment=Experiment(id="e"), metrics=metrics)
    metrics["a"] = 2
    assert c.get_metric("a") == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.put_metric(1, "v"),
        lambda c: c.get_metric(("t",)),
        lambda c: c.update_metric(None, lambda x: x),
        lambda c: c.merge_metrics({1: "v"}),
        lambda c: c.has_metric(b"k"),
        lambda c: c.put_artifact(2, "x"),
        lambda c: c.assign(3, "x"),
        lambda c: c.assign({4: "x"}),
        lambda c: c.mark_stage_complete(5),
        lambda c: Context(experiment_id="e", run_id="r", experiment=Experiment(id="e"),
                          metrics={6: 1}),
    ],
)  # fmt: skip
def test_non_str_keys_raise_type_error_naming_the_key(ctx: Context, call: Any) -> None:
    with pytest.raises(TypeError, match="key must be str"):
        call(ctx)


def test_record_event_is_a_pure_append(ctx: Context) -> None:
    c = ctx.record_event("cache.miss", key="k1").record_event("retrying", attempt=2)
    assert ctx.trace is None
    assert c.trace is not None
    assert [e.name for e in c.trace.pending_events] == ["cache.miss", "retrying"]
    assert dict(c.trace.pending_events[1].attributes) == {"attempt": 2}


def test_to_dict_is_json_safe_and_redacts_secrets(ctx: Context) -> None:
    import datetime as dt

    c = (
        ctx.put_metric("ci", (0.1, 0.2))
        .put_metric("nan", float("nan"))
        .assign(when=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), api_key="sk-live-123", tags={"b", "a"})
        .add_output({"obj": object()})
    )
    d = c.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["metrics"]["ci"] == [0.1, 0.2]
    assert d["metrics"]["nan"] == "NaN"
    assert d["assigns"]["when"] == "2026-01-02T00:00:00+00:00"
    assert d["assigns"]["tags"] == ["a", "b"]
    assert "sk-live-123" not in text
    assert d["assigns"]["api_key"] == "[REDACTED]"


def test_long_histories_stay_correct(ctx: Context) -> None:
    # Per-call cost at 1k vs 100k entries is measured by benchmarks/context_bench.py.
    c = ctx
    for i in range(5000):
        c = c.add_output(i).put_metric(f"m{i}", i).mark_stage_complete(f"s{i}")
    assert len(c.outputs) == 5000 and len(c.metrics) == 5000 and len(c.completed_stages()) == 5000
    assert c.stage_completed("s4999") and not c.stage_completed("s5000")


def test_mappings_iterate_in_insertion_order_like_dicts(ctx: Context) -> None:
    c = ctx.put_metric("zeta", 1).put_metric("alpha", 2).merge_metrics({"mid": 3, "zeta": 4})
    assert list(c.metrics) == ["zeta", "alpha", "mid"]  # an overwrite keeps its place
    assert list(c.to_dict()["metrics"]) == ["zeta", "alpha", "mid"]
    c = c.assign(b=1).assign({"a": 2}).assign("c", 3)
    assert list(c.assigns) == ["b", "a", "c"]


def test_evolve_replaces_fields_and_freezes_plain_values(ctx: Context) -> None:
    c = ctx.put_metric("a", 1).evolve(run_id="run2", metrics={"b": 2})
    assert (c.run_id, dict(c.metrics)) == ("run2", {"b": 2})
    assert ctx.run_id == "run1" and ctx.get_metric("a") is None
    with pytest.raises(TypeError):
        c.metrics["b"] = 3  # type: ignore[index]
    with pytest.raises(TypeError, match="key must be str"):
        ctx.evolve(assigns={1: "x"})
