"""docs/results.md is the template's words filled with the committed numbers: rebuilt from the committed spec
and docs/results/summary.json alone, it is the committed document, byte for byte (the slow test in
test_study.py recomputes the summary itself from the traces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from shepherd.evaluation.study import load_spec, render_results_md

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed():
    spec = load_spec(REPO / "traces" / "study.toml")
    summary = json.loads((REPO / "docs" / "results" / "summary.json").read_text(encoding="utf-8"))
    return spec, summary


def test_docs_results_md_is_the_template_filled_with_the_committed_summary(committed):
    spec, summary = committed
    assert render_results_md(spec, summary) == (REPO / "docs" / "results.md").read_text(encoding="utf-8"), (
        "docs/results.md differs from what the study's template makes of the committed summary: run "
        "`shepherd study traces/study.toml --out docs` and commit")


def test_the_spec_names_the_pair_and_its_text_is_never_read_as_a_template(committed):
    spec, summary = committed
    md = render_results_md(spec, summary)
    assert f"Setup: SLM {spec.slm_model} and LLM {spec.llm_model} ({spec.runtime}), greedy decoding" in md
    assert f"Hardware: {spec.hardware}." in md
    plain = spec.model_copy(update={"slm_model": "", "llm_model": "", "runtime": "", "hardware": "",
                                    "discussion": "Braces {% if x %} and {{ train.items }} ({# not a comment #})."})
    md = render_results_md(plain, summary)
    assert "Setup: greedy decoding" in md and "Hardware:" not in md
    # the discussion's placeholders are filled from the summary, and nothing else in it is Jinja
    assert f"Braces {{% if x %}} and {summary['train']['items']} ({{# not a comment #}})." in md


def test_a_value_the_template_needs_is_never_silently_blank(committed):
    spec, summary = committed
    broken = json.loads(json.dumps(summary))
    del broken["predictor"]["learning_curve"]["folds"]
    with pytest.raises(UndefinedError, match="folds"):
        render_results_md(spec.model_copy(update={"discussion": ""}), broken)
