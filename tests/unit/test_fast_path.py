"""The fast-path switches of :mod:`brainlearn.fast` and the trainer settings that turn them on."""

import copy

import pytest
import torch
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.fast import (
    BF16_ERROR,
    adam,
    compile_networks,
    fused_supported,
    is_channels_last,
    relative_error,
    round_to_bf16,
    to_channels_last,
    within_bf16_tolerance,
)
from brainlearn.trainer import FastPath, build_trainer, resolve_settings


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(0.2), nn.Conv3d(4, 1, 3, padding=1)
    )


def test_channels_last_changes_the_memory_order_not_the_values_or_the_parameters():
    network = _network()
    parameters = list(network.parameters())
    before = copy.deepcopy(network)
    to_channels_last(network)
    assert is_channels_last(network) and not is_channels_last(before)
    assert [id(p) for p in network.parameters()] == [id(p) for p in parameters]  # an optimizer keeps working
    x = torch.randn(2, 1, 12, 12, 12)
    assert network[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(network(x), before(x), atol=1e-5)
    two_d = to_channels_last(nn.Conv2d(3, 4, 3))
    assert two_d.weight.is_contiguous(memory_format=torch.channels_last)


def test_fused_adam_takes_the_same_steps_as_the_loop():
    def network():  # no normalization: a bias before it has a zero gradient up to rounding, which Adam magnifies
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(4, 1, 3, padding=1))

    reference, fused = network(), network()
    optimizers = [adam(reference.parameters(), fused=False, lr=1e-2), adam(fused.parameters(), lr=1e-2)]
    assert optimizers[1].defaults["fused"] and not optimizers[0].defaults["fused"]
    x = torch.randn(2, 1, 8, 8, 8)
    for _ in range(5):
        for network, optimizer in zip((reference, fused), optimizers, strict=True):
            network(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    decoupled = adam(_network().parameters(), decoupled=True, lr=1e-3, weight_decay=0.1)
    assert isinstance(decoupled, torch.optim.AdamW) and decoupled.defaults["fused"]


def test_fused_adam_is_chosen_only_for_floating_parameters_on_a_cpu_or_cuda():
    assert fused_supported(_network().parameters())
    assert not fused_supported([])
    assert not fused_supported([torch.zeros(3, dtype=torch.int64)])


def test_relative_error_and_the_bf16_criterion():
    a = torch.tensor([3.0, 4.0])
    assert relative_error(a, a) == 0
    assert relative_error(a + torch.tensor([0.3, 0.4]), a) == pytest.approx(0.1)
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0
    assert relative_error(torch.ones(2), torch.zeros(2)) == float("inf")
    with pytest.raises(BrainlearnError, match=r"shapes differ, \(2,\) vs \(3,\)"):
        relative_error(a, torch.ones(3))
    assert within_bf16_tolerance(BF16_ERROR, 0.0) and not within_bf16_tolerance(2 * BF16_ERROR, 0.0)
    assert within_bf16_tolerance(0.5, 0.2) and not within_bf16_tolerance(0.7, 0.2)


def test_rounding_to_bf16_moves_the_weights_by_bf16_storage_alone():
    network = _network()
    original = copy.deepcopy(network)
    round_to_bf16(network)
    for a, b in zip(network.parameters(), original.parameters(), strict=True):
        assert a.dtype == torch.float32
        assert torch.equal(a, b.bfloat16().float())
        assert relative_error(a, b) < 2**-8


def test_compile_modes_are_checked_and_false_leaves_the_module_alone():
    network = _network()
    assert compile_networks(network, False) is network and network.forward.__func__ is nn.Sequential.forward
    with pytest.raises(BrainlearnError, match="unknown mode 'fastest'; write false, true or one of default"):
        compile_networks(network, "fastest")


def test_compiled_networks_keep_their_state_dict_keys(monkeypatch):
    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kwargs: compiled.append((type(self), kwargs)))

    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator, self.classifier, self.activation = _network(), nn.Linear(2, 2), nn.ReLU()

    module = Module()
    keys = list(module.state_dict())
    compile_networks(module, "reduce-overhead")
    # the networks with parameters, not the parameter-free activation
    assert compiled == [(nn.Sequential, {"mode": "reduce-overhead"}), (nn.Linear, {"mode": "reduce-overhead"})]
    assert list(module.state_dict()) == keys


def test_trainer_settings_for_the_fast_path_are_checked():
    settings = resolve_settings()
    assert settings["channels_last"] == "auto" and settings["compile"] is False
    with pytest.raises(BrainlearnError, match="trainer.channels_last: expected auto, true or false, not 'yes'"):
        resolve_settings({"channels_last": "yes"})
    with pytest.raises(BrainlearnError, match="trainer.compile: expected false, true or one of default"):
        resolve_settings({"compile": "fast"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means on, on a GPU")
def test_channels_last_is_applied_where_asked_and_auto_leaves_a_cpu_run_alone(tmp_path):
    def fast_paths(settings):
        trainer = build_trainer(tmp_path, {"progress_bar": False, **settings})
        return [callback for callback in trainer.callbacks if isinstance(callback, FastPath)]

    assert fast_paths({}) == []  # auto on a CPU
    (callback,) = fast_paths({"channels_last": True})
    network = _network()
    callback.setup(None, network, "fit")
    assert is_channels_last(network)
