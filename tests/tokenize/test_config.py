"""TokenizeConfig: plain fields that map onto TOML, overrides, and errors that name the field."""

from __future__ import annotations

import tomllib

import pytest

from genrec.tokenize import TokenizeConfig


def test_round_trip_through_a_toml_table():
    table = tomllib.loads(
        """
        method = "rqkmeans"
        levels = 4
        [rqvae]
        hidden_dims = [64, 32]
        learning_rate = 1
        [rqkmeans]
        iters = 7
        """
    )
    config = TokenizeConfig.from_dict(table).validate()
    assert config.method == "rqkmeans" and config.levels == 4 and config.rqkmeans.iters == 7
    assert config.rqvae.hidden_dims == [64, 32]
    assert config.rqvae.learning_rate == 1.0 and isinstance(config.rqvae.learning_rate, float)
    assert TokenizeConfig.from_dict(config.to_dict()) == config


def test_overrides():
    config = TokenizeConfig().with_overrides(
        [
            "rqvae.epochs=7",
            "method=rqkmeans",
            "tokenize.seed=3",
            "rqvae.gradient=ste",
            "rqvae.hidden_dims=[8]",
        ]
    )
    assert config.rqvae.epochs == 7 and config.method == "rqkmeans" and config.seed == 3
    assert config.rqvae.gradient == "ste" and config.rqvae.hidden_dims == [8]
    assert TokenizeConfig().rqvae.epochs != 7  # the default is untouched


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"levels": 0}, "tokenize.levels"),
        ({"method": "vq"}, "tokenize.method"),
        ({"normalize": "pca"}, "tokenize.normalize"),
        ({"codebook_size": 1}, "tokenize.codebook_size"),
    ],
)
def test_validate_names_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        TokenizeConfig(**change).validate()


def test_unknown_and_mistyped_keys():
    with pytest.raises(ValueError, match=r"\[tokenize\]: unknown key 'tokenize\.level'; did you mean 'tokenize\.levels'"):
        TokenizeConfig.from_dict({"level": 3})
    with pytest.raises(ValueError, match=r"unknown key 'tokenize\.rqvae\.lr'\. Valid keys of \[tokenize\.rqvae\]"):
        TokenizeConfig.from_dict({"rqvae": {"lr": 3}})
    with pytest.raises(ValueError, match=r"tokenize\.rqvae\.epochs must be int, got 'many'"):
        TokenizeConfig.from_dict({"rqvae": {"epochs": "many"}})
    with pytest.raises(ValueError, match=r"tokenize\.progress must be bool, got 1"):
        TokenizeConfig.from_dict({"progress": 1})
    with pytest.raises(ValueError, match="key=value"):
        TokenizeConfig().with_overrides(["epochs"])
    with pytest.raises(ValueError, match=r"unknown key 'tokenize\.rqvea'; did you mean 'tokenize\.rqvae'"):
        TokenizeConfig().with_overrides(["rqvea.epochs=3"])
