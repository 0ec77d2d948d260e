"""torchvision and torchaudio: constraints on torch (pytorch.yml `companions`), paired releases in the stack."""

from __future__ import annotations

import pytest

from dlstack.data import load
from dlstack.resolver import ResolutionError, resolve


def _torch(*frameworks: str) -> dict:
    return resolve(frameworks=list(frameworks), os="24.04").to_dict()["frameworks"]["torch"]


def _pairs() -> dict[str, dict]:
    return {str(key): value for key, value in load("pytorch")["companions"].items()}


def test_torch_alone_is_the_newest_and_names_its_companions() -> None:
    torch = _torch("torch")
    assert torch["companions"] == _pairs()[torch["version"]]


def test_asking_for_torchvision_picks_the_newest_torch_that_has_one() -> None:
    newest_with_vision = next(version for version, pair in _pairs().items() if pair["torchvision"])
    torch = _torch("torch", "torchvision")
    assert torch["version"] == newest_with_vision
    assert torch["companions"]["torchvision"] == _pairs()[newest_with_vision]["torchvision"]
    assert _torch("torchvision") == torch  # torchvision alone implies torch


def test_a_torchvision_specifier_constrains_torch() -> None:
    torch = _torch("torchvision>=0.28,<0.29")
    assert torch["companions"]["torchvision"].startswith("0.28.")


def test_torchaudio_goes_back_to_the_last_torch_it_was_released_for() -> None:
    torch = _torch("torch", "torchaudio")
    assert torch["companions"]["torchaudio"] is not None
    assert _pairs()[torch["version"]]["torchaudio"] == torch["companions"]["torchaudio"]


def test_a_torch_pin_without_a_torchvision_is_refused_naming_both() -> None:
    bare = next(version for version, pair in _pairs().items() if not pair["torchvision"])
    with pytest.raises(ResolutionError, match=rf"'torch=={bare}' and 'torchvision': no torch release satisfies both"):
        _torch(f"torch=={bare}", "torchvision")


def test_an_unknown_companion_version_is_refused() -> None:
    with pytest.raises(ResolutionError, match=r"'torchvision==9.9': no torch dlstack knows has a torchvision"):
        _torch("torchvision==9.9")


def test_other_frameworks_have_no_companions_key() -> None:
    assert "companions" not in resolve(frameworks=["tensorflow"], os="24.04").to_dict()["frameworks"]["tensorflow"]
