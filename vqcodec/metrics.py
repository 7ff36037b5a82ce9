"""Quality metrics for decoded media against the original: log-mel distance and SI-SDR for audio
(PESQ and STOI too, where the `bench` extra's pesq and pystoi are installed), PSNR and MS-SSIM for
images. `vqcodec eval` and the benchmarks under bench/ measure with these."""
from __future__ import annotations

import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad a 1-D signal to exactly `length` samples."""
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    if signal.size >= length:
        return signal[:length]
    return np.concatenate([signal, np.zeros(length - signal.size, dtype=np.float32)])


_MEL_CACHE: dict = {}


def _mel_setup(n_fft: int, n_mels: int, sample_rate: int):
    key = (n_fft, n_mels, sample_rate)
    if key not in _MEL_CACHE:
        import torch
        from .losses import mel_filterbank
        _MEL_CACHE[key] = (mel_filterbank(n_fft, n_mels, sample_rate).float(),
                           torch.hann_window(n_fft))
    return _MEL_CACHE[key]


def log_mel(signal: np.ndarray, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 256,
            n_mels: int = 80, floor: float = 1e-5):
    """log10 of the magnitude mel spectrogram (n_mels, frames): torch.stft with a Hann window,
    centred frames (reflect-padded; zero-padded for a signal of n_fft / 2 samples or fewer, which
    reflection cannot pad), |STFT| projected on `vqcodec.losses.mel_filterbank`, clamped at `floor`."""
    import torch
    filters, window = _mel_setup(n_fft, n_mels, sample_rate)
    x = torch.as_tensor(np.asarray(signal, dtype=np.float32).reshape(-1))
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=True, pad_mode="reflect" if x.numel() > n_fft // 2 else "constant",
                      return_complex=True).abs()
    return torch.log10(torch.clamp(filters @ spec, min=floor))


def log_mel_l1(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean absolute difference of the log10 mel spectrograms (80 mels, n_fft 1024, hop 256,
    clamp 1e-5) of two signals of equal length. Lower is better; 0 for identical signals."""
    ref, deg = paired(reference, degraded)
    return float((log_mel(ref, sample_rate) - log_mel(deg, sample_rate)).abs().mean())


def pause_level_db(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000,
                   quiet_share: float = 0.25) -> float:
    """How much louder (positive) or quieter (negative) `degraded` is than `reference` over the
    reference's quietest `quiet_share` of frames (by mean log-mel level): the mean over those frames
    and the 80 mel bands of 20 * (log10 mel_out - log10 mel_in), in dB. A codec that gates
    background noise scores well below 0 dB; one that adds hiss, above."""
    ref, deg = paired(reference, degraded)
    mel_in, mel_out = log_mel(ref, sample_rate), log_mel(deg, sample_rate)
    frame_level = mel_in.mean(dim=0)
    quiet = frame_level <= frame_level.quantile(quiet_share)
    return float(20 * (mel_out[:, quiet] - mel_in[:, quiet]).mean())


def si_sdr(reference: np.ndarray, degraded: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (means removed); nan for a silent (or
    constant) reference, which has no signal to measure against (`vqcodec eval` leaves it out)."""
    ref, deg = paired(reference, degraded)
    ref = ref.astype(np.float64) - ref.mean()
    deg = deg.astype(np.float64) - deg.mean()
    if not np.any(ref):
        return float("nan")
    scale = np.dot(deg, ref) / (np.dot(ref, ref) + eps)
    target = scale * ref
    noise = deg - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


# The pesq library (the ITU-T P.862 reference code) keeps at most 50 utterances in fixed tables that
# it fills without a bound check. An utterance is at least 0.2 s of speech, and utterances under
# 0.2 s apart are joined, so 20 s holds at most 50; a longer signal can write past the tables and
# crash the process (segmentation fault): 30 s of 0.25 s bursts 0.25 s apart did, as did the first
# 130 s of a song (data/music/librosa__Karissa_Hobbs_-_Lets_Go_Fishin.flac). Longer signals are
# scored in pieces of at most this many seconds.
PESQ_PIECE_SECONDS = 20


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float | None:
    """PESQ wide-band (ITU-T P.862.2) MOS-LQO, or None when PESQ refuses the file
    (e.g. no utterance detected). P.862.2 is defined at 16 kHz: signals at another rate are
    resampled to it (soxr) first. A signal of over `PESQ_PIECE_SECONDS` (20 s) is cut into the
    fewest equal pieces of at most that length, at fixed boundaries (not where the speech pauses),
    each scored on its own; the score is their mean weighted by length, over the pieces PESQ scores
    (None when it scores none). Up to 20 s the whole signal is scored at once."""
    from pesq import pesq
    ref, deg = paired(reference, degraded)
    if sample_rate != 16000:  # pesq refuses any other rate for wide band, which read as "no utterance"
        import soxr
        ref, deg = (soxr.resample(s, sample_rate, 16000) for s in (ref, deg))
        sample_rate = 16000
    ref, deg = ref.astype(np.float64), deg.astype(np.float64)
    pieces = -(-ref.size // (PESQ_PIECE_SECONDS * sample_rate)) or 1
    bounds = [ref.size * k // pieces for k in range(pieces + 1)]
    scores, lengths = [], []
    for start, end in zip(bounds, bounds[1:]):
        try:
            scores.append(float(pesq(sample_rate, ref[start:end], deg[start:end], "wb")))
        except Exception:  # pesq.NoUtterancesError, BufferTooShortError, ...
            continue
        lengths.append(end - start)
    if not scores:
        return None
    return scores[0] if pieces == 1 else float(np.average(scores, weights=lengths))


def stoi_score(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float | None:
    """Short-time objective intelligibility (classic, not extended), or None where the reference has
    too little speech for it (under 30 frames of 25.6 ms once silence is removed: pystoi then warns
    and returns 1e-5, which would pull a mean down), or none at all (a silent reference, which pystoi
    scores 0 without a warning)."""
    import warnings

    from pystoi import stoi
    ref, deg = paired(reference, degraded)
    if not np.any(ref):  # digital silence: no speech at all
        return None
    if ref.size * 10000 < (256 + 29 * 128) * sample_rate:  # under 30 frames (at 10 kHz) before silence is
        return None                                        # removed; under one, pystoi fails outright
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi(ref.astype(np.float64), deg.astype(np.float64), sample_rate, extended=False))
    return None if any("Not enough STFT frames" in str(w.message) for w in caught) else score


def paired(reference, degraded):
    """The reference as float32 samples and the degraded signal cut or padded to its length."""
    ref = np.asarray(reference, dtype=np.float32).reshape(-1)
    deg = fit_length(degraded, ref.size)
    return ref, deg


# ---------------------------------------------------------------- images

def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all RGB values of two uint8 (h, w, 3) arrays (inf when identical)."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


_WINDOW = {}


def _gaussian(size: int = 11, sigma: float = 1.5):
    import torch

    if (size, sigma) not in _WINDOW:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-x ** 2 / (2 * sigma ** 2))
        _WINDOW[(size, sigma)] = g / g.sum()
    return _WINDOW[(size, sigma)]


def _valid_filter(x, taps: list[float], dim: int):
    """'valid' 1-D filtering of x along `dim` by shifted in-place sums."""
    length = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, length) * taps[0]
    for k, tap in enumerate(taps[1:], 1):
        out.add_(x.narrow(dim, k, length), alpha=tap)
    return out


def _blur(x, g):
    """Separable 'valid' Gaussian filtering of (n, c, h, w): shifted in-place sums, about 4x faster
    than a grouped float64 conv2d on CPU, with the same result."""
    taps = g.tolist()
    return _valid_filter(_valid_filter(x, taps, -1), taps, -2)


def _ssim_and_cs(x, y, g, data_range: float = 255.0):
    """Mean SSIM and mean contrast-structure term per channel: two (n, c) tensors."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sigma_xx = _blur(x * x, g) - mu_x ** 2
    sigma_yy = _blur(y * y, g) - mu_y ** 2
    sigma_xy = _blur(x * y, g) - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (luminance * cs).mean((2, 3)), cs.mean((2, 3))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Five-scale MS-SSIM of two uint8 (h, w, 3) RGB arrays, averaged over the channels."""
    import torch
    import torch.nn.functional as F

    scales = len(MS_SSIM_WEIGHTS)
    g = _gaussian()
    if min(reference.shape[:2]) <= (g.numel() - 1) * 2 ** (scales - 1):
        raise ValueError(f"MS-SSIM needs a shortest side above {(g.numel() - 1) * 2 ** (scales - 1)} pixels")
    x = torch.from_numpy(np.array(reference, dtype=np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(decoded, dtype=np.float64)).permute(2, 0, 1)[None]
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_and_cs(x, y, g)
        if scale < scales - 1:
            terms.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
    terms.append(torch.relu(ssim))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64).view(-1, 1, 1)
    return float(torch.prod(torch.stack(terms) ** weights, dim=0).mean())
