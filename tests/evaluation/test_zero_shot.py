"""The paper's zero-shot setting as one command: learned policies trained on one task's traces,
evaluated on another's (here: the scripted math store -> real HumanEval items graded in the sandbox)."""

import json

import pytest
from code_fakes import build_code_store
from eval_fakes import build_store

from shepherd.tasks import registry


@pytest.fixture(scope="module")
def stores(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("zs")
    train, _, _ = build_store(d / "math.sqlite", n=16)
    train.close()
    test, _ = build_code_store(d / "code.sqlite", data_dir, n=4)
    return d / "math.sqlite", test


def test_zero_shot_eval_is_one_command(stores, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from shepherd.cli import app

    monkeypatch.setitem(registry._TASKS, "fakemath", "eval_fakes:FakeMath")
    train, test = stores
    out = tmp_path / "zs"
    res = CliRunner().invoke(app, ["eval", "--train", str(train), "--test", str(test), "--tasks", "humaneval",
                                   "--out", str(out), "--featurizer", "lexical", "--bootstrap", "100",
                                   "--max-points", "5"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["test"]["tasks"]) == ["humaneval"]
    assert m["train"]["tasks"]["fakemath"]["items"] and m["train"]["same_store_split"] is None
    assert m["models"] == [{"slm": "code-slm", "llm": "code-llm"}]
    results = json.loads((out / "results.json").read_text())["tasks"][0]
    fams = {f["name"]: f for f in results["families"]}
    # every family ran on all 4 items, none failed
    for f in fams.values():
        for p in f["points"]:
            assert p["error"] is None, (f["name"], p["error"])
            assert len(p["items"]) == 4
    assert fams["llm-only"]["points"][0]["accuracy"]["value"] == 1.0
    assert fams["slm-only"]["points"][0]["accuracy"]["value"] == 0.0
    # ABC compares programs: the first item's samples agree (same code), the others' differ -> escalate
    abc = next(p for p in fams["abc"]["points"] if p["policy"]["k"] == 3 and p["policy"]["agree"] == 3)
    dec = {i["item_id"]: i["decision"] for i in abc["items"]}
    assert dec == {"HumanEval/0": "slm", "HumanEval/1": "llm", "HumanEval/2": "llm", "HumanEval/3": "llm"}
    # the learned routers trained on math traces still produce a full curve on code (unseen task)
    for name in ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt", "proactive"):
        assert name in fams and len(fams[name]["points"]) >= 2
    text = (out / "report.md").read_text()
    assert "## humaneval" in text and "fakemath" in text
