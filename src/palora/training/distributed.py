"""One process or many: who writes, who waits, and the decomposition split across ranks.

Under ``accelerate launch`` or ``torchrun`` every rank runs the same command. Training is data
parallel (:mod:`palora.training.loop`); everything else follows two rules: the main process alone
writes files and logs (then every rank waits at a barrier before reading them), and the SVD of
the target matrices is split: rank ``p`` of ``P`` decomposes targets ``p, p + P, p + 2P, ...``
and each result is broadcast once from its owner, so the decomposition takes ``1/P`` of the time.
With one process every function here is the plain single-process behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from accelerate import PartialState
from torch import nn

from ..core.linalg import SVD, default_device, iter_svd, thin_svd
from ..core.targets import Target, weight_matrix


def process_state() -> PartialState:
    """The process group (initialised from the launcher's environment on first use)."""
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return process_state().is_main_process


def world_size() -> int:
    return process_state().num_processes


def barrier() -> None:
    process_state().wait_for_everyone()


def fully_shard_layers(model: nn.Module) -> nn.Module:
    """FSDP2: shard every decoder layer, then the rest of the model, over all processes.

    Decoder layers are the modules whose class a transformers model names in its
    ``_no_split_modules``. The orthogonal projection keeps working: it is a parametrization
    evaluated in the forward pass, on the gathered parameters, not a gradient hook.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    state = process_state()
    mesh = init_device_mesh(state.device.type, (state.num_processes,))
    layer_classes: set[str] = set()
    for module in model.modules():
        layer_classes.update(getattr(module, "_no_split_modules", None) or [])
    for module in list(model.modules()):
        if type(module).__name__ in layer_classes:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def split_svd(targets: Iterable[Target], device: torch.device | str | None = None) -> Iterator[tuple[Target, SVD]]:
    """Like :func:`palora.core.linalg.iter_svd`, with the matrices shared out over the ranks.

    Each rank first decomposes its own share, then the factors of every matrix are broadcast from
    the rank that owns it (one collective per factor), in target order.
    """
    targets = list(targets)
    state = process_state()
    device = device if device is not None else default_device()
    if state.num_processes == 1:
        yield from iter_svd(targets, device)
        return
    rank, world = state.process_index, state.num_processes
    comm = state.device  # gloo needs CPU tensors, nccl CUDA ones: the process group's own device
    own = {i: thin_svd(weight_matrix(t.module), device=device) for i, t in enumerate(targets) if i % world == rank}
    for i, t in enumerate(targets):
        m, n = t.shape
        r = min(m, n)
        if i in own:
            svd = own.pop(i)
            U, S, V = (x.to(comm).contiguous() for x in (svd.U, svd.S, svd.V))
        else:
            U, S, V = torch.empty(m, r, device=comm), torch.empty(r, device=comm), torch.empty(n, r, device=comm)
        for x in (U, S, V):
            dist.broadcast(x, src=i % world)
        home = device if device is not None else t.module.weight.device
        yield t, SVD(U.to(home), S.to(home), V.to(home))


def from_main(value: object) -> object:
    """``value`` as the main process has it, on every process (one broadcast; itself with one process)."""
    state = process_state()
    if state.num_processes == 1:
        return value
    box = [value if state.is_main_process else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
