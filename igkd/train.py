"""Training of teachers and students on in-memory uint8 datasets (inference: igkd.evaluation)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from igkd.augment import augment_batch, random_crop_flip
from igkd.data import Dataset, normalize, to_float
from igkd.errors import ConfigError

# Split off; re-exported, since callers and notebooks know them as igkd.train.<name>.
from igkd.evaluation import CPU_PREDICT_BATCH, Evaluation, default_device, evaluate, predict  # noqa: F401
from igkd.losses import Method, attention_map
from igkd.models import input_space, tapped
from igkd.precision import (  # noqa: F401
    _autocast,
    cpu_bf16_exceptions,
    out_of_place_activations,
    resolve_precision,
)
from igkd.runs import Run

# --- training --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, batch, epochs, input space, augmentation, precision."""

    epochs: int
    batch_size: int
    optimizer: str = "adam"  # "adam" | "sgd" (Nesterov momentum)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"  # "constant" | "warmup_cosine" (linear warm-up, cosine to 0)
    warmup: float = 0.0  # fraction of all steps spent warming up (warmup_cosine)
    label_smoothing: float = 0.0
    normalized: bool = False  # feed CIFAR-normalised inputs (teacher) or [0, 1] pixels (students)
    augment: bool = True  # random crop (zero pad 4) + horizontal flip
    precision: str = "auto"  # "auto" | "fp32" | "bf16" (CPU autocast) | "fp16" (CUDA AMP)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "optimizer": self.optimizer in ("adam", "sgd"),
            "lr": self.lr > 0,
            "schedule": self.schedule in ("constant", "warmup_cosine"),
            "warmup": 0 <= self.warmup < 1,
            "precision": self.precision in ("auto", "fp32", "bf16", "fp16"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"recipe {name}={getattr(self, name)!r} is not allowed")


def _optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    if r.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=True, weight_decay=r.weight_decay
    )


def _schedule(opt: torch.optim.Optimizer, r: Recipe, total_steps: int):
    warm = max(1, round(r.warmup * total_steps))

    def factor(step: int) -> float:
        if r.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Distillation:
    """What a student learns from besides its labels: a method, the teacher, the IG maps.

    Teacher outputs are `online` (the teacher sees exactly the student's augmented, possibly
    overlaid view; default) or `cached` (computed once on the clean images with
    `teacher_outputs`, aligned by index; cheaper, as the published code did but without its
    shuffling bug).
    """

    method: Method
    teacher: nn.Module | None = None
    maps: torch.Tensor | None = None  # (N, H, W) IG maps in training-set order, for the overlay
    teacher_outputs: str = "online"  # "online" | "cached"
    cached: tuple[torch.Tensor, torch.Tensor] | None = None  # logits (N, 10), attention (N, H*W)
    # The modules tapped for attention transfer: features[i] of the paper's models, or a submodule
    # name of any model (models.tapped); their outputs must have the same H x W.
    student_layer: int | str = 9
    teacher_layer: int | str = 9
    overlay_order: str = "aligned"  # "aligned" (map cropped/flipped with its image) | "published"

    def __post_init__(self) -> None:
        if self.teacher_outputs not in ("online", "cached"):
            raise ConfigError(f"teacher_outputs={self.teacher_outputs!r}; use 'online' or 'cached'")
        if self.method.needs_teacher and self.teacher_outputs == "online" and self.teacher is None:
            raise ConfigError("this method needs the teacher: pass teacher= (or cached outputs)")
        if self.method.needs_teacher and self.teacher_outputs == "cached" and self.cached is None:
            raise ConfigError("teacher_outputs='cached' needs cached=(logits, attention)")
        if self.method.overlay_prob > 0 and self.maps is None:
            raise ConfigError(
                f"overlay_prob={self.method.overlay_prob} needs the IG maps: pass maps="
            )


@torch.no_grad()
def teacher_outputs(
    teacher: nn.Module, data: Dataset, layer: int = 9, batch_size: int = 500, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's logits (N, 10) and attention maps (N, H*W) at features[layer], on the clean
    (un-augmented) images in dataset order, for `Distillation(teacher_outputs="cached")`."""
    device = torch.device(device) if device is not None else default_device()
    teacher = teacher.to(device, memory_format=torch.channels_last).eval()
    logits, attention = [], []
    for start in range(0, len(data), batch_size):
        x = to_float(data.images[start : start + batch_size].to(device), input_space(teacher))
        z, f = tapped(teacher, x.contiguous(memory_format=torch.channels_last), layer)
        logits.append(z.float().cpu())
        attention.append(attention_map(f).cpu())
    return torch.cat(logits), torch.cat(attention)


def _view(images, idx, recipe: Recipe, distill: Distillation | None, g) -> torch.Tensor:
    """The batch the student sees: crop/flip (and the IG overlay), float in [0, 1]."""
    x = images[idx]
    if distill is not None and distill.method.overlay_prob > 0:
        return augment_batch(
            x,
            distill.maps[idx.cpu()].to(x.device).float(),
            p=distill.method.overlay_prob,
            order=distill.overlay_order,
            crop_flip=recipe.augment,
            generator=g,
        )
    if recipe.augment:
        x = random_crop_flip(x, generator=g)
    return to_float(x)


def _forward(model, x01, y, idx, recipe: Recipe, distill: Distillation | None, loss_fn):
    """(loss, logits) of one batch of [0, 1] images under the method's objective."""
    x = (normalize(x01) if recipe.normalized else x01).contiguous(memory_format=torch.channels_last)
    if distill is None:
        logits = model(x)
        return loss_fn(logits.float(), y), logits
    m = distill.method
    feats = t_logits = t_feats = None
    if m.gamma > 0:
        logits, feats = tapped(model, x, distill.student_layer)
    else:
        logits = model(x)
    if m.needs_teacher and distill.teacher_outputs == "online":
        with torch.no_grad():  # not inference_mode: its tensors could not be saved for backward
            # the teacher sees the student's view in its own input space (the paper's: normalised)
            xt = normalize(x01) if input_space(distill.teacher) else x01
            xt = xt.contiguous(memory_format=torch.channels_last)
            t_logits, t_feats = tapped(distill.teacher, xt, distill.teacher_layer)
    elif m.needs_teacher:
        cpu_idx = idx.cpu()
        t_logits = distill.cached[0][cpu_idx].to(x.device)
        t_feats = distill.cached[1][cpu_idx].to(x.device)
    loss, _ = m.loss(logits, y, t_logits, feats, t_feats)
    return loss, logits


def fit(
    model: nn.Module,
    train: Dataset,
    recipe: Recipe,
    *,
    seed: int = 0,
    run: Run | None = None,
    test: Dataset | None = None,
    val: Dataset | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    distill: Distillation | None = None,
) -> dict:
    """Train `model` on `train` with `recipe`; resume from and checkpoint to `run` every epoch.

    Without `distill` the loss is cross-entropy (with the recipe's label smoothing); with it, the
    method's alpha * KD + (1 - alpha) * CE + gamma * AT on the (possibly IG-overlaid) view.

    All randomness of epoch e (shuffling, crops, flips, dropout) is drawn from seed (seed, e), so a
    run resumed from its epoch-e checkpoint continues exactly as if it had never stopped.
    Returns metrics: final and best test (and validation) accuracy (%), epochs, seconds, precision,
    and with `test` the final model's per-class test accuracy.
    """
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(recipe.precision, device)
    model = model.to(device, memory_format=torch.channels_last)
    opt = _optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    sched = _schedule(opt, recipe, recipe.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    images, labels = train.images.to(device), train.labels.to(device)  # the whole set, once
    if distill is not None and distill.teacher is not None:
        distill.teacher.to(device, memory_format=torch.channels_last).eval()

    if device.type == "cpu":
        torch.set_flush_denormal(True)  # tiny Adam updates otherwise hit slow denormal arithmetic
    start_epoch, elapsed, history = 0, 0.0, []
    state = run.load_checkpoint(map_location=device) if run is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, elapsed = state["epoch"], state["seconds"]
        history = list(run.history)
    last_test: Evaluation | None = None

    with cpu_bf16_exceptions(model, precision, device), out_of_place_activations(model):
        for epoch in range(start_epoch, recipe.epochs):
            _seed_everything(seed * 100_003 + epoch)
            g = torch.Generator(device).manual_seed(seed * 100_003 + epoch)
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(train), generator=g, device=device)
            if len(order) % recipe.batch_size == 1:
                order = order[:-1]  # a batch of one breaks BatchNorm in train mode
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            bar = tqdm(
                range(0, len(order), recipe.batch_size),
                desc=f"epoch {epoch + 1}/{recipe.epochs}",
                disable=not progress,
                leave=False,
                unit="batch",
                mininterval=5,  # executed notebooks keep every refresh as text
            )
            for i in bar:
                idx = order[i : i + recipe.batch_size]
                y = labels[idx]
                x = _view(images, idx, recipe, distill, g)
                with _autocast(precision, device):
                    loss, logits = _forward(model, x, y, idx, recipe, distill, loss_fn)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == y).sum()
                if progress and (i // recipe.batch_size) % 10 == 0:
                    seen = i + len(idx)
                    bar.set_postfix(
                        img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                        loss=f"{loss.item():.3f}",
                    )
            seconds = time.perf_counter() - t0
            elapsed += seconds
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / len(order),
                "train_accuracy": 100 * correct.item() / len(order),
                "lr": sched.get_last_lr()[0],
                "seconds": seconds,
                "images_per_second": len(order) / seconds,
            }
            t1 = time.perf_counter()
            for name, ds in (("val", val), ("test", test)):
                if ds is not None:
                    result = evaluate(model, ds, recipe.normalized, device=device)
                    row[f"{name}_accuracy"] = result.accuracy
                    if name == "test":
                        last_test = result
            # Scoring every epoch can cost more than training (a 20-epoch run on 2,500 images
            # scores 10,000 test images 20 times): what a run costs must count it.
            row["eval_seconds"] = time.perf_counter() - t1
            if progress:
                shown = {k: round(v, 4) for k, v in row.items() if k != "epoch"}
                tqdm.write(f"epoch {epoch + 1}/{recipe.epochs} {shown}")
            history.append(row)
            if run is not None:
                run.append_history(row)
                run.save_checkpoint(
                    {
                        "epoch": epoch + 1,
                        "seconds": elapsed,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                    }
                )
    out = _summary(history, elapsed, precision)
    if test is not None:  # the last epoch's evaluation; callers need not evaluate the model again
        if last_test is None:  # resumed after its last epoch: nothing was evaluated in this call
            last_test = evaluate(model, test, recipe.normalized, device=device)
        out["per_class_test_accuracy"] = last_test.per_class
    return out


def _summary(history: list[dict], seconds: float, precision: str) -> dict:
    """Final- and best-epoch accuracies (the paper reports the final epoch)."""
    out: dict = {"epochs": len(history), "train_seconds": seconds, "precision": precision}
    if all("eval_seconds" in h for h in history):  # runs resumed from older igkd lack some
        out["eval_seconds"] = sum(h["eval_seconds"] for h in history)
    last = history[-1]
    out["final_train_accuracy"] = last["train_accuracy"]
    out["final_images_per_second"] = last["images_per_second"]
    for name in ("val", "test"):
        key = f"{name}_accuracy"
        if key in last:
            best = max(history, key=lambda h: h[key])
            out[f"final_{key}"] = last[key]
            out[f"best_{key}"] = best[key]
            out[f"best_{name}_epoch"] = best["epoch"]
    return out
