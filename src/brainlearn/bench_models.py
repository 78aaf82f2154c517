"""``brainlearn bench --method M`` for the models: a method's training step or inference, switch by switch.

Every method is timed as a ladder of arms in one run, each arm adding one switch of the fast path
(:mod:`brainlearn.fast`) to the one before: the plain float32 reference as the papers' code runs it, then bf16
autocast (``--precision bf16``), channels-last weights, fused Adam (training), the method's own fast path where it
has one (ShareSynNet's fused norm chain and hoisted AdaIN code; ShareGAN's six generator passes as two batched
calls), and ``torch.compile`` (``--compile``). Each arm builds the networks afresh from the same seed, so all arms
start from the same weights and inputs, and:

- checks numerics first: a fixed forward (and, for training, backward) pass, with its output and all parameter
  gradients compared with the reference arm's (relative error ‖fast − ref‖ / ‖ref‖, :mod:`brainlearn.fast`);
- is timed: median of ``repeats`` steps after one warm-up step (the warm-up, with compiling, reported apart);
- reports ms/step, steps/s, volumes/s the model consumes, peak GPU memory, and achieved TFLOP/s from a FLOP count
  of the step (``torch.utils.flop_counter``, counted once: every arm does the same arithmetic).

Sizes: unset ``--size``, ``--batch`` and ``width`` take the reference sizes on a GPU (those of the figures in
``docs/benchmarks.md``) and small ones on a CPU, where only ratios are worth reporting. The networks have the
reference architecture with random weights: a step costs the same whatever the weights.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.errors import BrainlearnError
from brainlearn.fast import autocast, compile_networks, relative_error, round_to_bf16, to_channels_last

log = logging.getLogger(__name__)

VQGAN_COMPRESSION = 2  # document 003: a 64³ volume is an 8×32³ latent
LATENT_CHANNELS = 8
N_CODES = 16384
TIMESTEPS = 300


@dataclass(frozen=True)
class Switches:
    """Which parts of the fast path an arm uses."""

    bf16: bool = False
    channels_last: bool = False
    fused_optimizer: bool = False
    model: bool = False  # the method's own fast path (fused norm chain, batched passes)
    compile: str | bool = False


@dataclass
class Workload:
    """One method's networks at one arm's switches.

    Attributes:
        step: one training step (forward, backward, optimizer) or one inference call.
        probe: a fixed forward pass (plus backward of a fixed loss, for training) on fixed inputs; returns the
            output compared across arms, leaves the gradients in ``networks``.
        networks: the module whose parameter gradients are compared (None for inference).
        root: every network of the method (rounded to bf16 for the tolerance row).
    """

    step: Callable[[], None]
    probe: Callable[[], Tensor]
    networks: nn.Module | None
    root: nn.Module


@dataclass(frozen=True)
class Method:
    """A benchmarked method: how to build it, its sizes, the model-specific switch and the reference figure."""

    build: Callable[[dict[str, Any], torch.device, Switches], Workload]
    title: Callable[[dict[str, Any]], str]
    training: bool
    gpu: dict[str, Any]  # settings at the reference size
    cpu: dict[str, Any]
    model_switch: str | None = None  # the name of the method's own fast path, None if it has none
    reference: str = ""  # the reference figure (H100, fp32) and the goal, from docs/anchors.md


def method_defaults(method: str) -> dict[str, Any]:
    """The settings an unset (None) config key stands for: the reference size on a GPU, a small one on a CPU."""
    return dict(MODEL_METHODS[method].gpu if torch.cuda.is_available() else MODEL_METHODS[method].cpu)


def arms(method: Method, config: dict[str, Any]) -> list[tuple[str, Switches]]:
    """The ladder of (name, switches): the fp32 reference, then one more switch per arm."""
    ladder = [("fp32 reference", Switches())]

    def add(name: str, **change: Any) -> None:
        ladder.append((name, dataclasses.replace(ladder[-1][1], **change)))

    if config["precision"] == "bf16":
        add("+ bf16 autocast", bf16=True)
    add("+ channels-last", channels_last=True)
    if method.training:
        add("+ fused Adam", fused_optimizer=True)
    if method.model_switch:
        add(f"+ {method.model_switch}", model=True)
    if config.get("compile"):
        mode = config["compile"] if isinstance(config["compile"], str) else "default"
        if mode == "default" and not method.training:
            mode = "reduce-overhead"  # fixed-shape inference: CUDA graphs on a GPU
        add(f"+ torch.compile ({mode})", compile=mode)
    return ladder


def bench_model(name: str, config: dict[str, Any], run) -> dict[str, Any]:
    """Time ``name``'s ladder of arms, write ``bench.md``, return the metrics of the reference and the last arm."""
    method = MODEL_METHODS[name]
    _check_sizes(name, config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, reference = [], None
    flops = None
    for arm_name, switches in arms(method, config):
        torch.manual_seed(0)
        workload = method.build(config, device, switches)
        output, gradients, saved = _probe(workload)
        if reference is None:
            reference = (output, gradients)
            flops = _count_flops(workload.step)
            tolerance = _tolerance(method, config, device, reference)
        errors = _errors((output, gradients), reference)
        warmup, seconds, peak = _time(workload.step, config["repeats"], device)
        row = {"arm": arm_name, "seconds": seconds, "warmup": warmup, "peak_gib": peak, "saved_gib": saved / 2**30}
        rows.append(row | errors)
        log.info("%s %s: %.1f ms/step", name, arm_name, 1000 * seconds)
        del workload, output, gradients
        _release(device)
    per_step = _volumes_per_step(name, config)
    for row in rows:
        row["ratio"] = rows[0]["seconds"] / row["seconds"]
        row["tflops"] = flops / row["seconds"] / 1e12 if flops else float("nan")
        row["volumes_per_s"] = per_step / row["seconds"]
    _write_table(run, name, method, config, rows, tolerance, flops, device)
    first, last = rows[0], rows[-1]
    prefix = f"bench/{name}/"
    return {
        prefix + "ms_reference": 1000 * first["seconds"],
        prefix + "ms": 1000 * last["seconds"],
        prefix + "steps_per_s": 1 / last["seconds"],
        prefix + "ratio": last["ratio"],
        prefix + "volumes_per_s": last["volumes_per_s"],
        prefix + "tflop_per_step": (flops or 0) / 1e12,
        prefix + "tflops": last["tflops"],
        prefix + "peak_gib_reference": first["peak_gib"],
        prefix + "peak_gib": last["peak_gib"],
        prefix + "saved_gib_reference": first["saved_gib"],
        prefix + "saved_gib": last["saved_gib"],
        prefix + "output_error": last["output_error"],
        prefix + "gradient_error": last["gradient_error"],
        prefix + "output_tolerance": tolerance["output_error"],
        prefix + "gradient_tolerance": tolerance["gradient_error"],
        prefix + "arms": rows,
    }


TOLERANCE_ARM = "bf16 tolerance: fp32 with bf16-rounded weights"


def _tolerance(method: Method, config: dict[str, Any], device, reference) -> dict[str, float]:
    """The errors of the reference pass with every weight rounded to bf16 (inputs are bf16 numbers already): what
    bf16 storage alone moves the output and the gradients by, the scale the other arms' errors are read against."""
    torch.manual_seed(0)
    workload = method.build(config, device, Switches())
    round_to_bf16(workload.root)
    output, gradients, _ = _probe(workload)
    errors = _errors((output, gradients), reference)
    del workload
    _release(device)
    return errors


def _probe(workload: Workload) -> tuple[Tensor, Tensor | None, int]:
    """The probe's output, all parameter gradients (one flat float64 vector on the CPU; gradients cleared) and the
    bytes of the tensors its forward pass saved for the backward pass (each storage once: activations and weights),
    a measure of activation memory that a CPU gives as well as a GPU."""
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = workload.probe().detach().double().cpu()
    saved = sum(storages.values())
    if workload.networks is None:
        return output, None, saved
    gradients = [p.grad.detach().double().flatten().cpu() for p in workload.networks.parameters() if p.grad is not None]
    workload.networks.zero_grad(set_to_none=True)
    return output, torch.cat(gradients) if gradients else None, saved


def _errors(arm: tuple[Tensor, Tensor | None], reference: tuple[Tensor, Tensor | None]) -> dict[str, float]:
    output = relative_error(arm[0], reference[0])
    if arm[1] is None or reference[1] is None:
        return {"output_error": output, "gradient_error": float("nan")}
    return {"output_error": output, "gradient_error": relative_error(arm[1], reference[1])}


def _count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (matrix products, convolutions and attention, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def _time(step: Callable[[], None], repeats: int, device: torch.device) -> tuple[float, float, float]:
    """(warm-up seconds, median seconds of ``repeats`` further calls, peak GPU memory in GiB; 0 on the CPU)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    times.sort()
    return warmup, times[len(times) // 2], peak


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _volumes_per_step(name: str, config: dict[str, Any]) -> int:
    """Input volumes a step consumes: the batch (ShareGAN and joint: an MRI and a PET batch)."""
    return 2 * config["batch"] if name in ("sharegan", "joint") else config["batch"]


def _uniform(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> Tensor:
    """Seeded values uniform in [-1, 1], the range of normalized images and latents."""
    generator = torch.Generator(device=device).manual_seed(seed)
    values = torch.rand(shape, device=device, generator=generator) * 2 - 1
    return values.bfloat16().float()  # bf16 numbers: every arm sees exactly the same inputs


def _prepare(module: nn.Module, device: torch.device, switches: Switches) -> nn.Module:
    """``module`` on ``device`` with the arm's memory format and compilation."""
    module = module.to(device)
    if switches.channels_last:
        to_channels_last(module)
    return compile_networks(module, switches.compile)


def _without_lightning(module, optimizers) -> None:
    """Replace the Lightning hooks a manual-optimization ``training_step`` calls with the plain calls they make."""
    module.optimizers = lambda: optimizers
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *args, **kwargs: None
    module.log = lambda *args, **kwargs: None
    module._stepping = lambda batch_index: True


def _automatic_step(module, optimizer, batch: dict, switches: Switches, device) -> Callable[[], None]:
    """A step of an automatic-optimization module: its ``training_step`` loss, backward, optimizer step."""
    module.log = lambda *args, **kwargs: None

    def step() -> None:
        with autocast(device, switches.bf16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# --- document 000: AwareNet, ShareGAN, joint, inference -------------------------------------------------------


def _set_fused(generator: nn.Module, fused: bool) -> None:
    """Switch ShareSynNet between its fused norm chain (the fast path) and the step-by-step reference."""
    generator.fused = fused


def _gan(config: dict[str, Any], device, switches: Switches, *, classifier: bool = False):
    """ShareGAN (or joint, with an AwareNet) at the config's size and width, with the arm's switches."""
    from brainlearn.commands_synthesis import build_gan
    from brainlearn.methods.joint import JointModule
    from brainlearn.methods.sharegan import ShareGANModule
    from brainlearn.models.awarenet import AwareNet

    size = config["size"]
    downsamples = min(5, size.bit_length() - 3)  # the discriminator keeps at least 2 voxels per axis
    networks = build_gan({"width": config["width"], "downsamples": downsamples})
    _set_fused(networks[0], switches.model)
    if classifier:
        # document 000 pairs a width-32 generator with a width-64 AwareNet: twice the width, a multiple of 8
        awarenet = AwareNet(1, 2, dropout=0.0, width=max(8, 16 * round(config["width"] / 8)))
        module = JointModule(*networks, awarenet, ("CN", "AD"), accumulate=1)
    else:
        module = ShareGANModule(*networks, accumulate=1)
    module = _prepare(module, device, switches)
    optimizers, _ = module.configure_optimizers()
    optimizers = [_fused_as(optimizer, switches) for optimizer in optimizers]
    _without_lightning(module, optimizers)
    if not switches.model:  # the reference code's way: one generator call per translation
        module.translate_both_ways = lambda mri, pet: _six_calls(module.generator, mri, pet)
    return module


def _fused_as(optimizer: torch.optim.Optimizer, switches: Switches) -> torch.optim.Optimizer:
    """``optimizer`` rebuilt fused or unfused as the arm says (the methods' own choice is fused where possible)."""
    fused = bool(switches.fused_optimizer)
    if bool(optimizer.defaults.get("fused")) == fused:
        return optimizer
    kind = type(optimizer)
    accepted = set(inspect.signature(kind).parameters) - {"params", "fused", "foreach"}
    defaults = {key: value for key, value in optimizer.defaults.items() if key in accepted}
    return kind(optimizer.param_groups[0]["params"], **defaults, fused=True if fused else None)


def _six_calls(generator, mri, pet) -> dict[str, Tensor]:
    """The translations of ``ShareGANModule.translate_both_ways``, one generator call each."""
    from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI

    fake_pet, fake_mri = generator(mri, MRI_TO_PET), generator(pet, PET_TO_MRI)
    return {
        "fake_pet": fake_pet,
        "fake_mri": fake_mri,
        "same_pet": generator(pet, MRI_TO_PET),
        "same_mri": generator(mri, PET_TO_MRI),
        "cycled_mri": generator(fake_pet, PET_TO_MRI),
        "cycled_pet": generator(fake_mri, MRI_TO_PET),
    }


def _gan_probe(module, mri: Tensor, pet: Tensor, switches: Switches, device, labels: Tensor | None = None):
    """The generator's losses on one fixed batch, backward; the synthesized PET as the output."""
    from brainlearn.models.networks import logits_of

    def probe() -> Tensor:
        with autocast(device, switches.bf16):
            out = module.translate_both_ways(mri, pet)
            loss = module.generator_losses(mri, pet, out)["loss_g"]
            if labels is not None:
                loss = loss + F.cross_entropy(logits_of(module.classifier(out["fake_pet"])).float(), labels)
        loss.backward()
        return out["fake_pet"]

    return probe


def build_sharegan(config: dict[str, Any], device, switches: Switches) -> Workload:
    module = _gan(config, device, switches)
    shape = (config["batch"], 1, *[config["size"]] * 3)
    batch = {"mri": _uniform(shape, device, 0), "pet": _uniform(shape, device, 1)}

    def step() -> None:
        with autocast(device, switches.bf16):
            module.training_step(batch, 0)

    return Workload(step, _gan_probe(module, batch["mri"], batch["pet"], switches, device), module, module)


def build_joint(config: dict[str, Any], device, switches: Switches) -> Workload:
    module = _gan(config, device, switches, classifier=True)
    shape = (config["batch"], 1, *[config["size"]] * 3)
    labels = torch.arange(config["batch"], device=device) % 2
    batch = {"mri": _uniform(shape, device, 0), "pet": _uniform(shape, device, 1), "label": labels}
    probe = _gan_probe(module, batch["mri"], batch["pet"], switches, device, labels)

    def step() -> None:
        with autocast(device, switches.bf16):
            module.training_step(batch, 0)

    return Workload(step, probe, module, module)


def build_inference(config: dict[str, Any], device, switches: Switches) -> Workload:
    """Document 000's inference: MRI → PET, and AwareNet on the MRI and on the synthesized PET."""
    module = _gan(config, device, switches, classifier=True).eval()
    mri = _uniform((config["batch"], 1, *[config["size"]] * 3), device)

    def call() -> Tensor:
        with torch.inference_mode(), autocast(device, switches.bf16):
            return module(mri)["p_both"]

    def step() -> None:
        call()

    return Workload(step, call, None, module)


def build_awarenet(config: dict[str, Any], device, switches: Switches) -> Workload:
    """AwareNet's supervised step (document 000, stage 2): cross-entropy, backward, Adam."""
    from brainlearn.methods.supervised import ClassifierModule
    from brainlearn.models.awarenet import AwareNet

    network = AwareNet(1, 2, dropout=0.0, width=config["width"])
    module = _prepare(ClassifierModule(network, ("CN", "AD")), device, switches)
    return _classifier_workload(module, config, device, switches, lambda b: {"label": torch.arange(b) % 2})


def build_brain_age(config: dict[str, Any], device, switches: Switches) -> Workload:
    """The SFCN brain-age step: standardized-age loss, backward, AdamW."""
    from brainlearn.methods.brain_age import BrainAgeModule
    from brainlearn.models.networks import build_network

    channels = [config["width"] * k for k in (1, 2, 4, 8, 8, 4)]  # the SFCN's 32, 64, 128, 256, 256, 64 at 32
    channels[-1] = 2 * config["width"]
    network = build_network("sfcn", in_channels=1, outputs=1, options={"channels": channels})
    module = _prepare(BrainAgeModule(network, age_mean=70.0, age_std=8.0), device, switches)
    return _classifier_workload(module, config, device, switches, lambda b: {"age": 60.0 + 5 * torch.arange(b)})


def _classifier_workload(module, config, device, switches: Switches, targets) -> Workload:
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    optimizer = _fused_as(optimizer, switches)
    batch = {"image": _uniform((config["batch"], 1, *[config["size"]] * 3), device)}
    batch |= {key: value.to(device) for key, value in targets(config["batch"]).items()}

    def probe() -> Tensor:
        module.eval()  # batch norm on its running statistics, no dropout: the same pass in every arm
        with autocast(device, switches.bf16):
            loss = module.training_step(batch, 0)
            output = module(batch["image"])
        module.train()
        loss.backward()
        return output.logits if hasattr(output, "logits") else output

    step = _automatic_step(module, optimizer, batch, switches, device)
    return Workload(step, probe, module, module)


# --- lesion segmentation ---------------------------------------------------------------------------------------


def build_segmentation(config: dict[str, Any], device, switches: Switches) -> Workload:
    """The 2D U-Net (MONAI FlexibleUNet, ResNet-34 encoder) step on a batch of axial slices."""
    from brainlearn.methods.segmentation import SegmentModule
    from brainlearn.models.segmenters import build_segmenter

    network = build_segmenter("unet2d", in_channels=3, options={"decoder_channels": _decoder(config["width"])})
    module = _prepare(SegmentModule(network), device, switches)
    optimizer = _fused_as(module.configure_optimizers(), switches)
    size = config["size"]
    image = _uniform((config["batch"], 3, size, size), device)
    mask = (_uniform((config["batch"], 1, size, size), device, 1) > 0.9).float()
    batch = {"image": image, "mask": mask}

    def probe() -> Tensor:
        module.eval()
        with autocast(device, switches.bf16):
            logits = module(image).float()
            loss = F.binary_cross_entropy_with_logits(logits, mask)
        module.train()
        loss.backward()
        return logits

    return Workload(_automatic_step(module, optimizer, batch, switches, device), probe, module, module)


def _decoder(width: int) -> list[int]:
    return [16 * width, 8 * width, 4 * width, 2 * width, width]


# --- document 003: VQ-GAN, latent diffusion, sampling ----------------------------------------------------------


def build_vqgan(config: dict[str, Any], device, switches: Switches) -> Workload:
    """One VQ-GAN step with the GAN on: ``VQGANModule.training_step``, autoencoder and discriminator updates."""
    from brainlearn.methods.vqgan import VQGANModule
    from brainlearn.models.vqgan import VQGAN3D, build_discriminators

    size, width = config["size"], config["width"]
    vqgan = VQGAN3D(1, channels=width, downsample=VQGAN_COMPRESSION, embedding_dim=LATENT_CHANNELS, n_codes=N_CODES)
    layers = min(3, (size // 3).bit_length() - 1)  # each discriminator needs 3·2^layers voxels per axis
    module = _prepare(
        VQGANModule(vqgan, *build_discriminators(1, channels=4 * width, layers=layers), gan_start=0), device, switches
    )
    optimizers = [_fused_as(optimizer, switches) for optimizer in module.configure_optimizers()]
    _without_lightning(module, optimizers)
    images = {"image": _uniform((config["batch"], 1, size, size, size), device)}

    def step() -> None:
        with autocast(device, switches.bf16):
            module.training_step(images, 0)

    def probe() -> Tensor:
        module.vqgan.eval()  # the codebook's EMA stays put
        with autocast(device, switches.bf16):
            out = module.vqgan(images["image"])
            loss = F.l1_loss(out["reconstruction"].float(), images["image"]) + out["commitment_loss"]
        module.vqgan.train()
        loss.backward()
        return out["reconstruction"]

    return Workload(step, probe, module.vqgan, module)


def _diffusion(config: dict[str, Any], device, switches: Switches):
    from brainlearn.methods.latent_diffusion import LatentDiffusionModule
    from brainlearn.models.denoiser import Denoiser3D

    width = config["width"]
    denoiser = Denoiser3D(LATENT_CHANNELS, channels=width, groups=math.gcd(8, width))
    return _prepare(LatentDiffusionModule(denoiser, timesteps=TIMESTEPS), device, switches)


def _latent_shape(config: dict[str, Any]) -> tuple[int, ...]:
    return (LATENT_CHANNELS, *[config["size"] // VQGAN_COMPRESSION] * 3)


def build_diffusion(config: dict[str, Any], device, switches: Switches) -> Workload:
    """One latent denoiser step: noise loss at random steps, backward, Adam, EMA update."""
    from brainlearn.methods.latent_diffusion import update_ema

    module = _diffusion(config, device, switches)
    optimizer = _fused_as(module.configure_optimizers(), switches)
    latents = _uniform((config["batch"], *_latent_shape(config)), device)
    t = torch.arange(config["batch"], device=device) * (TIMESTEPS // max(1, config["batch"]))
    noise = _uniform(latents.shape, device, 1)

    def step() -> None:
        with autocast(device, switches.bf16):
            loss = module.diffusion.loss(latents)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_ema(module.ema, module.diffusion, module.ema_decay)

    def probe() -> Tensor:
        with autocast(device, switches.bf16):
            predicted = module.diffusion.denoiser(module.diffusion.q_sample(latents, t, noise), t)
        predicted.float().square().mean().backward()
        return predicted

    return Workload(step, probe, module.diffusion, module)


def build_sampling(config: dict[str, Any], device, switches: Switches) -> Workload:
    """``batch`` volumes by ``steps`` DDIM steps of the EMA denoiser, decoded by the VQ-GAN; per volume."""
    from brainlearn.models.vqgan import VQGAN3D

    module = _diffusion(config, device, switches).eval()
    vqgan = VQGAN3D(
        1, channels=max(1, config["width"] // 4), downsample=VQGAN_COMPRESSION, embedding_dim=LATENT_CHANNELS
    )
    vqgan = _prepare(vqgan, device, switches).eval()
    shape = _latent_shape(config)
    latents = _uniform((config["batch"], *shape), device)
    t = torch.full((config["batch"],), TIMESTEPS // 2, device=device)

    def step() -> None:
        with torch.inference_mode(), autocast(device, switches.bf16):
            generator = torch.Generator(device=device).manual_seed(0)
            sampled = module.sample(config["batch"], shape, steps=config["steps"], generator=generator)
            vqgan.decode_latent(sampled)

    def probe() -> Tensor:  # one denoiser call: the sampling chain itself amplifies any rounding
        with torch.inference_mode(), autocast(device, switches.bf16):
            return module.ema.denoiser(latents, t).float()

    return Workload(step, probe, None, nn.ModuleList([module, vqgan]))


def _title_3d(kind: str) -> Callable[[dict[str, Any]], str]:
    return lambda c: f"{kind}: {c['size']}³, batch {c['batch']}, width {c['width']}"


MODEL_METHODS: dict[str, Method] = {
    "awarenet": Method(
        build_awarenet,
        _title_3d("AwareNet training step"),
        True,
        gpu={"size": 256, "batch": 2, "width": 64},
        cpu={"size": 32, "batch": 2, "width": 16},
        reference="260 ms, 15.8 GiB at 256³, batch 2 (goal ≤ 40 ms)",
    ),
    "sharegan": Method(
        build_sharegan,
        _title_3d("ShareGAN stage-1 step (G ×6 passes, two D)"),
        True,
        gpu={"size": 128, "batch": 4, "width": 32},
        cpu={"size": 32, "batch": 1, "width": 4},
        model_switch="fused norm chain, 2 batched G calls",
        reference="835 ms, 13.6 GiB at 128³ crops, batch 4 (goal ≤ 90 ms)",
    ),
    "joint": Method(
        build_joint,
        _title_3d("joint step (G, two D, AwareNet)"),
        True,
        gpu={"size": 256, "batch": 1, "width": 32},
        cpu={"size": 32, "batch": 1, "width": 4},
        model_switch="fused norm chain, 2 batched G calls",
        reference="1414 ms, 34.7 GiB at 256³, batch 1 (goal ≤ 150 ms, ≤ 16 GiB)",
    ),
    "inference": Method(
        build_inference,
        _title_3d("inference: MRI→PET + AwareNet on MRI and on synthesized PET"),
        False,
        gpu={"size": 256, "batch": 1, "width": 32},
        cpu={"size": 32, "batch": 1, "width": 4},
        model_switch="fused norm chain, AdaIN skipped at α = 0",
        reference="148 ms, 2.4 GiB at 256³ (goal ≤ 20 ms)",
    ),
    "brain-age": Method(
        build_brain_age,
        _title_3d("SFCN brain-age step"),
        True,
        gpu={"size": 160, "batch": 8, "width": 32},
        cpu={"size": 32, "batch": 2, "width": 4},
    ),
    "segmentation": Method(
        build_segmentation,
        lambda c: f"2D U-Net (ResNet-34 encoder) step: {c['size']}² slices, 3 channels, batch {c['batch']}",
        True,
        gpu={"size": 256, "batch": 16, "width": 16},
        cpu={"size": 64, "batch": 4, "width": 4},
    ),
    "vqgan": Method(
        build_vqgan,
        lambda c: f"VQ-GAN step: {c['size']}³, batch {c['batch']}, channels {c['width']}, {N_CODES:,} codes",
        True,
        gpu={"size": 64, "batch": 2, "width": 16},
        cpu={"size": 32, "batch": 1, "width": 4},
        reference="97 ms, 14.4 GiB at 64³, batch 2, fp16 mixed precision (goal ≤ 30 ms)",
    ),
    "diffusion": Method(
        build_diffusion,
        lambda c: (
            f"latent denoiser step: {LATENT_CHANNELS}×{c['size'] // 2}³ latents, batch {c['batch']}, "
            f"channels {c['width']}"
        ),
        True,
        gpu={"size": 64, "batch": 10, "width": 64},
        cpu={"size": 32, "batch": 2, "width": 8},
        reference="165 ms, 15.4 GiB for 8×32³ latents, batch 10 (goal ≤ 40 ms)",
    ),
    "sampling": Method(
        build_sampling,
        lambda c: f"sampling: {c['batch']} volume(s) of {c['size']}³, {c['steps']} DDIM steps, VQ-GAN decode",
        False,
        gpu={"size": 64, "batch": 1, "width": 64, "steps": 250},
        cpu={"size": 32, "batch": 1, "width": 8, "steps": 10},
        reference="8.2 s per 64³ volume at 250 steps (goal ≤ 1 s)",
    ),
}


def _check_sizes(name: str, config: dict[str, Any]) -> None:
    size, batch, width = config["size"], config["batch"], config["width"]
    for key, value in (("size", size), ("batch", batch), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BrainlearnError(f"bench {name}: {key} must be a positive integer, not {value!r}.")
    needs = {
        "sharegan": (16, 32, "the generator halves it four times; the discriminator needs 32"),
        "joint": (16, 32, "the generator halves it four times; the discriminator needs 32"),
        "inference": (16, 32, "the generator halves it four times"),
        "diffusion": (16, 16, "a latent the denoiser's four levels halve three times"),
        "sampling": (16, 16, "a latent the denoiser's four levels halve three times"),
        "vqgan": (2, 8, "the VQ-GAN halves it once"),
        "awarenet": (8, 32, "AwareNet's stem and stages reduce each slice 16-fold"),
        "brain-age": (32, 32, "the SFCN halves it five times"),
        "segmentation": (32, 32, "the U-Net's encoder halves it five times"),
    }
    multiple, smallest, why = needs[name]
    if size % multiple or size < smallest:
        raise BrainlearnError(
            f"bench {name}: --size must be a multiple of {multiple} and at least {smallest} ({why}), not {size}."
        )
    if name in ("diffusion", "sampling") and width % 2:
        raise BrainlearnError(f"bench {name}: width must be even (64 in document 003), not {width}.")
    if name == "awarenet" and width % 8:
        raise BrainlearnError(f"bench awarenet: width must be a multiple of 8 (64 in document 000), not {width}.")
    if name == "sampling" and not 1 <= config["steps"] <= TIMESTEPS:
        raise BrainlearnError(f"bench sampling: steps must lie in 1 … {TIMESTEPS}, not {config['steps']}.")


def _write_table(run, name: str, method: Method, config: dict[str, Any], rows, tolerance, flops, device) -> None:
    where = f"{device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()})"
    steps = f" steps={config['steps']}" if name == "sampling" else ""
    compiled = f" --compile {config['compile']}" if config.get("compile") else ""
    unit = "volume" if name == "sampling" else "step"
    lines = [
        f"# {method.title(config)}, {where}",
        "",
        f"{time.strftime('%Y-%m-%d')}, `brainlearn bench --method {name} --size {config['size']} --batch "
        f"{config['batch']} --precision {config['precision']}{compiled} width={config['width']}{steps}`, median of "
        f"{config['repeats']} after one warm-up; each arm adds one switch to the arm above it; errors are "
        "‖arm − reference‖ / ‖reference‖ of a fixed pass's output and of all parameter gradients; saved GiB: what "
        "that pass's forward kept for its backward (activations and weights, each storage once).",
        "",
        f"{(flops or 0) / 1e12:.3g} TFLOP per {unit}"
        + (f"; reference figure (H100, fp32): {method.reference}" if method.reference else ""),
        "",
        f"| arm | ms/{unit} | steps/s | volumes/s | TFLOP/s | peak GPU GiB | saved GiB | speed-up | output error | "
        "gradient error | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = row["seconds"] / (config["batch"] if name == "sampling" else 1)
        lines.append(
            f"| {row['arm']} | {1000 * seconds:.1f} | {1 / row['seconds']:.2f} | {row['volumes_per_s']:.2f} | "
            f"{row['tflops']:.3g} | {row['peak_gib']:.2f} | {row['saved_gib']:.3g} | {row['ratio']:.2f}× | "
            f"{row['output_error']:.1e} | "
            f"{_maybe(row['gradient_error'])} | {row['warmup']:.1f} |"
        )
    lines.append(
        f"| {TOLERANCE_ARM} | | | | | | | | {tolerance['output_error']:.1e} | {_maybe(tolerance['gradient_error'])} | |"
    )
    from brainlearn.bench import write_report

    write_report(run, lines)


def _maybe(value: float) -> str:
    return "–" if value != value else f"{value:.1e}"
