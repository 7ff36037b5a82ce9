"""Training steps of a tiny audio model, run alone or as one of several torchrun processes.

    python tests/parallel_steps.py OUT                                            # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/parallel_steps.py OUT

Every process builds the same model and the same batches, trains on its own contiguous share of
each batch, and writes its weights and codebooks to OUT/rank<R>_<stage>.safetensors after three
stages: SGD steps (which tests/test_parallel.py compares with one process training on the whole
batches), then AdamW steps, then AdamW steps with the discriminator (whose copies, like the
model's, must stay bit for bit the same in every process). Under torchrun each process also writes
OUT/rank<R>_group.json: whether torch._dynamo, which the first optimiser imports, was first imported after
the process group was made, and whether the group outlived parallel.stop.
Quantizer dropout is off and a code unused for one step is restarted, so that k-means, the EMA
updates and restarts all run, and one process's steps are the same computation as the parallel ones.
"""
from __future__ import annotations

import json
import sys
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from vqcodec import parallel
from vqcodec.adversarial import MultiScaleSTFTDiscriminator
from vqcodec.config import AudioConfig
from vqcodec.losses import ReconstructionLoss
from vqcodec.models import VQVAE
from vqcodec.train import train_step

CFG = AudioConfig(sample_rate=8000, base_channels=4, strides=(2, 4), res_blocks=1, latent_dim=8, num_codebooks=3,
                  codebook_size=256, context_frames=16)
BATCH, CROP, SGD_STEPS, ADAM_STEPS, ADVERSARIAL_STEPS = 4, 1280, 3, 3, 2


def batches(count: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(7)
    t = np.arange(CROP) / CFG.sample_rate
    out = []
    for _ in range(count):
        tones = np.sin(2 * np.pi * rng.uniform(100, 1500, (BATCH, 1)) * t) * rng.uniform(0.1, 0.5, (BATCH, 1))
        noisy = tones + 0.05 * rng.standard_normal((BATCH, CROP))
        out.append(torch.from_numpy(noisy.astype(np.float32))[:, None])
    return out


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dynamo_before_start = "torch._dynamo" in sys.modules
    device = parallel.start("cpu")
    group = weakref.ref(dist.group.WORLD) if parallel.active() else None
    rank, share = parallel.rank(), BATCH // parallel.world_size()
    torch.manual_seed(0)  # the same draws in every process: k-means and restarts then match one process's
    model = VQVAE(CFG).to(device).train()
    model.quantizer.dropout = 0.0
    for layer in model.quantizer.layers:
        layer.restart_after = 1
    loss_fn = ReconstructionLoss(CFG)
    no_autocast = torch.autocast("cpu", enabled=False)
    data = batches(SGD_STEPS + ADAM_STEPS)
    disc = MultiScaleSTFTDiscriminator(channels=4)

    def small_loss(estimate, batch):  # gradients under the clipping norm (1.0), which would hide a wrong average's scale
        reconstruction, parts = loss_fn(estimate, batch)
        return 0.1 * reconstruction, parts

    stages = [("sgd", torch.optim.SGD(model.parameters(), lr=0.15), small_loss, data[:SGD_STEPS], None),
              ("adam", torch.optim.AdamW(model.parameters(), lr=1e-3), loss_fn, data[SGD_STEPS:], None),
              ("adversarial", torch.optim.AdamW(model.parameters(), lr=1e-3), loss_fn, data[:ADVERSARIAL_STEPS],
               torch.optim.AdamW(disc.parameters(), lr=1e-3))]
    for stage, optimizer, stage_loss, stage_batches, disc_optimizer in stages:
        for batch in stage_batches:
            train_step(model, optimizer, stage_loss, batch[rank * share:(rank + 1) * share], no_autocast,
                       *((disc, disc_optimizer) if disc_optimizer else ()))
        modules = {"model": model, "disc": disc} if disc_optimizer else {"model": model}
        state = {f"{name}.{k}": v.detach().clone().contiguous()
                 for name, module in modules.items() for k, v in module.state_dict().items()}
        save_file(state, str(out / f"rank{rank}_{stage}.safetensors"))
    dynamo_by_the_optimisers = "torch._dynamo" in sys.modules
    parallel.stop()
    if group is not None:
        (out / f"rank{rank}_group.json").write_text(json.dumps({
            "dynamo_imported_after_the_group": not dynamo_before_start and dynamo_by_the_optimisers,
            "group_outlived_stop": group() is not None}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
