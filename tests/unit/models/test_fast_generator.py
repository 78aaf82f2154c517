"""Issue 11's fast paths compute what the plain ones do: fused NormAct, the style cache, α = 0, checkpointing."""

import copy
import re

import pytest
import torch

from brainlearn.commands_synthesis import build_gan
from brainlearn.errors import BrainlearnError
from brainlearn.models.awarenet import AwareNet
from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI, NormAct, ShareSynNet

SHAPE = (2, 1, 32, 48, 32)  # batch 2, non-cubic; the bottleneck keeps 2 × 3 × 2 voxels
SMALL = (2, 1, 32, 16, 16)  # where only the styles matter
BEFORE_A_NORM = re.compile(r"(down\.\d|bottleneck|merge\.\d)\.bias")  # a constant per channel before InstanceNorm


def volumes(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def per_volume_alpha():
    return torch.tensor([MRI_TO_PET, PET_TO_MRI])


def generator(*, fused=True, checkpointing=False, seed=0):
    torch.manual_seed(seed)
    return ShareSynNet(width=4, fused=fused, checkpointing=checkpointing)


def relative_error(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def loss_and_gradients(net, x, alpha):
    """A loss with a random weight per voxel, so that every output voxel matters, and the parameters' gradients."""
    net.zero_grad(set_to_none=True)
    out = net(x, alpha)
    weights = volumes(*out.shape, seed=9)
    loss = (out * weights).sum()
    loss.backward()
    return (
        loss.detach(),
        out.detach(),
        {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None},
    )


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "alpha", [torch.tensor(0.0), torch.tensor(1.0), torch.tensor([0.0, 1.0]).view(2, 1, 1, 1, 1)], ids=["0", "1", "B"]
)
@pytest.mark.parametrize("identity", [False, True], ids=["styled", "identity"])
def test_fused_norm_act_equals_the_plain_one_with_gradients(alpha, identity):
    torch.manual_seed(0)
    layer = NormAct(4)
    code = torch.randn(1, 512)
    x = (torch.randn(2, 4, 8, 10, 6) * 3 + 2).requires_grad_()
    results = []
    for fused in (True, False):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        style = None if identity else layer.adain.style(code)
        out = layer(x, style, alpha, fused=fused)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = [x.grad] + ([] if identity else [layer.adain.affine.weight.grad, layer.adain.affine.bias.grad])
        results.append((out.detach(), [g.clone() for g in grads]))
    (fused_out, fused_grads), (plain_out, plain_grads) = results
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-5, atol=1e-5)
    for fused_grad, plain_grad in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-5, atol=1e-5)


def test_the_fused_network_equals_the_plain_one_with_gradients():
    fused, plain = generator(fused=True), generator(fused=False)
    x = volumes(*SHAPE)
    _, fused_out, fused_grads = loss_and_gradients(fused, x, per_volume_alpha())
    _, plain_out, plain_grads = loss_and_gradients(plain, x, per_volume_alpha())
    assert relative_error(fused_out, plain_out) < 1e-5
    assert fused_grads.keys() == plain_grads.keys() == dict(plain.named_parameters()).keys()
    largest = max(float(grad.abs().max()) for grad in plain_grads.values())
    for name, grad in plain_grads.items():
        if BEFORE_A_NORM.fullmatch(name):  # normalized away: the gradient is 0 up to rounding
            assert float(fused_grads[name].abs().max()) < 1e-5 * largest, name
        else:
            assert relative_error(fused_grads[name], grad) < 1e-4, name


def test_the_fused_network_under_bf16_autocast_stays_within_bf16_tolerance_of_fp32():
    fused, plain = generator(fused=True).eval(), generator(fused=False).eval()
    x = volumes(*SHAPE)
    with torch.no_grad():
        reference = plain(x, per_volume_alpha())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = fused(x, per_volume_alpha())
    assert relative_error(fast.float(), reference) < 3e-2


def test_the_style_cache_is_reused_and_follows_parameter_changes():
    net = generator().eval()
    code_calls = count_calls(net.code)
    x = volumes(*SMALL)
    with torch.no_grad():
        first, second = net(x, PET_TO_MRI), net(x, PET_TO_MRI)
        assert torch.equal(first, second) and len(code_calls) == 1
        net.merge_norm[0].adain.affine.bias.add_(1)
        changed = net(x, PET_TO_MRI)
        net.fused = False
        plain = net(x, PET_TO_MRI)
    assert len(code_calls) == 3  # recomputed after the change; the plain path never caches
    assert (changed - first).abs().max() > 1e-3
    assert relative_error(changed, plain) < 1e-5


def test_the_style_cache_follows_a_fused_optimizer_step_and_a_dtype_change():
    net = generator()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)  # counts no tensor versions
    x = volumes(*SMALL)
    with torch.no_grad():
        before = net(x, PET_TO_MRI)
    net(x, per_volume_alpha()).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        after = net(x, PET_TO_MRI)
        net.fused = False
        plain = net(x, PET_TO_MRI)
        net.fused = True
        code_calls = count_calls(net.code)
        net.double()
        doubled = net(x.double(), PET_TO_MRI)
    assert (after - before).abs().max() > 1e-3
    assert relative_error(after, plain) < 1e-5
    assert len(code_calls) == 1 and doubled.dtype == torch.float64


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_alpha_zero_skips_the_adain_and_equals_the_general_computation(training):
    net = generator().train(training)
    code_calls = count_calls(net.code)
    x = volumes(*SMALL)
    fast = net(x, MRI_TO_PET)
    assert len(code_calls) == 0
    general = net(x, torch.zeros(2))
    net.fused = False
    plain = net(x, MRI_TO_PET)
    assert relative_error(fast, general) < 1e-6
    assert relative_error(fast, plain) < 1e-5


def test_checkpointing_gives_the_same_loss_and_gradients_for_sharesynnet():
    x = volumes(*SHAPE)
    stored, checkpointed = generator(), generator(checkpointing=True)
    conv_calls = count_calls(checkpointed.down[0])
    loss, _, grads = loss_and_gradients(stored, x, per_volume_alpha())
    checkpointed_loss, _, checkpointed_grads = loss_and_gradients(checkpointed, x, per_volume_alpha())
    assert len(conv_calls) == 2  # the forward pass and its recomputation
    torch.testing.assert_close(checkpointed_loss, loss, rtol=1e-6, atol=1e-6)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)


def test_checkpointing_gives_the_same_loss_gradients_and_batch_norm_statistics_for_awarenet():
    torch.manual_seed(0)
    stored = AwareNet(1, 2, width=8)
    checkpointed = copy.deepcopy(stored)
    checkpointed.checkpointing = True
    conv_calls = count_calls(checkpointed.stem[0])
    x, labels = torch.randn(2, 1, 32, 40, 6), torch.tensor([0, 1])
    results = []
    for net in (stored, checkpointed):
        torch.manual_seed(1)  # the same dropout mask in the classifier
        loss = torch.nn.functional.cross_entropy(net(x).logits, labels)
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in net.named_parameters()}))
    assert len(conv_calls) == 2
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)
    for name, buffer in stored.state_dict().items():  # running statistics counted once, not twice
        torch.testing.assert_close(checkpointed.state_dict()[name], buffer, rtol=0, atol=0, msg=name)


def test_checkpointing_is_off_outside_training_and_without_autograd():
    net = generator(checkpointing=True).eval()
    conv_calls = count_calls(net.down[0])
    net(volumes(*SMALL), PET_TO_MRI).sum().backward()
    with torch.no_grad():
        net.train()(volumes(*SMALL), PET_TO_MRI)
    assert len(conv_calls) == 2  # once per pass, never recomputed


def test_weights_move_between_the_fused_and_plain_networks():
    fused, plain = generator(fused=True, seed=1), generator(fused=False, seed=2)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(fused.state_dict())
    x = volumes(*SMALL)
    with torch.no_grad():
        assert relative_error(plain(x, PET_TO_MRI), fused(x, PET_TO_MRI)) < 1e-5
    fused.load_state_dict(generator(fused=False, seed=3).state_dict())
    for name, tensor in generator(seed=3).state_dict().items():
        assert torch.equal(fused.state_dict()[name], tensor), name


def test_build_gan_passes_checkpointing_and_the_flags_are_checked():
    generator_net, *_ = build_gan({"width": 2, "heads": 8, "downsamples": 3, "checkpointing": True})
    assert generator_net.checkpointing and generator_net.fused
    assert not build_gan({"width": 2})[0].checkpointing
    with pytest.raises(BrainlearnError, match=r"unknown \['checkpoint'\]; ShareGAN takes .*'checkpointing'"):
        build_gan({"checkpoint": True})
    with pytest.raises(BrainlearnError, match="checkpointing must be true or false, not 'yes'"):
        ShareSynNet(width=2, checkpointing="yes")
    with pytest.raises(BrainlearnError, match="AwareNet: checkpointing must be true or false, not 1"):
        AwareNet(checkpointing=1)


def test_a_one_voxel_bottleneck_is_refused_with_a_hint():
    with pytest.raises(BrainlearnError, match=r"more than 16 voxels along at least one axis.*32 or more"):
        generator()(volumes(1, 1, 16, 16, 16))


@pytest.mark.parametrize("shared", [True, False])
def test_the_fused_norm_chain_has_the_exact_gradient(shared):
    """The analytic backward of the fused instance norm + AdaIN + LeakyReLU against finite differences (float64),
    for a style shared by the batch and one per volume."""
    from brainlearn.models.sharesynnet import _NormAffineAct

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    shape = (1 if shared else 2, 3, 1, 1, 1)
    gain = (torch.rand(shape, dtype=torch.float64) + 0.5).requires_grad_()
    shift = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_NormAffineAct.apply, (x, gain, shift))


def test_the_fused_norm_chain_keeps_less_for_the_backward_pass_under_autocast():
    """Saved activations of a forward pass, counted by storage: the fused path keeps the bf16 input, not float32
    copies of it and of each intermediate."""
    x = torch.randn(2, 8, 16, 16, 16)
    style = (torch.randn(1, 8), torch.rand(1, 8) + 0.5)
    alpha = torch.tensor([0.0, 1.0]).view(-1, 1, 1, 1, 1)
    norm = NormAct(8)

    def saved_bytes(fused: bool) -> int:
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            norm(x.bfloat16().requires_grad_(), style, alpha, fused=fused)
        return sum(storages.values())

    assert saved_bytes(True) <= 1.1 * x.numel() * 2  # the bf16 input and per-channel statistics
    assert saved_bytes(False) > 2 * saved_bytes(True)
