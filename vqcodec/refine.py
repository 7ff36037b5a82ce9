"""Latent refinement: choose codes by what the decoder makes of them, not by latent distance.

The encoder's latents are only a guess: the codes nearest to them are not the codes whose
decoded output is nearest to the input. Refinement runs a few steps of gradient descent on the
latents of one block (audio) or tile (image), each step quantising them (straight-through
gradient) and decoding, against the training loss (Yang et al., "Improving Inference for Neural
Image Compression", NeurIPS 2020). The codes with the smallest loss over all steps win. Only the
encoder gets slower; the decoder and the file format are unchanged.
"""
from __future__ import annotations

import torch

# Adam step sizes, chosen on crops of the training sets at 5 steps: images 0.005 and 0.01 tie,
# 0.02 is 1 dB worse; speech (log-mel) 0.02 and 0.05 tie, 0.01 and 0.1 are worse.
LEARNING_RATE = {"image": 0.01, "audio": 0.03}
BETAS = (0.9, 0.999)
EPSILON = 1e-8


def refine_codes(quantizer, decoder, loss, window: torch.Tensor, fixed: torch.Tensor, inner: tuple[slice, ...],
                 target: torch.Tensor, output: tuple[slice, ...], quality: int, beam: int, steps: int,
                 learning_rate: float, bit_costs=None, finish=None) -> torch.Tensor:
    """Codes (quality, batch, *inner sizes) for the inner cells of a window of latents.

    window: (batch, D, *cells) encoder latents; fixed: the same shape, quantised latents the
    context cells keep; inner: slices of the cells to code; target: the input the decoder's
    output[output] must match under `loss(estimate, target)`; bit_costs: the rate term of the
    search (quantize.ResidualVQ.encode); finish: optional (latents, codes) -> codes applied to
    each step's codes before they are judged (the per-cell depth choice).
    """
    index = (slice(None), slice(None)) + tuple(inner)
    best_loss, best_codes = None, None
    # works under torch.inference_mode too: clones made outside it are ordinary tensors
    with torch.inference_mode(False), torch.enable_grad():
        latents, fixed, target = window[index].clone(), fixed.clone(), target.clone()
        moments = (torch.zeros_like(latents), torch.zeros_like(latents))
        for step in range(steps + 1):
            codes = quantizer.encode_cells(latents, quality, beam, bit_costs)
            if finish is not None:
                codes = finish(latents, codes)
            quantized = quantizer.decode_cells(codes)
            variable = latents.detach().requires_grad_(step < steps)
            full = fixed.clone()
            full[index] = variable + (quantized - variable).detach()
            value = loss(decoder(full)[output], target)
            if best_loss is None or value.item() < best_loss:
                best_loss, best_codes = value.item(), codes
            if step == steps:
                break
            (gradient,) = torch.autograd.grad(value, variable)
            latents = _adam_step(latents, gradient, moments, step + 1, learning_rate)
    return best_codes


def _adam_step(value: torch.Tensor, gradient: torch.Tensor, moments, step: int, learning_rate: float) -> torch.Tensor:
    """One Adam update of a plain tensor (not an nn.Parameter, so no torch.optim)."""
    moments[0].mul_(BETAS[0]).add_(gradient, alpha=1 - BETAS[0])
    moments[1].mul_(BETAS[1]).addcmul_(gradient, gradient, value=1 - BETAS[1])
    corrected = moments[0] / (1 - BETAS[0] ** step)
    scale = (moments[1] / (1 - BETAS[1] ** step)).sqrt_().add_(EPSILON)
    return value - learning_rate * corrected / scale
