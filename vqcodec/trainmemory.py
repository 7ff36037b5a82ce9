"""What a training run's process holds in memory besides its files: the bytes a step takes per byte of its crops,
and the model's training state (weights, gradients, optimiser moments, checkpoint), which train checks against
the bounds of vqcodec.memory before it builds the model."""
from __future__ import annotations

from .config import ModelConfig, network_parameter_counts


# Bytes a CPU training step holds per byte of its float32 crops: the network's and the losses' activations and
# gradients. Measured as the growth of peak resident memory (ru_maxrss) from a batch of 2 crops to one of 8 to 16,
# over the growth of the crops' bytes, two train_step calls each, one thread, fp32 (bf16 in brackets): audio 136 (120)
# with base_channels 2 and strides (2,), 226 (162) with the tests' tiny config, 735 with the default speech config
# (crops of 8000); images 11 (12) with channels (2,), 14 with the tiny one, 67 with the default image config (crops
# of 128). The least of each kind, rounded down: a floor, so that a batch the smallest model could train is never
# refused.
STEP_BYTES_PER_CROP_BYTE = {"audio": 120, "image": 10}
# What --adversarial's discriminator (audio) adds to that: its STFTs' activations and gradients, in fp32 whatever the
# precision. Measured as above, with it: 1094 with base_channels 2 and strides (2,) and crops of 4000, 1155 with
# crops of 16000, 1238 with the tests' tiny config (crops of 8000); the least, less the step's 120, rounded down.
DISCRIMINATOR_BYTES_PER_CROP_BYTE = 950
# The VQVAE modules --decoder-only freezes (freeze_for_decoder_only): the optimiser gets the other modules' weights,
# and training_state_bytes counts their gradients and moments alone.
DECODER_ONLY_FROZEN = ("encoder", "quantizer")


def training_state_bytes(cfg: ModelConfig, decoder_only: bool = False, weight_average: float = 0.0,
                         checkpoint_bytes: int | None = None, checkpoint_averaged: bool = False) -> int:
    """What a run's process on the CPU holds besides its batch and files (README, Limits): the model's float32
    weights and codebooks (with their running sums and counts), a weight average's copy of them, AdamW's two
    moments of each trained weight and its gradient. A resumed run holds as much as the tensors it keeps of its
    checkpoint (`checkpoint_bytes`; not a discriminator or weight average it drops, let_go_of_dropped_state): it
    keeps their moments, and lets their weights go once copied into its networks; with `weight_average`, where
    they hold no average (`checkpoint_averaged`), the average's new copy too. Saving a checkpoint holds nothing
    more: it is written tensor by tensor (modelfile._tensors_writer). --decoder-only trains
    the decoder alone: the encoder's weights, frozen (DECODER_ONLY_FROZEN), have no gradients or moments. The
    discriminator of --adversarial (72 387 weights, 1.2 MB with its gradients and moments) is left out."""
    networks = network_parameter_counts(cfg)
    weights = sum(networks.values())
    trained = sum(count for module, count in networks.items() if not (decoder_only and module in DECODER_ONLY_FROZEN))
    codebooks = cfg.num_codebooks * cfg.codebook_size * (2 * cfg.latent_dim + 2)  # with their EMA sums and code counts
    model = 4 * (weights + codebooks)
    average = model if weight_average else 0
    if checkpoint_bytes is None:  # a new run's networks and moments, as it will save them
        checkpoint_bytes, checkpoint_averaged = model + average + 8 * trained, True
    return checkpoint_bytes + (0 if checkpoint_averaged else average) + 4 * trained
