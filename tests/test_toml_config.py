"""One config dialect: the trainer's, BMPDS's and `picbench run --config`'s files go through one typed
loader (`picbench.toml_config`) and fail with one error type naming the file, the table and the key;
the smoke switch is `models` in all three (the spellings before it warn, or are refused where they
have no equivalent); the shipped configs live in one place and load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from train_helpers import tiny_config

from picbench.errors import ConfigError
from picbench.reference_impl.bmpds.config import CONFIG_DIR as BMPDS_CONFIGS
from picbench.reference_impl.bmpds.config import load_config as load_bmpds
from picbench.reference_impl.training import CONFIG_DIR as TRAIN_CONFIGS
from picbench.reference_impl.training import load_config as load_train
from picbench.run_file import read_run_file
from picbench.toml_config import load_toml

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    required: int
    inner: Inner = Inner()
    tables: tuple[Inner, ...] = ()
    kind: str | None = None


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("required = 'x'", "required", "must be int, got 'x'"),
        ("required = 1\n[inner]\nrate = nan", "inner.rate", "must be a finite number"),
        ("required = 1\n[inner]\nnames = [1]", "inner.names[0]", "must be str"),
        ("required = 1\n[inner]\nrat = 1", "inner.rat", "is unknown (known: names, rate)"),
        ("required = 1\n[[tables]]\nrate = 'fast'", "tables[0].rate", "must be float"),
        ("required = 1\ninner = 3", "inner", "must be a table"),
        ("[inner]\nrate = 1", None, "lacks required key(s) ['required']"),
        ("required = 1\nkind = 2", "kind", "must be str"),
        ("required = ", None, "not valid TOML"),
    ],
)
def test_every_error_names_the_file_and_the_key(tmp_path: Path, text: str, field: str | None, reason: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_toml(path, Outer)
    assert err.value.field == field and err.value.file == path and reason in str(err.value) and str(path) in str(err.value)


def test_types_are_taken_as_toml_gives_them(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("required = 3\nkind = 'k'\n[inner]\nrate = 2\nnames = ['a', 'b']\n[[tables]]\n[[tables]]\nrate = 0.25\n")
    assert load_toml(path, Outer) == Outer(3, Inner(2.0, ("a", "b")), (Inner(), Inner(0.25)), "k")
    assert isinstance(load_toml(path, Outer).inner.rate, float)
    with pytest.raises(ConfigError, match="no such config file"):
        load_toml(tmp_path / "absent.toml", Outer)


def test_the_three_config_kinds_fail_with_the_same_error_naming_file_and_key(tmp_path: Path) -> None:
    bad = {"train.toml": "[model]\nrank = 'four'\n", "bmpds.toml": "[stages]\nsingle = 'four'\n", "run.toml": "limit = 'four'\n"}
    fields = {"train.toml": "model.rank", "bmpds.toml": "stages.single", "run.toml": "limit"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text + "[[stages]]\nname = 's'\nsteps = 1\n" if name == "train.toml" else text)
    for name, load in (("train.toml", load_train), ("bmpds.toml", load_bmpds), ("run.toml", read_run_file)):
        with pytest.raises(ConfigError) as err:
            load(tmp_path / name)
        assert err.value.field == fields[name] and str(tmp_path / name) in str(err.value), name


@pytest.mark.filterwarnings("error::FutureWarning")  # the shipped configs use today's spellings
def test_configs_live_in_one_place_and_load() -> None:
    home = REPO / "reference_impl" / "configs"
    assert (TRAIN_CONFIGS, BMPDS_CONFIGS) == (home / "train", home / "bmpds")
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*.toml")) == [
        "bmpds/paper.toml",
        "bmpds/tiny.toml",
        "train/paper.toml",
        "train/tiny.toml",
    ]
    assert not (REPO / "examples" / "bmpds").exists() and not (REPO / "reference_impl" / "training" / "configs").exists()
    assert load_train(TRAIN_CONFIGS / "tiny.toml").models == load_bmpds(BMPDS_CONFIGS / "tiny.toml").models == "tiny"
    assert load_train(TRAIN_CONFIGS / "paper.toml").models == "default"


def test_the_smoke_switch_is_models_at_the_top_and_the_old_spellings_warn(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    new = load_train(tiny_config(tmp_path, pairs))
    assert new.models == "tiny" and new.smoke and new.weights_dir == ""
    text = (tmp_path / "train.toml").read_text().replace('models = "tiny"\n', "")
    old = text.replace("[model]\n", '[model]\nbase = "tiny"\nweights_dir = "w"\n').replace("[eval]\n", '[eval]\nmodels = "tiny"\n')
    (tmp_path / "old.toml").write_text(old)
    with pytest.warns(FutureWarning) as caught:
        upgraded = load_train(tmp_path / "old.toml")
    said = " ".join(str(w.message) for w in caught)
    assert '[model] base = "tiny" is deprecated' in said and "[model] weights_dir is deprecated" in said and "[eval] models" in said
    assert upgraded.models == "tiny" and upgraded.weights_dir == "w" and upgraded.model.base == new.model.base
    real_base = text.replace("[eval]\n", '[eval]\nmodels = "tiny"\n')  # tiny metric models beside a real base: no equivalent
    (tmp_path / "mixed.toml").write_text(real_base)
    with pytest.raises(ConfigError) as err:
        load_train(tmp_path / "mixed.toml")
    assert err.value.field == "eval.models" and 'models = "tiny"' in str(err.value)


def test_weights_keys_are_spelled_alike(tmp_path: Path) -> None:
    """`weights_dir` at the top of every config kind; `[weights] ROLE = DIR` where a run or a build takes roles."""
    for name in ("b.toml", "r.toml"):
        (tmp_path / name).write_text('weights_dir = "/w"\n[weights]\nclip = "/c"\n')
    bmpds, run = load_bmpds(tmp_path / "b.toml"), read_run_file(tmp_path / "r.toml")
    assert (bmpds.weights_dir, dict(bmpds.weights)) == ("/w", {"clip": "/c"})
    assert (run["weights_dir"], run["weights"]) == ("/w", ["clip=/c"])
    train = load_train(tiny_config(tmp_path, tmp_path / "pairs", top={"weights_dir": "/w"}))
    assert train.weights_dir == "/w"


def test_bmpds_role_settings_are_the_roles_table_and_the_old_name_warns(tmp_path: Path) -> None:
    (tmp_path / "old.toml").write_text("[models_cfg]\nsteps = 3\n")
    with pytest.warns(FutureWarning, match=r"\[models_cfg\] is deprecated; write \[roles\]"):
        old = load_bmpds(tmp_path / "old.toml")
    (tmp_path / "new.toml").write_text("[roles]\nsteps = 3\n")
    new = load_bmpds(tmp_path / "new.toml")
    assert old == new and new.roles.steps == 3
    assert new.fingerprint()["models_cfg"]["steps"] == 3  # the store keys of finished units are unchanged by the rename
