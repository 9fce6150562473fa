"""Generator params: the paper's values by default; nonsense stops with the key named; the kind registry."""

from __future__ import annotations

import pytest

from synthmri.generative.config import GenerateParams, GeneratorParams, load_generate, load_generator
from synthmri.params import ParamsError


def test_defaults_are_the_papers_settings():
    cfg = load_generator(None)
    assert cfg.kind == "ddpm" and cfg.seed == 33 and cfg.val_fraction == 0.2 and cfg.plane_balance
    d = cfg.ddpm  # docs/paper_as_coded.md, "DDPM"
    assert (d.image_size, d.epochs, d.batch_size, d.lr, d.timesteps) == (128, 750, 16, 2.5e-5, 1000)
    assert d.channels == (128, 256, 256) and d.attention_levels == (False, True, True)
    assert (d.num_res_blocks, d.num_head_channels) == (1, 128)
    g = cfg.dcgan  # the DCGAN 64x64 study
    assert (g.image_size, g.epochs, g.batch_size, g.lr, g.beta1) == (64, 25, 128, 2e-4, 0.5)
    gen = load_generate({})
    assert (gen.n_per_class, gen.out_size, gen.sampler, gen.paper_as_coded) == (600, 256, "ddpm", False)
    assert cfg.model == cfg.ddpm and load_generator({"kind": "dcgan"}).model == cfg.dcgan


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"kind": "vae"}, "generator.kind: expected one of ['ddpm', 'dcgan', 'sd_turbo']"),
        ({"epochs": 3}, "generator: unknown key(s) ['epochs']"),
        ({"val_fraction": 1.0}, "generator.val_fraction"),
        ({"ddpm": {"channels": [32, 64], "attention_levels": [False, True, True]}}, "generator.ddpm.attention_levels"),
        ({"ddpm": {"channels": [48, 64, 64]}}, "generator.ddpm.channels: every width must be a multiple of norm_num_groups=32"),
        ({"ddpm": {"num_head_channels": 96}}, "generator.ddpm.num_head_channels"),
        ({"ddpm": {"image_size": 100, "channels": [32, 32, 32, 32], "attention_levels": [False] * 4}}, "generator.ddpm.image_size"),
        ({"ddpm": {"lr": 0}}, "generator.ddpm.lr"),
        ({"ddpm": {"epochs": 0}}, "generator.ddpm.epochs"),
        ({"ddpm": {"batch_size": "16"}}, "generator.ddpm.batch_size: expected an integer"),
        ({"dcgan": {"image_size": 40}}, "generator.dcgan.image_size"),
        ({"dcgan": {"beta1": 1.0}}, "generator.dcgan.beta1"),
        ({"train": {"precision": "fp16"}}, "generator.train.precision: expected one of"),
        ({"train": {"device": "gpu"}}, "generator.train.device"),
        ({"train": {"checkpoint_every": 0}}, "generator.train.checkpoint_every"),
        ({"train": {"compile": "yes"}}, "generator.train.compile: expected true or false"),
    ],
)
def test_bad_generator_params_name_the_key(raw, message):
    with pytest.raises(ParamsError) as e:
        load_generator(raw)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sampler": "euler"}, "generate.sampler: expected one of ['ddpm', 'ddim']"),
        ({"n_per_class": 0}, "generate.n_per_class"),
        ({"ddim_steps": 0}, "generate.ddim_steps"),
        ({"out_size": 4}, "generate.out_size"),
        ({"paper_as_coded": 1}, "generate.paper_as_coded: expected true or false"),
        ({"n_per_clas": 3}, "generate: unknown key(s) ['n_per_clas']"),
    ],
)
def test_bad_generate_params_name_the_key(raw, message):
    with pytest.raises(ParamsError) as e:
        load_generate(raw)
    assert message in str(e.value)


def test_config_round_trips_through_json_types():
    cfg = load_generator({"kind": "dcgan", "ddpm": {"channels": [64, 64], "attention_levels": [False, True], "num_head_channels": 64}})
    again = load_generator(cfg.to_dict())  # what config.json stores (lists, not tuples)
    assert again == cfg and isinstance(again, GeneratorParams)
    assert load_generate(None) == GenerateParams()


def test_unknown_kind_lists_the_known_ones():
    from synthmri.generative.registry import get_kind

    assert get_kind("ddpm").kind == "ddpm" and get_kind("dcgan").kind == "dcgan"
    with pytest.raises(ValueError, match="unknown generator kind 'gan'; known: dcgan, ddpm"):
        get_kind("gan")
