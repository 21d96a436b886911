from __future__ import annotations

import pytest

from mtdense.backbones import BACKBONES, build_backbone, list_backbones, register_backbone
from mtdense.errors import CheckpointError, ConfigError


def test_registered_names():
    assert list_backbones() == sorted(
        [
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "hrnet_w18_small_v2",
            "hrnet_w18",
            "hrnet_w48",
            "fpn_resnet18",
            "fpn_resnet50",
        ]
    )


def test_unknown_name_lists_valid_names():
    with pytest.raises(
        ConfigError, match="unknown backbone 'resnet19'; valid backbones: .*resnet18.*hrnet_w48"
    ):
        build_backbone("resnet19")


def test_unknown_option_names_option_and_accepted_ones():
    with pytest.raises(ConfigError, match="backbone 'resnet18'.*dilation.*accepted options: output_stride"):
        build_backbone("resnet18", dilation=2)


def test_bad_option_values_raise_config_error():
    with pytest.raises(ConfigError, match="output_stride.*got 4"):
        build_backbone("resnet50", output_stride=4)
    with pytest.raises(ConfigError, match="hrnet_w18 output_stride.*got 16"):
        build_backbone("hrnet_w18", output_stride=16)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone("resnet18")(BACKBONES["resnet18"])


def test_missing_pretrained_file_names_path(tmp_path):
    path = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(CheckpointError, match=str(path)):
        build_backbone("resnet18", pretrained=path)
