"""Train E study-1 models of one architecture as one computation (issue 24).

``train_ensemble(run_root, seeds, data, model, train)`` trains one member per seed under
``run_root/seed-<S>/``, each folder exactly what ``mdesc descent train --seed S`` writes
(config.json, vocab.json, data.safetensors, checkpoints/epoch_NNNN.safetensors with the same
metadata, optimizer_NNNN.safetensors in the single run's format, history.json), so ``mdesc
descent sweep / report / pool`` work unchanged on each member, and ``train_run`` of a member's
folder continues it alone.

Member S is the single run of seed S (:func:`mdesc.descent.run.train_run`): its initial weights
(``torch.manual_seed(S)``, then the single run's constructor), its data split (seeded by
``train.data_seed``, or by S when that is None: today's single-run behaviour), its per-epoch
generator (the epoch's shuffling, then its dropout masks batch by batch), its loss (the mean over
its own batch), its gradient clipping and its optimizer (:mod:`mdesc.ensemble.optim`; members
may differ in learning rate, ``lrs``).  One training step runs every member's batch together:
the embedding gather per member, :func:`mdesc.ensemble.recurrent.ensemble_recurrent` per layer
(``backend``: the extension's op or the torch loop), the readout at each sequence's last real
token; T of the step is the longest member batch (the zero padding after a sequence's end
changes nothing that is read).  With ``--floss`` each member adds its single run's flossing
term on the same steps (:mod:`mdesc.ensemble.floss`).  Every member is evaluated every epoch and
its files are written atomically (optimizer state first, checkpoint second, as a single run does).

Resume: the newest epoch complete for ALL members (a killed run resumes to the identical
history).  Before any work: the seeds (at least one, no duplicates), existing members' settings,
the optimizer (adam, adamw or sgd), the backend and a memory estimate (the values saved for
backpropagation through time, times E) against the device's available memory, each failing
with one readable :class:`~mdesc.descent.model.RunError`.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) rank r trains ``seeds[r::world]``
(no process group is needed: the members are independent; each rank uses ``cuda:LOCAL_RANK``
when the device is cuda).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mdesc.core.floss import ZERO_INPUT_STEPS
from mdesc.data import sentiment
from mdesc.data.sentiment import EncodedSplit, TextSettings
from mdesc.descent.folder import DescentRun
from mdesc.descent.model import (ModelSettings, RunError, TrainSettings, _batch, head_correct,
                                 head_loss, make_optimizer, resolve_device)
from mdesc.descent.run import (PARAM_CHANGE, Unreadable, check_folder,
                               epoch_generator, epoch_metrics, load_run_splits, load_splits,
                               read_epoch, read_history, resume_newest, start_folder,
                               write_epoch)
from mdesc.ensemble.floss import EnsembleFloss, floss_memory
from mdesc.ensemble.model import EnsembleNet, build_members
from mdesc.ensemble.optim import KINDS, EnsembleOptimizer, clip_grad_norms
from mdesc.ensemble.recurrent import CELL_GATES
from mdesc.store import StoreError
from mdesc.sweep.record import param_change, weights_of

__all__ = ["train_ensemble", "parse_seeds", "member_dir", "memory_estimate", "shard_seeds"]

BACKENDS = ("auto", "torch", "extension")
EVAL_BATCH = 512  # the single run's evaluation batch (mdesc.descent.model.evaluate)


def member_dir(run_root: str | os.PathLike, seed: int) -> Path:
    """The run folder of the member of seed ``seed``."""
    return Path(run_root) / f"seed-{seed}"


def parse_seeds(text: str) -> list[int]:
    """``"1-10"``, ``"1,3,5-7"`` -> the seeds in that order (RunError when malformed)."""
    seeds: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            if sep:
                if int(hi) < int(lo):
                    raise ValueError(part)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise RunError(f"--seeds {text!r}: give seeds as a list and ranges, e.g. 1-10 or "
                       "1,2,5-8") from None
    return seeds


def shard_seeds(seeds: Sequence[int], rank: int | None = None, world: int | None = None
                ) -> list[int]:
    """This process's share of the seeds: ``seeds[rank::world]`` (RANK and WORLD_SIZE from
    the environment when not given; a single process keeps them all)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    return list(seeds)[rank::world]


@dataclasses.dataclass
class _Member:
    seed: int
    run: DescentRun
    data: TextSettings
    train: TrainSettings
    config: dict | None = None
    splits: tuple[EncodedSplit, EncodedSplit, EncodedSplit] | None = None


def _plan(run_root, seeds, data, model, train, lrs) -> list[_Member]:
    """Every member's folder and settings, every input checked (one RunError naming all)."""
    seeds = list(seeds)
    problems = []
    if len(seeds) < 1:
        problems.append("an ensemble needs at least one seed (E >= 1)")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        problems.append(f"seeds repeat: {', '.join(map(str, dup))} (each member needs its own)")
    if lrs is not None and len(lrs) != len(seeds):
        problems.append(f"{len(lrs)} learning rates for {len(seeds)} seeds (give one per seed)")
    if train.optimizer not in KINDS:
        problems.append(f"the ensemble trains with {', '.join(KINDS)}, not {train.optimizer!r}")
    if problems:
        raise RunError("; ".join(problems))
    members = []
    for i, seed in enumerate(seeds):
        t = dataclasses.replace(train, seed=seed, **({"lr": lrs[i]} if lrs is not None else {}))
        d = dataclasses.replace(data, seed=t.split_seed)
        m = _Member(seed, DescentRun(member_dir(run_root, seed)), d, t)
        try:
            m.config = check_folder(m.run, d, model, t)
        except (RunError, StoreError) as e:
            problems.append(f"seed {seed}: {e}")
        members.append(m)
    if problems:
        raise RunError("members that cannot join this ensemble: " + " | ".join(problems))
    return members


def memory_estimate(n_models: int, data: TextSettings, model: ModelSettings,
                    train: TrainSettings, itemsize: int = 4) -> int:
    """Bytes a training step of ``n_models`` members needs, about: the values the torch
    recurrence saves for backpropagation through time (per member, step, sequence and layer
    about (3 G + 6) H: pre-activations, gate outputs, states and their products), the embedded
    inputs (twice with dropout), and the weights with their gradient and two optimizer moments.
    T is the longest review (max_len), B the batch size.  With ``--floss``, plus one member's
    flossing graph (:func:`mdesc.ensemble.floss.floss_memory`; members are flossed one at a time,
    before the forward pass, so this over-counts) and the scratch model's weights and gradient."""
    G, H, D, L = CELL_GATES[model.cell], model.hidden_size, model.embed_dim, model.num_layers
    per_step = train.batch_size * (L * (3 * G + 6) * H + 2 * D)
    weights = data.vocab_size * D + sum(G * H * ((D if k == 0 else H) + H + 2)
                                        for k in range(L)) + H + 1
    floss = floss_memory(data, model, train, itemsize)
    scratch = 2 * weights * itemsize if floss else 0
    return n_models * (data.max_len * per_step + 4 * weights) * itemsize + floss + scratch


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (MemAvailable for the CPU); None when it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_resources(n_models, data, model, train, device, backend) -> None:
    if backend not in BACKENDS:
        raise RunError(f"ensemble backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "extension":
        from mdesc.ensemble import _op  # the extension's ensemble op (optional)

        if not _op.available(torch.empty(0, dtype=torch.get_default_dtype(), device=device)):
            raise RunError(f"this build of mdesc has no ensemble op for {device}; use "
                           "--ensemble-backend auto or torch")
    need = memory_estimate(n_models, data, model, train,
                           torch.tensor([], dtype=torch.get_default_dtype()).element_size())
    have = available_memory(device)
    if have is not None and need > have:
        floss = ""
        if train.floss_target_weight() is not None:
            floss = (f", plus a flossing graph of {train.floss_probe} probe reviews x "
                     f"{data.max_len} + {ZERO_INPUT_STEPS} steps")
        raise RunError(
            f"training {n_models} models at once needs about {need / 2**30:.2f} GiB "
            f"(activations saved for backpropagation through {data.max_len} steps x batch "
            f"{train.batch_size} x {n_models} models{floss}) but {device} has "
            f"{have / 2**30:.2f} GiB available; train fewer seeds per process (torchrun shards "
            "them), or lower --batch-size or --max-len" + (" or --floss-probe" if floss else ""))


def _open_members(members, model, progress, data_path) -> None:
    """Existing members' splits; new members' data loaded (once per split seed) and checked,
    then their folders written.  Every member must share vocabulary size, classes and split
    sizes (one architecture, one batch count)."""
    loaded = {}
    for m in members:
        if m.config is None and m.data.seed not in loaded:
            loaded[m.data.seed] = load_splits(m.data, progress, data_path)
    shapes = {}
    for m in members:
        if m.config is not None:
            m.splits = load_run_splits(m.run.root)
            shape = (m.config["vocab_size"], m.config.get("classes", 2))
        else:
            ld = loaded[m.data.seed]
            m.splits = (ld.train, ld.val, ld.test)
            shape = (len(ld.vocab), ld.classes)
        shapes[m.seed] = shape + tuple(len(sp) for sp in m.splits)
    if len(set(shapes.values())) > 1:
        raise RunError("ensemble members differ in (vocabulary size, classes, train/val/test "
                       f"sizes): {shapes}; give them one data split with --data-seed")
    for m in members:
        if m.config is None:
            m.config = start_folder(m.run, m.data, model, m.train, loaded[m.data.seed],
                                    sentiment.data_file(m.data, data_path))


def train_ensemble(run_root: str | os.PathLike, seeds: Sequence[int],
                   data: TextSettings | None = None, model: ModelSettings | None = None,
                   train: TrainSettings | None = None, *, lrs: Sequence[float] | None = None,
                   backend: str = "auto",
                   on_epoch: Callable[[int, dict[int, dict]], None] | None = None,
                   progress: bool = True, data_path: str | os.PathLike | None = None,
                   say: Callable[[str], None] | None = print,
                   shard: tuple[int, int] | None = None) -> dict[int, dict]:
    """Train (or continue) the members ``seeds`` (this process's share, :func:`shard_seeds`;
    ``shard`` = (rank, world) overrides the environment) up to ``train.epochs`` epochs.

    ``train``: every member's settings but ``seed`` (and ``lr`` when ``lrs`` gives one per
    seed).  ``on_epoch(epoch, {seed: metrics})`` runs after every member's epoch is written.
    Returns ``{seed: history}`` of this process's members (module docstring for the rest).
    """
    data, model, train = data or TextSettings(), model or ModelSettings(), train or TrainSettings()
    data.check()
    model.check()
    train.check()
    seeds = list(seeds)
    members = _plan(run_root, seeds, data, model, train, lrs)  # every seed checked, then shard
    rank, world = shard if shard is not None else (None, None)
    mine = set(shard_seeds(seeds, rank, world))
    members = [m for m in members if m.seed in mine]
    if not members:
        return {}
    device = _rank_device(train.device)
    _check_resources(len(members), data, model, train, device, backend)
    _open_members(members, model, progress, data_path)
    group = _Group(members, device, backend)
    start = group.resume(say)
    _run_epochs(group, start, train.epochs, progress, on_epoch)
    return {m.seed: read_history(m.run.root) for m in members}


def _rank_device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return device


def _run_epochs(group, start: int, epochs: int, progress: bool, on_epoch) -> None:
    todo = max(epochs - start, 0)
    if not todo:
        return
    from tqdm.auto import tqdm  # optional progress bar, imported only when training

    bar = tqdm(total=todo * group.n_batches, unit="batch", disable=not progress,
               desc=f"train {group.size} models, epochs {start + 1}-{epochs}",
               dynamic_ncols=True)
    try:
        for epoch in range(start + 1, epochs + 1):
            before = [weights_of(group.net.member_state(e)) for e in range(group.size)]
            group.train_epoch(epoch, bar)
            changes = [param_change(b, weights_of(group.net.member_state(e)))
                       for e, b in enumerate(before)]
            extra = [{k: c[k] for k in PARAM_CHANGE} for c in changes]
            if group.floss is not None:
                extra = [{**x, **f} for x, f in zip(extra, group.floss.epoch_metrics())]
            metrics = group.save(epoch, extra)
            best = min(m["test_loss"] for m in metrics.values())
            bar.set_postfix(epoch=epoch, best_test=f"{best:.3g}")
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    finally:
        bar.close()


class _Group:
    """The members being trained together: stacked weights, optimizer, data, files."""

    def __init__(self, members: list[_Member], device: torch.device, backend: str):
        self.members, self.device, self.size = members, device, len(members)
        config = members[0].config
        models = build_members(config, [m.seed for m in members])
        self.net = EnsembleNet(models, device, backend)
        self.floss = None  # --floss: each member's single-run penalty (mdesc.ensemble.floss)
        if members[0].train.floss_target_weight() is not None:
            self.floss = EnsembleFloss([m.splits[0] for m in members],
                                       [m.train for m in members], models[0], device)
        template = [torch.nn.Parameter(p[0].detach()) for p in self.net.params]
        groups = [make_optimizer(template, m.train).state_dict()["param_groups"]
                  for m in members]
        self.opt = EnsembleOptimizer(self.net.params, members[0].train.optimizer, groups)
        self.n_train = len(members[0].splits[0])
        self.batch_size = members[0].train.batch_size
        self.n_batches = math.ceil(self.n_train / self.batch_size)
        self.clip_norm = members[0].train.clip_norm

    # training -------------------------------------------------------------------------------
    def _stack(self, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Member batches ((T_e, B) ids, lengths, labels) -> (E, T, B) ids zero-padded to the
        longest, (E, B) lengths, (E, B) labels."""
        t_max = max(ids.shape[0] for ids, _, _ in batches)
        ids = torch.stack([torch.nn.functional.pad(ids, (0, 0, 0, t_max - ids.shape[0]))
                           for ids, _, _ in batches])
        return ids, torch.stack([b[1] for b in batches]), torch.stack([b[2] for b in batches])

    def train_epoch(self, epoch: int, bar) -> None:
        self.net.training = True
        gens = [epoch_generator(m.seed, epoch) for m in self.members]
        orders = [torch.randperm(self.n_train, generator=g).numpy() for g in gens]
        for step, lo in enumerate(range(0, self.n_train, self.batch_size)):
            batches = [_batch(m.splits[0], order[lo: lo + self.batch_size], self.device)
                       for m, order in zip(self.members, orders)]
            ids, lengths, y = self._stack(batches)
            masks = self.net.draw_dropout(gens, [b[0].shape[0] for b in batches],
                                          ids.shape[2], ids.shape[1])
            self.net.zero_grad()
            if self.floss is not None:  # the single run's global step numbers
                self.floss.add_gradients(self.net, (epoch - 1) * self.n_batches + step)
            logits = self.net(ids, lengths, masks)
            loss = head_loss(logits, y, reduction="none").view(self.size, -1).mean(1)
            loss.sum().backward()  # member e's gradient is that of its own mean loss
            self.net.zero_padding_grad()
            if self.clip_norm is not None:
                clip_grad_norms(self.net.params, self.clip_norm)
            self.opt.step()
            bar.update(1)

    # evaluation and files -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, which: int) -> tuple[list[float], list[float]]:
        """Every member's mean loss and accuracy on its split ``which`` (0 train, 1 val,
        2 test), in the single run's evaluation batches."""
        self.net.training = False
        n = len(self.members[0].splits[which])
        loss, correct = np.zeros(self.size), np.zeros(self.size)
        for lo in range(0, n, EVAL_BATCH):
            idx = np.arange(lo, min(lo + EVAL_BATCH, n))
            ids, lengths, y = self._stack([_batch(m.splits[which], idx, self.device)
                                           for m in self.members])
            logits = self.net(ids, lengths)
            loss += np.asarray(head_loss(logits, y, "none").view(self.size, -1).sum(1).tolist())
            correct += np.asarray(head_correct(logits, y).view(self.size, -1).sum(1).tolist())
        return list(loss / n), list(correct / n)

    def save(self, epoch: int, changes: list[dict] | None = None) -> dict[int, dict]:
        """Evaluate every member, then write its epoch (optimizer state, then checkpoint)."""
        names = [name for name, which in (("train", 0), ("val", 1), ("test", 2))
                 if len(self.members[0].splits[which])]
        scores = {name: self.evaluate(("train", "val", "test").index(name)) for name in names}
        out = {}
        for e, m in enumerate(self.members):
            metrics = epoch_metrics(epoch, {k: (v[0][e], v[1][e]) for k, v in scores.items()},
                                    changes[e] if changes else None)
            write_epoch(m.run, epoch, self.net.member_state(e), self.opt.member_state_dict(e),
                        metrics)
            out[m.seed] = metrics
        return out

    def resume(self, say) -> int:
        """The epoch to continue after: the newest complete for every member (0 after writing
        the initial checkpoints when no member has trained yet)."""
        done = [set(m.run.complete_epochs()) for m in self.members]
        common = sorted(set.intersection(*done))
        if not common:
            ahead = {m.seed: max(d) for m, d in zip(self.members, done) if d and max(d) > 0}
            if ahead:
                raise RunError(f"members {sorted(ahead)} have trained epochs the others lack "
                               f"(newest: {ahead}); train new seeds in another --run-dir")
            self.save(0)
            return 0
        root = self.members[0].run.root.parent
        return resume_newest(root, common, self._load_epoch, say)

    def _load_epoch(self, epoch: int) -> str:
        for e, m in enumerate(self.members):
            state, opt_state = read_epoch(m.run, epoch)
            try:
                self.net.load_member(e, state)
            except RuntimeError as err:
                raise Unreadable(m.run.checkpoint_path(epoch), err) from None
            try:
                self.opt.load_member_state_dict(e, opt_state)
            except (KeyError, ValueError, RuntimeError) as err:
                raise Unreadable(m.run.optimizer_path(epoch), err) from None
        return f"{self.size} members' epoch_{epoch:04d} + optimizer_{epoch:04d}"
