"""Config: TOML parsing and validation errors that name the key."""

import pytest

from shepherd.config import ConfigError, load_config, parse_config


def test_default_is_the_local_pair_priced_as_the_paper():
    cfg = load_config(None)
    assert cfg.slm.model.startswith("qwen2.5-coder-0.5b")
    assert cfg.llm.model.startswith("qwen2.5-coder-1.5b")
    assert (cfg.llm.price.input, cfg.llm.price.output) == (0.59, 0.79)
    assert cfg.slm.price.input == 0.0


def test_full_file_round_trip(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("""
[slm]
model = "qwen2.5-coder-0.5b"
price = { input = 0.01, output = 0.02 }
[llm]
backend = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "big"
prefix_route = "user_hint"
[policy]
name = "fixed-hint"
settings = { fraction = 0.2 }
[run]
max_tokens = 64
on_llm_error = "slm"
""")
    cfg = load_config(f)
    assert cfg.llm.prefix_route == "user_hint"
    assert cfg.slm.price.output == 0.02
    assert cfg.run.on_llm_error == "slm"


@pytest.mark.parametrize("text, needle", [
    ("[slm]\nmodle = 'x'\n", "slm.modle: unknown key"),
    ("[llm]\nbackend = 'openai'\nmodel = 'm'\n", "base_url"),
    ("[llm]\nmodel = 'm'\nprice = { input = -1 }\n", "llm.price.input"),
    ("[run]\nmax_tokens = 0\n", "run.max_tokens"),
    ("[slm]\nmodel = ''\n", "slm.model"),
    ("[llm]\nmodel = 'x'\nbackend = 'ollama-magic'\n", "llm.backend"),
    ("not = [toml\n", "not valid TOML"),
])
def test_errors_name_the_key(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert needle in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/shepherd.toml")


def test_unknown_policy_is_clear():
    from shepherd.policies import make_policy

    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        make_policy("magic")
    cfg = parse_config({"policy": {"name": "fixed-hint", "settings": {"tokens": 5}}})
    assert make_policy(cfg.policy.name, **cfg.policy.settings).hint_tokens() == 5
