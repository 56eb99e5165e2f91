"""The one config system (genrec.settings): every section through one loader with one error style,
one ``--set`` parser, runtime settings marked one way and left out of what stages hash, and the
stage keys of the shipped configs unchanged by the move to it."""

from __future__ import annotations

import dataclasses
import re
import typing
import warnings
from pathlib import Path

import pytest

from genrec.config import FUSION_FIELDS, Config, load_config
from genrec.embed.config import EmbedConfig
from genrec.embed.encoder_config import DiffusionConfig, MultimodalConfig
from genrec.model_config import KIND_SETTINGS, MODEL_KINDS, ModelConfig
from genrec.models import DecoderOnly, ItemDecoder, SASRec, Tiger, model_class
from genrec.settings import ConfigError, hashed_settings, parse_assignment, stable_hash
from genrec.tokenize.config import TokenizeConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# (section path, a real key of it) for every table a config file may hold.
SECTIONS = [
    ("run", "seed"),
    ("data", "dataset"),
    ("embed", "template"),
    ("embed.multimodal", "epochs"),
    ("embed.multimodal.image", "column"),
    ("embed.multimodal.attributes", "dim"),
    ("embed.multimodal.collaborative", "dim"),
    ("embed.diffusion", "steps"),
    ("tokenize", "levels"),
    ("tokenize.rqvae", "epochs"),
    ("tokenize.rqkmeans", "iters"),
    ("model", "d_model"),
    ("train", "lr"),
    ("eval", "beam_size"),
]


@pytest.mark.parametrize(("section", "key"), SECTIONS)
def test_a_misspelt_key_is_named_with_its_section_and_the_near_miss(section, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=[f"{section}.{key}x=1"])
    message = str(err.value)
    assert message.startswith("defaults: unknown key")
    assert f"'{section}.{key}x'" in message and f"did you mean '{section}.{key}'?" in message
    assert f"Valid keys of [{section}]:" in message


@pytest.mark.parametrize(("section", "key"), SECTIONS)
def test_a_value_of_the_wrong_type_is_named_in_one_style(section, key):
    with pytest.raises(ConfigError, match=rf"^defaults: {re.escape(section)}\.{key} must be \w+, got \[\[\]\]$"):
        load_config(None, overrides=[f"{section}.{key}=[[]]"])


def test_a_config_file_and_its_profile_are_named_in_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.1\n[profile.quick.tokenize.rqvae]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"c\.toml \[profile quick\]: unknown key 'tokenize\.rqvae\.epoch'"):
        load_config(path, "quick")
    with pytest.raises(ConfigError, match=r"c\.toml has no profile 'gpu' \(profiles there: quick\)"):
        load_config(path, "gpu")
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(path)


def test_one_set_parser_for_the_run_config_and_genrec_tokenize():
    """The same assignments mean the same thing through load_config and TokenizeConfig's --set."""
    assignments = ["tokenize.rqvae.hidden_dims=[64, 32]", 'method="rqkmeans"', "tokenize.seed=4", "normalize=none"]
    run = load_config(None, overrides=[a if a.startswith("tokenize.") else f"tokenize.{a}" for a in assignments])
    direct = TokenizeConfig().with_overrides(assignments)
    assert direct == run.tokenize
    assert direct.rqvae.hidden_dims == [64, 32] and direct.normalize == "none"  # a bare word is a string
    with pytest.raises(ConfigError, match=r"--set: unknown key 'tokenize\.rqvae\.epoch'; did you mean"):
        TokenizeConfig().with_overrides(["rqvae.epoch=3"])
    assert parse_assignment("train.lr=1e-3") == {"train": {"lr": 0.001}}
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        parse_assignment("lr=0.1")


def test_range_errors_share_the_style_of_every_section():
    for assignment, key in [
        ("tokenize.levels=0", "tokenize.levels"),
        ("embed.batch_size=0", "embed.batch_size"),
        ("embed.multimodal.epochs=0", "embed.multimodal.epochs"),
        ("train.lr=-1", "train.lr"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)} = -?\d+(\.\d+)? is invalid: it must be "):
            load_config(None, overrides=[assignment])


def _sections(obj, prefix=""):
    """(dotted name, dataclass instance) of every section and subsection of a config."""
    yield prefix.rstrip("."), obj
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _sections(value, f"{prefix}{f.name}.")


def _another(value, hint):
    """A different value of the same type."""
    origin = typing.get_origin(hint)
    if value is None:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return {str: "x", int: 1, float: 0.5}[options[0]]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list) or origin is list:
        return [*value, value[-1] if value else "x"]
    raise AssertionError(f"no other value for {value!r}")


def test_what_a_stage_hashes_changes_with_every_setting_but_the_runtime_ones():
    """Every field of every section: a runtime() field leaves hashed_settings as it was; any other
    changes it. So a setting that changes results can never be reused from a stale cache."""
    config = Config()
    checked = {"runtime": 0, "hashed": 0}
    for name, section in _sections(config):
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                continue
            before = stable_hash(hashed_settings(config))
            changed = dataclasses.replace(section, **{f.name: _another(value, hints[f.name])})
            after = stable_hash(hashed_settings(changed))
            if f.metadata.get("cache", True):
                assert stable_hash(hashed_settings(section)) != after, f"{name}.{f.name} is not hashed"
                checked["hashed"] += 1
            else:
                assert stable_hash(hashed_settings(section)) == after, f"{name}.{f.name} is hashed"
                checked["runtime"] += 1
            assert before == stable_hash(hashed_settings(config))
    assert checked["runtime"] >= 15 and checked["hashed"] >= 100


def test_runtime_settings_are_the_ones_that_change_only_speed():
    runtime = {
        (name, f.name)
        for name, section in _sections(Config())
        for f in dataclasses.fields(section)
        if not f.metadata.get("cache", True)
    }
    for expected in [
        ("embed", "batch_size"),
        ("embed", "device"),
        ("embed", "cache"),
        ("embed", "cache_dir"),
        ("embed", "progress"),
        ("tokenize", "device"),
        ("tokenize", "progress"),
        ("tokenize", "encode_backend"),
        ("run", "device"),
        ("train", "log_every"),
        ("eval", "batch_users"),
    ]:
        assert expected in runtime


@pytest.mark.parametrize(
    ("path", "profile", "keys"),
    [
        # embed, tokenize, model (what training hashes of it: no fusion settings), train: hashed with
        # the per-stage runtime lists before genrec.settings (7b44f68)
        (None, None, ("8e0b92ca467ee7b6", "a36b65e8fb252045", "4042e6bdcfb22501", "0948c54df049ac1c")),
        # tiger_beauty's cpu profile: its train key changed on purpose when the demo became
        # reproducible (a 1500 s safety cap instead of 480 s: the 30 epochs decide the schedule)
        ("tiger_beauty.toml", "cpu", ("fc6f30b4e19ad5c8", "fd7d10bc93cc54e6", "3e7e2ece0c7ef894", "a83444824a113959")),
        ("cold_beauty.toml", "cpu", ("7442a5eb0665490f", "fd7d10bc93cc54e6", "b24a5f9eb43bee5e", "f5397d445238b678")),
    ],
)
def test_stage_keys_of_the_shipped_configs_are_unchanged(path, profile, keys):
    """Caches and runs made before the one config system are found by it (no silent retraining)."""
    config = load_config(CONFIGS / path if path else None, profile)
    trained = {k: v for k, v in hashed_settings(config.model).items() if k not in FUSION_FIELDS}
    got = tuple(stable_hash(s) for s in (hashed_settings(config.embed), hashed_settings(config.tokenize), trained,
                                         hashed_settings(config.train)))
    assert got == keys


def test_saved_sections_load_back_through_the_same_loader():
    for cls, data in [
        (EmbedConfig, EmbedConfig().to_dict()),
        (TokenizeConfig, TokenizeConfig().to_dict()),
    ]:
        assert cls.from_dict(data) == cls()
    assert MultimodalConfig.from_dict(dataclasses.asdict(MultimodalConfig())) == MultimodalConfig()
    assert DiffusionConfig.from_dict(dataclasses.asdict(DiffusionConfig())) == DiffusionConfig()
    with pytest.raises(ConfigError, match=r"^\[embed\.multimodal\]: unknown key 'embed\.multimodal\.epoch'"):
        MultimodalConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"^\[tokenize\]: tokenize\.levels must be int, got '3'"):
        TokenizeConfig.from_dict({"levels": "3"})
    assert Config.from_dict(Config().to_dict()) == Config()


# ---- [model]: settings per kind ----
def test_every_model_setting_is_read_by_some_kind():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    read = set().union(*KIND_SETTINGS.values())
    assert read == fields
    assert set(KIND_SETTINGS) == set(MODEL_KINDS)


# Valid values besides the default of the settings that take one of a few words.
OTHER_CHOICE = {"loss": "bce", "history_tokens": "items", "profile_embeddings": "text", "cold_objective": "cold_recall"}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_a_setting_the_kind_does_not_read_is_named_when_the_config_loads(kind):
    assert ModelConfig(kind=kind).unread_settings() == []
    unread = sorted({f.name for f in dataclasses.fields(ModelConfig)} - KIND_SETTINGS[kind])
    assert unread
    hints = typing.get_type_hints(ModelConfig)
    for name in unread:
        value = OTHER_CHOICE.get(name) or _another(getattr(ModelConfig(), name), hints[name])
        if kind == "decoder_only" and name == "history_tokens":
            continue  # an error instead: the old spelling of item_decoder (below)
        assignment = f"model.{name}={value!r}" if isinstance(value, str) else f"model.{name}={str(value).lower()}"
        pattern = rf'^defaults: model\.{name} = .* is not read by model\.kind = "{kind}" \(only by: .*\); it changes nothing$'
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load_config(None, overrides=[f'model.kind="{kind}"', assignment])
            except ConfigError as e:  # a setting that needs others first (cold_candidates: an item head)
                assert f"{name}" in str(e).split(" = ")[0], e
                continue
        assert [str(w.message) for w in caught if re.match(pattern, str(w.message))], (name, caught)


def test_one_token_per_item_with_a_decoder_only_model_points_at_item_decoder():
    # through a config file or --set it is migrated (below); built in Python it would change class
    with pytest.raises(ConfigError, match='kind = "item_decoder"'):
        ModelConfig(kind="decoder_only", history_tokens="items").validate()


def test_the_old_spelling_of_the_item_decoder_loads_with_a_message_and_the_same_keys(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('[model]\nkind = "decoder_only"\nhistory_tokens = "items"\nitem_embeddings = true\n')
    new = tmp_path / "new.toml"
    new.write_text('[model]\nkind = "item_decoder"\nitem_embeddings = true\n')
    with pytest.warns(FutureWarning, match=rf'{re.escape(str(old))}: model\.kind = "decoder_only" .* "item_decoder"'):
        migrated = load_config(old)
    assert migrated.model == load_config(new).model
    assert model_class(migrated.model) is ItemDecoder
    # what run folders and caches were keyed by before item_decoder was a kind
    assert hashed_settings(migrated.model)["kind"] == "decoder_only"
    assert hashed_settings(migrated.model)["history_tokens"] == "items"
    with pytest.warns(FutureWarning):
        assert load_config(None, overrides=["model.kind=decoder_only", "model.history_tokens=items",
                                            "model.item_embeddings=true"]).model == migrated.model
    # a saved run's config (run.json) migrates without a message
    saved = Config().to_dict()
    saved["model"].update(kind="decoder_only", history_tokens="items", item_embeddings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Config.from_dict(saved).model == migrated.model


def test_each_kind_builds_its_own_class():
    expected = {"tiger": Tiger, "decoder_only": DecoderOnly, "item_decoder": ItemDecoder, "sasrec": SASRec}
    for kind in MODEL_KINDS:
        assert model_class(ModelConfig(kind=kind)) is expected[kind]


@pytest.mark.parametrize("kind", ["tiger", "decoder_only", "sasrec"])
def test_item_head_settings_stay_errors_for_kinds_without_one(kind):
    """Later stages act on these (the fusion scores with the item head): a warning would let a
    config through that fails after training."""
    for setting in ("model.item_loss=1.0", "model.content_vectors=true"):
        with pytest.raises(ConfigError, match=r'unless kind = "item_decoder"'):
            load_config(None, overrides=[f"model.kind={kind}", "model.item_embeddings=true", setting])
