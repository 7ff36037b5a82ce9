"""Training data: crops read from disk match crops of the media held in memory, batches made ahead in
threads are the batches made in order, and a folder too large for memory trains from disk."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from test_train import CFG, CROP, options, write_damaged_mp3
from vqcodec import data
from vqcodec.data import AudioCrops, Batches, CropPlan, ImageCrops
from vqcodec.errors import VQCodecError
from vqcodec.imageio import MAX_PIXELS
from vqcodec.train import train


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> list:
    """Tones plus noise at several rates and channel counts, one shorter than a crop, one FLAC."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for name, rate, channels, frames in [("a.wav", 22050, 2, 30000), ("b.flac", 16000, 1, 20000),
                                         ("c.wav", 8000, 1, 9000), ("d.wav", 44100, 1, 1000)]:
        t = np.arange(frames) / rate
        tones = [0.3 * np.sin(2 * np.pi * (300 + 100 * c) * t) + 0.05 * rng.standard_normal(frames) for c in range(channels)]
        soundfile.write(folder / name, np.stack(tones, 1), rate)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list:
    """Noise photos, one smaller than a crop and one stored on its side (EXIF orientation 6)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for name, (h, w) in [("a.png", (70, 90)), ("b.jpg", (40, 100)), ("c.png", (20, 30))]:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)).save(folder / "d.jpg", exif=exif)
    return sorted(folder.iterdir())


@pytest.mark.parametrize("crop", [64, 2000])
def test_held_bytes_are_what_the_crops_hold_in_memory(audio_files, image_files, crop):
    """train checks a batch against memory with the files' held bytes, before the crops are made."""
    audio = AudioCrops(audio_files, 16000, crop * 4)
    assert data.held_bytes("audio", audio_files, crop * 4, 16000) == sum(clip.nbytes for clip in audio.clips) > 0
    images = ImageCrops(image_files, crop)
    assert data.held_bytes("image", image_files, crop) == sum(image.nbytes for image in images.images) > 0
    held = data.held_bytes("image", image_files, crop)
    assert data.held_bytes("image", image_files, crop, in_memory_bytes=held) == held
    assert data.held_bytes("image", image_files, crop, in_memory_bytes=held - 1) == 0  # read from disk
    assert not ImageCrops(image_files, crop, in_memory_bytes=held - 1).in_memory
    assert data.held_bytes("audio", audio_files, crop * 4, 16000, in_memory_bytes=0) == 0


def test_held_bytes_reads_no_header_past_the_limit(audio_files, monkeypatch):
    """A folder to be read from disk had every header read once more only to find that it holds nothing."""
    read = []
    header = data._audio_header
    monkeypatch.setattr(data, "_audio_header", lambda path: read.append(path) or header(path))
    assert data.held_bytes("audio", audio_files, 2000, 16000, in_memory_bytes=1) == 0
    assert read == audio_files[:1]


@pytest.mark.parametrize("model_rate", [8000, 16000])
def test_audio_crops_read_from_disk_match_the_crops_of_the_whole_files(audio_files, model_rate):
    memory, disk = AudioCrops(audio_files, model_rate, CROP), AudioCrops(audio_files, model_rate, CROP, in_memory_bytes=0)
    assert memory.in_memory and memory.clips is not None
    assert not disk.in_memory and disk.clips is None
    assert memory.sources == disk.sources and len(disk.sources) == 5  # a.wav has two channels
    assert np.allclose(memory.weights, disk.weights, atol=2e-3)
    ends = [CropPlan(source, (where,)) for source in range(5) for where in (0.0, 0.999999)]
    for plan in memory.plan(40, np.random.default_rng(2), augment=False) + ends:
        crop = disk.make(plan)
        assert crop.shape == (1, CROP) and crop.dtype == np.float32
        # resampled crops differ from slices of the whole file's resampling by rounding only
        assert np.abs(crop - memory.make(plan)).max() < 1e-5, memory.sources[plan.source]


def test_image_crops_read_from_disk_match_the_crops_of_the_whole_images(image_files):
    memory, disk = ImageCrops(image_files, 32), ImageCrops(image_files, 32, in_memory_bytes=0)
    assert memory.in_memory and not disk.in_memory and disk.images is None
    assert memory.images[3].shape == (80, 50, 3)  # EXIF orientation applied
    plans = memory.plan(40, np.random.default_rng(3))
    assert {plan.source for plan in plans} == set(range(4)) and any(plan.flips[0] for plan in plans)
    assert any(plan.flips[1] for plan in plans)
    for plan in plans:
        crop = disk.make(plan)
        assert crop.shape == (3, 32, 32) and 0.0 <= crop.min() and crop.max() <= 1.0
        assert np.array_equal(crop, memory.make(plan))
        expected = memory.make(CropPlan(plan.source, plan.where))  # the flips mirror the crop, left-right, top-bottom
        expected = expected[:, :, ::-1] if plan.flips[0] else expected
        assert np.array_equal(crop, expected[:, ::-1] if plan.flips[1] else expected)


def test_image_crops_are_what_encoding_codes_in_every_colour_mode(tmp_path):
    """16-bit and float grey are scaled to 8 bits as the encoder scales them (Pillow's convert clips them: white)."""
    from vqcodec.imageio import image_to_planes, open_image

    ramp = np.arange(32 * 32, dtype=np.float64).reshape(32, 32) / (32 * 32 - 1)
    Image.frombytes("I;16", (32, 32), np.round(ramp * 65535).astype("<u2").tobytes()).save(tmp_path / "a16.png")
    Image.fromarray(ramp.astype(np.float32), "F").save(tmp_path / "b.tiff")
    Image.fromarray((ramp * 255).astype(np.uint8), "L").convert("P").save(tmp_path / "c.png", transparency=0)
    Image.fromarray(np.zeros((32, 32, 4), np.uint8) + 200, "RGBA").convert("CMYK").save(tmp_path / "d.tiff")
    files = sorted(tmp_path.iterdir())
    crops = ImageCrops(files, 32)
    for index, path in enumerate(files):
        crop = crops.make(CropPlan(index, (0.0, 0.0)))
        expected = image_to_planes(open_image(path))[0].transpose(2, 0, 1) / np.float32(255)
        assert np.array_equal(crop, expected), path
    assert 0.45 < crops.make(CropPlan(0, (0.0, 0.0))).mean() < 0.55  # the ramp, not clipped to white


def test_a_damaged_file_due_to_be_held_out_gives_its_place_to_the_next(tmp_path, capsys):
    """Headers that read but data that do not decode: such a file first in the folder was the whole
    validation set, and training stopped with 'no readable images in the training folder'."""
    rng = np.random.default_rng(4)
    for name in "bcd":
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "a.png").write_bytes((tmp_path / "b.png").read_bytes()[:3000])  # cut short
    soundfile.write(tmp_path / "whole.flac", rng.standard_normal(40000) * 0.1, 8000)
    (tmp_path / "cut.flac").write_bytes((tmp_path / "whole.flac").read_bytes()[:3000])
    photos = data.readable_files("image", sorted(tmp_path.glob("*.png")))
    assert len(photos) == 4
    train, held = data.split_files(photos, lambda path: data.decodes("image", path))
    assert [p.name for p in held] == ["b.png"] and [p.name for p in train] == ["c.png", "d.png"]
    assert ImageCrops(held, 32).sources[0].path == tmp_path / "b.png"
    assert capsys.readouterr().err == \
        f"skipping {tmp_path / 'a.png'}: cannot read image: its data ends early (cut short)\n"
    recordings = data.readable_files("audio", [tmp_path / "cut.flac", tmp_path / "whole.flac"])
    assert data.split_files(recordings, lambda path: data.decodes("audio", path)) == ([tmp_path / "whole.flac"],) * 2
    assert capsys.readouterr().err.startswith(f"skipping {tmp_path / 'cut.flac'}: cannot read audio")
    assert data.split_files(recordings[:1], lambda path: False) == (recordings[:1],) * 2  # one file: not checked


def test_a_recording_of_nan_alone_due_to_be_held_out_gives_its_place_to_the_next(tmp_path, capsys):
    """It decoded, so it was held out, and its crops kept none of its channels: training stopped with 'no
    readable audio in the held-out file', of a folder of readable recordings. A stereo file with one finite
    channel still validates on it."""
    tone = 0.3 * np.sin(np.arange(4000) / 5)
    soundfile.write(tmp_path / "a.wav", np.full((4000, 2), np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    soundfile.write(tmp_path / "b.wav", np.stack([tone, np.full(4000, np.inf)], 1), 8000, subtype="FLOAT")
    soundfile.write(tmp_path / "c.wav", tone, 8000)
    recordings = data.readable_files("audio", sorted(tmp_path.glob("*.wav")))
    train, held = data.split_files(recordings, lambda path: data.decodes("audio", path))
    assert held == [tmp_path / "b.wav"] and train == [tmp_path / "c.wav"]
    assert capsys.readouterr().err == f"skipping {tmp_path / 'a.wav'}: samples that are not finite\n"
    assert [source.channel for source in AudioCrops(held, 8000, 3000, role="held-out").sources] == [0]


def test_a_silent_recording_or_a_photo_of_one_colour_due_to_be_held_out_trains_and_gives_its_place(tmp_path, capsys):
    """Held out, such a file was the whole validation set of a small folder, and its loss (near 0 for any model)
    measured nothing. Where no file holds more, the first is held out all the same."""
    tone = 0.3 * np.sin(np.arange(4000) / 5)
    soundfile.write(tmp_path / "a.wav", np.zeros((4000, 2)), 8000)
    soundfile.write(tmp_path / "b.wav", np.full(4000, 0.25), 8000)
    soundfile.write(tmp_path / "c.wav", tone, 8000)
    soundfile.write(tmp_path / "d.wav", np.stack([np.zeros(4000), tone], 1), 8000)  # one silent channel: held out
    recordings = data.readable_files("audio", sorted(tmp_path.glob("*.wav")))
    usable, validates = (lambda path: data.decodes("audio", path)), (lambda path: data.holds_content("audio", path))
    assert data.split_files(recordings, usable, validates) == ([tmp_path / n for n in ("a.wav", "b.wav", "d.wav")],
                                                              [tmp_path / "c.wav"])
    said = "which any model reconstructs; it trains, and the next file is held out instead\n"
    assert capsys.readouterr().err == (f"not holding {tmp_path / 'a.wav'} out for validation: it is silent, {said}"
                                       f"not holding {tmp_path / 'b.wav'} out for validation: every sample is the same, "
                                       f"{said}")
    assert data.split_files(recordings[:2], usable, validates) == ([tmp_path / "b.wav"], [tmp_path / "a.wav"])
    assert capsys.readouterr().err.endswith(f"holding {tmp_path / 'a.wav'} out for validation all the same: no file "
                                            "holds more to validate on\n")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "b.png")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (2, 2, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    photos = sorted(tmp_path.glob("*.png"))
    assert data.split_files(photos, lambda path: True, lambda path: data.holds_content("image", path)) == \
        (photos[:2], photos[2:])
    assert capsys.readouterr().err.count("out for validation: it is of one colour, which any model") == 2


def test_a_second_name_of_a_file_is_not_trained_on_twice(tmp_path, capsys):
    Image.new("L", (40, 40)).save(tmp_path / "a.png")
    Image.new("L", (40, 40)).save(tmp_path / "b.png")  # the same pixels, another file: kept
    (tmp_path / "c.png").symlink_to(tmp_path / "a.png")
    os.link(tmp_path / "b.png", tmp_path / "d.png")
    assert data.readable_files("image", sorted(tmp_path.iterdir())) == [tmp_path / "a.png", tmp_path / "b.png"]
    assert capsys.readouterr().err == (f"skipping {tmp_path / 'c.png'}: the same file as {tmp_path / 'a.png'}\n"
                                       f"skipping {tmp_path / 'd.png'}: the same file as {tmp_path / 'b.png'}\n")


def test_an_empty_file_is_skipped_as_encoding_says_it(tmp_path, capsys):
    """Training skipped an empty file with soundfile's words, 'cannot read audio X: Format not recognised.',
    where encoding it says 'X: file is empty'."""
    Image.new("L", (40, 40)).save(tmp_path / "a.png")
    soundfile.write(tmp_path / "a.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    for kind, empty, kept in (("image", "empty.png", "a.png"), ("audio", "empty.wav", "a.wav")):
        (tmp_path / empty).touch()
        assert data.readable_files(kind, [tmp_path / empty, tmp_path / kept]) == [tmp_path / kept]
        assert capsys.readouterr().err == f"skipping {tmp_path / empty}: file is empty\n"


def test_a_photo_over_the_pixel_limit_is_skipped_in_one_line(tmp_path, capsys):
    Image.new("L", (10000, 9000)).save(tmp_path / "big.png")
    Image.new("L", (40, 40)).save(tmp_path / "small.png")
    assert data.readable_files("image", sorted(tmp_path.iterdir())) == [tmp_path / "small.png"]
    assert capsys.readouterr().err == \
        f"skipping {tmp_path / 'big.png'}: cannot read image: image of 10000x9000 pixels exceeds the limit of 89478485 pixels\n"


def test_a_photo_pillow_logs_an_error_for_is_skipped_in_one_line(tmp_path, capsys):
    """Pillow logs "More samples per pixel than can be decoded: 99" at ERROR level before it refuses such a
    TIFF: reading its size for training, Python's last-resort handler printed that line above the skipping
    line, which gave Pillow's "Invalid value for samples per pixel" as the reason."""
    from test_image import tiff_of_99_samples_a_pixel

    tiff_of_99_samples_a_pixel(tmp_path / "many.tif")
    Image.new("L", (40, 40)).save(tmp_path / "small.png")
    assert data.readable_files("image", sorted(tmp_path.iterdir())) == [tmp_path / "small.png"]
    assert capsys.readouterr().err == \
        f"skipping {tmp_path / 'many.tif'}: cannot read image: More samples per pixel than can be decoded: 99\n"
    with pytest.raises(VQCodecError, match=f"^cannot read image {re.escape(str(tmp_path / 'many.tif'))}: More samples "
                                           "per pixel than can be decoded: 99$"):
        data.image_size(tmp_path / "many.tif")


def test_image_size_of_a_file_pillow_refuses_raises_one_clean_error(tmp_path):
    """image_size let Pillow's own errors out (UnidentifiedImageError, 'cannot identify image file ...', and
    DecompressionBombError, '... could be decompression bomb DOS attack.'): a caller that did not word them
    itself gave them as they were, or a traceback."""
    from test_image import png_claiming

    (tmp_path / "text.png").write_bytes(b"no image" * 8)
    (tmp_path / "bomb.png").write_bytes(png_claiming(20_000, 20_000))  # over twice the limit: Pillow's error
    (tmp_path / "big.png").write_bytes(png_claiming(10_000, 9_000))
    for name, reason in (("text.png", "not an image format Pillow reads"),
                         ("bomb.png", f"image exceeds the limit of {MAX_PIXELS} pixels"),
                         ("big.png", f"image of 10000x9000 pixels exceeds the limit of {MAX_PIXELS} pixels")):
        with pytest.raises(VQCodecError, match=f"^cannot read image {re.escape(str(tmp_path / name))}: {reason}$"):
            data.image_size(tmp_path / name)


def test_an_animated_webp_cut_short_after_its_first_frame_is_trained_on(tmp_path, capsys):
    """Encoding it gives its first frame (imageio.image_opened), but reading its size for training refused it as Pillow
    does, 'skipping cannot read image cut.webp: its data cannot be decoded (damaged or cut short)'."""
    from test_image import animated_webp

    whole = animated_webp()
    (tmp_path / "cut.webp").write_bytes(whole[:-2])
    assert data.image_size(tmp_path / "cut.webp") == (24, 16)
    assert data.readable_files("image", [tmp_path / "cut.webp"]) == [tmp_path / "cut.webp"]
    assert capsys.readouterr().err == ""


def in_order_and_in_threads(crops, size: int, seed: int, workers: int) -> tuple[list, list]:
    """Three batches of `crops` made in order, and the three Batches makes in `workers` threads from the same seed."""
    in_order = np.random.default_rng(seed)
    expected = [crops.batch(size, in_order) for _ in range(3)]
    batches = Batches(crops, size, np.random.default_rng(seed), workers=workers)
    try:
        made = [batches.next() for _ in range(3)]
    finally:
        batches.close()
    return expected, made


def test_batches_made_in_threads_are_the_batches_made_in_order(audio_files, image_files):
    for crops in (AudioCrops(audio_files, 8000, CROP, noise=0.5, in_memory_bytes=0), ImageCrops(image_files, 32)):
        expected, made = in_order_and_in_threads(crops, 6, 4, workers=3)
        for want, got in zip(expected, made):
            assert torch.equal(want, got)
        assert not torch.equal(made[0], made[1])


def test_a_folder_too_large_for_memory_trains_from_disk(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i, rate in enumerate((8000, 11025, 16000)):
        soundfile.write(folder / f"{i}.wav", 0.2 * rng.standard_normal(rate), rate)
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    out = tmp_path / "run"
    train(folder, CFG, options(out, max_steps=3, eval_every=3, fit_prior=False, quiet=False))
    assert "read from disk" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 3
    assert all(np.isfinite(record["loss"]) for record in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()))


def test_a_folder_is_loaded_only_when_reading_its_largest_file_fits_too(tmp_path):
    """A file is decoded whole at its own rate, every channel, to be loaded: a long 96 kHz stereo recording
    needs twelve times its size at 8 kHz mono, which the memory budget left out."""
    soundfile.write(tmp_path / "wide.wav", np.zeros((96000, 2), np.float32), 96000)  # 64 kB at 8 kHz, 768 kB read
    assert not AudioCrops([tmp_path / "wide.wav"], 8000, CROP, in_memory_bytes=100_000).in_memory
    assert AudioCrops([tmp_path / "wide.wav"], 8000, CROP, in_memory_bytes=64_000 + 768_000).in_memory


def test_files_shorter_than_a_crop_count_padded_in_the_memory_budget_and_are_named(tmp_path):
    """Clips and photos shorter than a crop are held padded to it: ten 0.1 s clips under a 1 s crop
    hold 320 kB, not the 32 kB the budget counted, and nothing said the crops were mostly silence."""
    for number in range(10):
        soundfile.write(tmp_path / f"{number}.wav", np.full(800, 0.1, np.float32), 8000)
    clips = sorted(tmp_path.glob("*.wav"))
    assert not AudioCrops(clips, 8000, 8000, in_memory_bytes=100_000).in_memory
    assert AudioCrops(clips, 8000, 8000, in_memory_bytes=330_000).in_memory
    assert AudioCrops(clips, 8000, 8000).describe() == "10 clips, 0.0 min, 10 shorter than a crop (padded with silence)"
    assert AudioCrops(clips, 8000, 800).describe() == "10 clips, 0.0 min"
    Image.new("RGB", (20, 40)).save(tmp_path / "small.png")
    assert not ImageCrops([tmp_path / "small.png"], 64, in_memory_bytes=10_000).in_memory  # 64 x 64 x 3 held
    assert ImageCrops([tmp_path / "small.png"], 32).describe() == \
        "1 image, 0.0 Mpixel, 1 smaller than a crop (padded by reflection)"
    assert ImageCrops([tmp_path / "small.png"], 20).describe() == "1 image, 0.0 Mpixel"


def test_photos_with_a_side_of_one_pixel_are_said_to_be_padded_by_repeating_the_edge(tmp_path):
    """Reflection has nothing to reflect in one pixel: such photos are padded by repeating it, which the
    run's first line said was reflection."""
    Image.new("RGB", (20, 40)).save(tmp_path / "small.png")
    Image.new("RGB", (1, 40)).save(tmp_path / "thin.png")
    assert ImageCrops([tmp_path / "thin.png"], 32).describe() == \
        "1 image, 0.0 Mpixel, 1 smaller than a crop (padded by repeating the edge)"
    assert ImageCrops([tmp_path / "small.png", tmp_path / "thin.png"], 32).describe() == ("2 images, 0.0 Mpixel, "
        "2 smaller than a crop (padded by reflection, 1 with a side of one pixel by repeating the edge)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("in_memory_bytes", [None, 0])
def test_channels_of_non_finite_samples_are_left_out_in_memory_and_from_disk(tmp_path, capsys, bad, in_memory_bytes):
    """Read from disk, NaN samples became silence in the crops, where loading left their channel out."""
    clip = np.full(70000, 0.25, dtype=np.float32)  # past the first block that reading from disk checks
    clip[69000:69100] = bad
    soundfile.write(tmp_path / "nan.wav", clip, 8000, subtype="FLOAT")
    with pytest.raises(VQCodecError, match="no readable audio"):
        AudioCrops([tmp_path / "nan.wav"], 8000, 3000, in_memory_bytes=in_memory_bytes)
    assert f"skipping {tmp_path / 'nan.wav'}: samples that are not finite\n" in capsys.readouterr().err
    stereo = np.stack([clip, np.full(70000, 0.5, dtype=np.float32)], 1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 8000, subtype="FLOAT")
    crops = AudioCrops([tmp_path / "stereo.wav"], 8000, 3000, in_memory_bytes=in_memory_bytes)
    assert [source.channel for source in crops.sources] == [1] and crops.in_memory == (in_memory_bytes is None)
    assert all((crops.make(plan) == 0.5).all() for plan in crops.plan(8, np.random.default_rng(0), augment=False))
    assert f"skipping {tmp_path / 'stereo.wav'} channel 1: samples that are not finite" in capsys.readouterr().err


def test_a_crop_from_disk_of_samples_made_non_finite_since_the_scan_comes_from_the_next_file(tmp_path, capsys):
    for name in ("a.wav", "b.wav"):
        soundfile.write(tmp_path / name, np.full(3000, 0.25, dtype=np.float32), 8000, subtype="FLOAT")
    disk = AudioCrops([tmp_path / "a.wav", tmp_path / "b.wav"], 8000, 3000, in_memory_bytes=0)
    soundfile.write(tmp_path / "a.wav", np.full(3000, np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    assert (disk.make(CropPlan(0, (0.0,)))[0] == 0.25).all()
    assert f"skipping {tmp_path / 'a.wav'}: samples that are not finite (its crops come from the next file)" \
        in capsys.readouterr().err


def test_train_command_streams_data_when_asked(tmp_path, cli, image_files):
    (tmp_path / "tiny.json").write_text(json.dumps({"kind": "image", "channels": [8, 8, 8], "latent_dim": 4,
                                                    "num_codebooks": 2, "codebook_size": 8}))
    out = tmp_path / "run"
    result = cli("train", image_files[0].parent, "--out", out, "--max-steps", "2", "--crop", "32", "--batch-size", "2",
                 "--stream-data", "--data-workers", "3", "--threads", "1", "--device", "cpu", "--no-prior",
                 "--config", tmp_path / "tiny.json")
    assert result.returncode == 0, result.stderr.decode()
    # training (3 photos) and validation (1) both read from disk
    assert ("3 images, 0.0 Mpixel, 1 smaller than a crop (padded by reflection), read from disk; validation 1 image, "
            "0.0 Mpixel, read from disk") in result.stderr.decode()
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2


def test_batch_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(data.os, "cpu_count", lambda: 16)
    assert [data.default_batch_workers(p) for p in (1, 2, 4, 8, 32)] == [8, 8, 4, 2, 1]
    monkeypatch.setattr(data.os, "cpu_count", lambda: None)
    assert data.default_batch_workers() == 1


def test_a_file_that_becomes_unreadable_gives_its_crop_to_the_next_file(tmp_path, capsys):
    rng = np.random.default_rng(6)
    for name in ("a", "b", "c"):
        soundfile.write(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(4000), 8000)
    disk = AudioCrops(sorted(tmp_path.glob("*.wav")), 8000, CROP, in_memory_bytes=0)
    expected = disk.make(CropPlan(1, (0.5,)))
    (tmp_path / "a.wav").write_bytes(b"damaged")
    assert np.array_equal(disk.make(CropPlan(0, (0.5,))), expected)  # a.wav -> b.wav, same place
    disk.make(CropPlan(0, (0.1,)))
    assert capsys.readouterr().err.count("skipping") == 1  # reported once
    # and left out from then on, as 'skipping' says: it was read again at each of its crops (a damaged TIFF's
    # libtiff line on stderr each time, from a batch worker), and trained on again once readable
    soundfile.write(tmp_path / "a.wav", 0.1 * rng.standard_normal(4000), 8000)
    assert np.array_equal(disk.make(CropPlan(0, (0.5,))), expected)
    for name in ("b", "c"):
        (tmp_path / f"{name}.wav").unlink()
    with pytest.raises(data.VQCodecError, match="3 training files in a row could not be read"):
        disk.make(CropPlan(2, (0.0,)))


def test_the_errors_of_unreadable_files_count_and_name_them_as_they_are(tmp_path):
    """With one training file the error read '1 training files in a row', one stereo file's '2 training files',
    and unreadable held-out files were 'no readable audio in the training folder'."""
    for name, channels in (("a.wav", 1), ("b.wav", 2)):
        soundfile.write(tmp_path / name, np.full((3000, channels), 0.25, dtype=np.float32), 8000, subtype="FLOAT")
        disk = AudioCrops([tmp_path / name], 8000, CROP, in_memory_bytes=0)
        (tmp_path / name).write_bytes(b"damaged")
        with pytest.raises(VQCodecError, match=f"^the training file could not be read \\(.*{name}"):
            disk.make(CropPlan(0, (0.0,)))
    soundfile.write(tmp_path / "nan.wav", np.full(3000, np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(VQCodecError, match=f"^no readable audio in the held-out file {tmp_path / 'nan.wav'}$"):
        AudioCrops([tmp_path / "nan.wav"], 8000, CROP, role="held-out")
    with pytest.raises(VQCodecError, match=f"^no readable audio in the 2 held-out files \\({tmp_path / 'nan.wav'} and"):
        AudioCrops([tmp_path / "nan.wav", tmp_path / "a.wav"], 8000, CROP, role="held-out")
    (tmp_path / "c.png").write_bytes(b"damaged")
    with pytest.raises(VQCodecError, match="^no readable images in the held-out file"):
        ImageCrops([tmp_path / "c.png"], 32, role="held-out")


def test_a_photo_that_becomes_unreadable_gives_its_crop_to_the_next_one(image_files, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    copies = [folder / path.name for path in image_files]
    for path, copy in zip(image_files, copies):
        copy.write_bytes(path.read_bytes())
    disk = ImageCrops(copies, 32, in_memory_bytes=0)
    expected = disk.make(CropPlan(1, (0.2, 0.7)))
    copies[0].unlink()
    assert np.array_equal(disk.make(CropPlan(0, (0.2, 0.7))), expected)


def test_find_media_takes_every_name_of_soundfile_formats(tmp_path):
    # .aif, .aifc and .wave are common names soundfile's format list (AIFF, WAV) does not spell out.
    tone = np.sin(np.arange(1600, dtype=np.float32) / 5)[:, None] * 0.1
    for name, fmt in (("a.aif", "AIFF"), ("b.AIFC", "AIFF"), ("c.wave", "WAV"), ("d.WAV", "WAV"), ("e.flac", "FLAC")):
        soundfile.write(tmp_path / name, tone, 16000, format=fmt)
    (tmp_path / "notes.txt").write_text("not audio")
    kind, files = data.find_media(tmp_path, None)
    assert kind == "audio" and [p.name for p in files] == ["a.aif", "b.AIFC", "c.wave", "d.WAV", "e.flac"]
    assert data.readable_files(kind, files) == files


def test_find_media_leaves_out_hidden_files_and_folders(tmp_path):
    """An AppleDouble ._a.wav (not audio) was a `skipping` line in train, eval and fit-prior, and
    .ipynb_checkpoints/ was trained on."""
    tone = np.sin(np.arange(1600, dtype=np.float32) / 5)[:, None] * 0.1
    soundfile.write(tmp_path / "a.wav", tone, 16000)
    (tmp_path / "._a.wav").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    soundfile.write(tmp_path / ".ipynb_checkpoints" / "b.wav", tone, 16000)
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    assert data.find_media(tmp_path, None) == ("audio", [tmp_path / "a.wav"])
    assert data.find_media(tmp_path / ".ipynb_checkpoints", None) == ("audio", [tmp_path / ".ipynb_checkpoints" / "b.wav"])


def test_an_audio_path_that_cannot_be_opened_is_skipped_saying_why(tmp_path, capsys, monkeypatch):
    """libsndfile said only "System error." of a missing file and "Format not recognised." of a folder or
    of a file it may not read (training's and eval's reads; encoding said why already)."""
    import builtins

    from vqcodec import soundio

    soundfile.write(tmp_path / "good.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "locked.wav").write_bytes((tmp_path / "good.wav").read_bytes())

    def open_but_the_locked_one(path, *args, **kwargs):
        if str(path).endswith("locked.wav"):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)
    monkeypatch.setattr(soundio, "open", open_but_the_locked_one, raising=False)  # root reads any file
    reasons = {"missing.wav": "No such file or directory", "folder.wav": "Is a directory",
               "locked.wav": "Permission denied"}
    for name, reason in reasons.items():
        with pytest.raises(VQCodecError, match=f"^cannot read audio {tmp_path / name}: {reason}$"):
            soundio.read_audio(tmp_path / name)
    said = [f"skipping {tmp_path / name}: cannot read audio: {reason}" for name, reason in reasons.items()]
    files = [tmp_path / name for name in reasons] + [tmp_path / "good.wav"]
    assert data.readable_files("audio", files) == [tmp_path / "good.wav"]
    assert capsys.readouterr().err.splitlines() == said
    for in_memory_bytes in (None, 0):
        assert AudioCrops(files, 8000, CROP, in_memory_bytes=in_memory_bytes).files() == [tmp_path / "good.wav"]
        assert capsys.readouterr().err.splitlines() == said
    assert not data.decodes("audio", tmp_path / "folder.wav")
    assert capsys.readouterr().err.splitlines() == [said[1]]


def test_a_bug_in_reading_a_crop_from_disk_is_not_called_an_unreadable_file(tmp_path, monkeypatch):
    """AudioCrops caught every Exception as it read a crop from disk, so a bug of vqcodec's own (a NameError) read
    'skipping cannot read audio PATH: name ... is not defined', and the run went on without the file."""
    soundfile.write(tmp_path / "good.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    crops = AudioCrops([tmp_path / "good.wav"], 8000, CROP, in_memory_bytes=0)
    assert crops.make(CropPlan(0, (0.5,))).shape == (1, CROP)

    def broken(sound_format):
        raise NameError("name '_decoder_lines' is not defined")

    monkeypatch.setattr(data, "decoder_lines", broken)
    with pytest.raises(NameError, match="_decoder_lines"):
        crops.make(CropPlan(0, (0.5,)))


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_what_the_mp3_decoder_says_of_a_training_or_eval_file_is_one_warning(tmp_path, capfd, codec):
    """libmpg123 wrote its own lines to stderr, opening a cut file ("Warning: Xing stream size off ...") and
    reading a garbled one ("Note: Illegal Audio-MPEG-Header ...", "Note: Trying to resync...", ...), at
    each of training's reads of it and at eval's. Fitting the run's prior (collect_codes) then said it again."""
    import warnings

    from vqcodec.errors import AudioReadWarning
    from vqcodec.soundio import read_audio
    from vqcodec.priorfit import collect_codes

    path = write_damaged_mp3(tmp_path / "damaged.mp3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_audio(path, 8000)
        assert data.readable_files("audio", [path]) == [path] and data.longest_length("audio", [path], 8000)
        assert data.decodes("audio", path)
        for in_memory_bytes in (None, 0):
            AudioCrops([path], 8000, CROP, in_memory_bytes=in_memory_bytes)
        assert len(collect_codes(codec, [path])[0]) == 1
    said = [str(item.message) for item in caught if item.category is AudioReadWarning]
    assert said == [f"{path}: the MP3 decoder says: Warning: Xing stream size off by more than 1%, fuzzy seeking "
                    "may be even more fuzzy than by design!; read past it"] * 2, said  # eval's read, training's
    assert capfd.readouterr().err == ""


def test_the_first_process_alone_warns_of_what_reading_a_training_photo_passes_over(tmp_path, monkeypatch):
    """As of a damaged MP3 (test_train): under torchrun every process warned that a photo's other frames are left
    out, and the first alone does; the others note the photo as warned of all the same."""
    import warnings

    import vqcodec.parallel
    from vqcodec.errors import ImageReadWarning

    path = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (20, 20), (shade, 0, 0)) for shade in (0, 80, 160)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    for main in (True, False):
        monkeypatch.setattr(vqcodec.parallel, "is_main", lambda: main)
        monkeypatch.setattr(data, "_WARNED_IMAGES", {})  # as a process of its own starts
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert data.read_media("image", path).shape == (20, 20, 3)
        said = [str(item.message) for item in caught if item.category is ImageReadWarning]
        assert said == ([f"{path} holds 3 frames: only the first is coded"] if main else []), said
        assert list(data._WARNED_IMAGES) == [str(path)]


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_crops_read_from_disk_in_worker_threads_keep_the_mp3_decoders_lines_off_stderr(tmp_path, capfd):
    """In a batch worker, where stderr cannot be caught, libmpg123 wrote its lines of a damaged file ("Warning:
    Xing stream size off ...", "Note: Illegal Audio-MPEG-Header ...") at every crop read, amid the progress line."""
    import warnings

    from vqcodec.errors import AudioReadWarning

    path = write_damaged_mp3(tmp_path / "damaged.mp3")
    soundfile.write(tmp_path / "clean.wav", 0.3 * np.sin(np.arange(16000) / 5), 16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crops = AudioCrops([tmp_path / "clean.wav", path], 8000, CROP, in_memory_bytes=0)
        expected, made = in_order_and_in_threads(crops, 8, 5, workers=2)
    assert all(torch.equal(want, got) for want, got in zip(expected, made))  # the same crops, wherever made
    assert [str(item.message) for item in caught if item.category is AudioReadWarning] == [
        f"{path}: the MP3 decoder says: Warning: Xing stream size off by more than 1%, fuzzy seeking may be even more "
        "fuzzy than by design!; read past it"]
    assert capfd.readouterr().err == ""


def test_a_line_break_in_a_training_file_name_keeps_its_skipping_line_one_line(tmp_path, capsys, codec):
    """Training's and fit-prior's skipping lines printed the name as it is, a line break splitting the line
    in two (the other commands' lines show it as \\n, as ls does)."""
    from vqcodec.priorfit import collect_codes

    soundfile.write(tmp_path / "good.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    (tmp_path / "bad\nname.wav").write_bytes(b"not audio")
    (tmp_path / "li\nnk.wav").symlink_to("good.wav")
    files = sorted(tmp_path.iterdir())
    assert data.readable_files("audio", files) == [tmp_path / "good.wav"]
    assert capsys.readouterr().err.splitlines() == [
        f"skipping {tmp_path}/li\\nnk.wav: the same file as {tmp_path / 'good.wav'}",
        f"skipping {tmp_path}/bad\\nname.wav: cannot read audio: Format not recognised."]
    said = []
    collect_codes(codec, [tmp_path / "bad\nname.wav"], said.append)
    assert said[0] == f"skipping {tmp_path}/bad\\nname.wav: cannot read audio: Format not recognised."


def test_fitting_a_prior_says_how_far_it_is_at_least_every_ten_seconds(tmp_path, codec, monkeypatch):
    """collect_codes said 'coded N/M files' every 25 files alone: a training run's prior, fitted to a folder of
    whole songs, showed nothing for 2 to 3 minutes after 'fitting the prior ...'. Here each file takes 6 s."""
    import itertools
    import types

    import vqcodec.priorfit as priorfit

    clock = itertools.count(0, 6)  # priorfit's clock alone: time.monotonic of every other caller is left as it is
    monkeypatch.setattr(priorfit, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    soundfile.write(tmp_path / "a.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    said = []
    priorfit.collect_codes(codec, [tmp_path / "a.wav"] * 5, progress=said.append)
    assert said == ["coded 2/5 files (12 s)", "coded 4/5 files (24 s)", "coded 5/5 files (30 s)"]


def test_a_folder_of_the_other_media_kind_says_what_it_holds(tmp_path):
    """A folder of photos given to an audio model or checkpoint (fit-prior, eval, train --resume or --kind) was
    'no audio files found', as if it were empty."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(VQCodecError, match=f"^{tmp_path}: no audio files found \\(only images\\)$"):
        data.find_media(tmp_path, "audio")
    soundfile.write(tmp_path / "b.wav", np.zeros(100), 8000)
    (tmp_path / "a.png").unlink()
    with pytest.raises(VQCodecError, match=f"^{tmp_path}: no image files found \\(only audio files\\)$"):
        data.find_media(tmp_path, "image")
    (tmp_path / "b.wav").unlink()
    with pytest.raises(VQCodecError, match=f"^{tmp_path}: no image files found$"):
        data.find_media(tmp_path, "image")


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
@pytest.mark.filterwarnings("ignore::vqcodec.errors.AudioReadWarning")  # the cut, which the MP3 decoder reports
def test_crops_of_a_file_that_holds_less_than_its_header_says_are_of_what_it_holds(tmp_path):
    """A cut MP3 still declares its whole length: crops read from disk fell past its end four times in five,
    silence, and the run's first line counted the minutes its header declares."""
    path = tmp_path / "cut.mp3"
    soundfile.write(path, 0.3 * np.sin(np.arange(80000) / 7), 8000)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 4])
    held = soundfile.read(path)[0].size
    assert soundfile.info(path).frames == 80000 and held < 25000
    for in_memory_bytes in (None, 0):
        crops = AudioCrops([path], 8000, CROP, in_memory_bytes=in_memory_bytes)
        assert abs(crops.seconds - held / 8000) < 0.01
        made = [crops.make(plan) for plan in crops.plan(40, np.random.default_rng(0), augment=False)]
        assert all(np.abs(crop).max() > 0.1 for crop in made)


def test_photos_read_in_batch_workers_leave_the_warnings_machinery_as_it_was(image_files, tmp_path):
    """Each photo read from disk swapped the process's warning filters and showwarning for its own and back
    (catch_warnings), so batch workers reading at once put back each other's: the filters stayed changed after
    the run, and a photo's warning could come out raw (Pillow's 'UserWarning: Corrupt EXIF data', two lines)."""
    import warnings

    from vqcodec.errors import ImageReadWarning

    for path in image_files:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (48, 48), (90, 20, 20)).save(tmp_path / "exif.png",
                                                  exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\xff\xff")
    crops = ImageCrops(sorted(tmp_path.iterdir()), 32, in_memory_bytes=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = warnings.showwarning, warnings.filters[:]
        batches = Batches(crops, 32, np.random.default_rng(0), workers=4)
        try:
            for _ in range(20):
                batches.next()
        finally:
            batches.close()
        assert (warnings.showwarning, warnings.filters) == before
    assert caught and {item.category for item in caught} == {ImageReadWarning}


def test_what_reading_a_photo_passed_over_is_said_once_for_a_training_run(tmp_path, golden_image_codec):
    """A photo read from disk is decoded at each of its crops, and its warning ('Corrupt EXIF data') was given
    at each: tens of lines for a short run (the MP3 decoder's is said once); and once more as the run's prior
    was fitted (collect_codes)."""
    import warnings

    from vqcodec.errors import ImageReadWarning
    from vqcodec.priorfit import collect_codes

    path = tmp_path / "exif.png"
    Image.new("RGB", (48, 48), (90, 20, 20)).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\xff\xff")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert data.decodes("image", path)
        for in_memory_bytes in (None, 0):
            crops = ImageCrops([path], 32, in_memory_bytes=in_memory_bytes)
            crops.batch(4, np.random.default_rng(0))
        assert len(collect_codes(golden_image_codec, [path])[0]) == 1
    assert [str(item.message) for item in caught if item.category is ImageReadWarning] == [
        f"{path}: Corrupt EXIF data. Expecting to read 12 bytes but only got 2; read past it"]


def test_reading_a_photo_of_several_frames_leaves_the_process_warnings_alone(tmp_path, monkeypatch):
    """Counting a GIF's or TIFF's frames swapped the process's warning filters and showwarning for its own and
    back (catch_warnings), in each batch worker at once: one worker put back what another had swapped in."""
    import warnings

    from vqcodec.imageio import open_image

    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(3)]
    for name in ("a.gif", "a.tiff"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])

    def swapped(*args, **kwargs):
        raise AssertionError("warnings.catch_warnings swaps the whole process's warnings")

    monkeypatch.setattr(warnings, "catch_warnings", swapped)
    for name in ("a.gif", "a.tiff"):
        with pytest.warns(UserWarning, match="holds 3"):
            assert open_image(tmp_path / name).size == (8, 8)


def test_a_damaged_tiff_read_from_disk_says_libtiffs_reason_in_its_skipping_line_alone(tmp_path, capfd):
    """libtiff writes what it finds wrong straight to stderr, which io catches in the main thread alone: a damaged
    TIFF's crop read in a batch worker printed libtiff's line raw, amid the progress line, before its `skipping`
    line. The first crop of each TIFF is read in the main thread, where its line is the skipping line's reason."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"{name}.tif",
                                                                                compression="tiff_lzw")
    with Image.open(tmp_path / "b.tif") as image:
        (strip,), (size,) = image.tag_v2[273], image.tag_v2[279]
    damaged = bytearray((tmp_path / "b.tif").read_bytes())
    damaged[strip:strip + size] = bytes(size)
    (tmp_path / "b.tif").write_bytes(bytes(damaged))
    crops = ImageCrops([tmp_path / "a.tif", tmp_path / "b.tif"], 32, in_memory_bytes=0)
    batches = Batches(crops, 8, np.random.default_rng(1), workers=2)
    try:
        for _ in range(3):
            assert batches.next().shape == (8, 3, 32, 32)
    finally:
        batches.close()
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"skipping {tmp_path / 'b.tif'}: cannot read image: "), lines
    assert "cannot be decoded" not in lines[0] and "tempfile" not in lines[0]


def test_image_size_leaves_the_warnings_settings_as_they_were_beside_a_thread_recording_warnings(tmp_path, monkeypatch):
    """image_size set the process's warning filters with warnings.catch_warnings, which puts back at its end what
    it found at its start: while another thread recorded warnings (imageio.warnings_recorded, a batch worker reading a
    photo) and ended meanwhile, that thread's settings stayed, every later warning sent to a list no one read."""
    import threading
    import warnings

    from vqcodec.imageio import warnings_recorded

    path = tmp_path / "a.png"
    Image.new("L", (4, 6)).save(path)
    before = warnings.showwarning, warnings.filters[:]
    recording, opening, done = threading.Event(), threading.Event(), threading.Event()

    def record():
        with warnings_recorded():
            recording.set()
            opening.wait(10)
        done.set()

    open_image = Image.open

    def open_when_the_other_is_done(*args, **kwargs):
        opening.set()
        done.wait(10)
        return open_image(*args, **kwargs)

    other = threading.Thread(target=record)
    other.start()
    recording.wait(10)
    monkeypatch.setattr(Image, "open", open_when_the_other_is_done)
    assert data.image_size(path) == (4, 6)
    other.join()
    assert (warnings.showwarning, warnings.filters) == before


def test_image_size_refuses_a_bad_file_and_lets_a_bug_of_its_own_out(tmp_path, monkeypatch):
    """data.image_size caught every Exception as a refusal of the photo, so a bug of its own (a renamed helper's
    NameError) was a skipping line, 'cannot read image x.png: name ... is not defined'."""
    source = tmp_path / "x.png"
    Image.new("RGB", (5, 4)).save(source)
    (tmp_path / "no.png").write_bytes(b"not an image at all")
    with pytest.raises(VQCodecError, match="^cannot read image .*no.png: not an image format Pillow reads$"):
        data.image_size(tmp_path / "no.png")

    def renamed(width, height):
        raise NameError("name '_check_pixels' is not defined")

    monkeypatch.setattr(data, "check_pixel_count", renamed)
    with pytest.raises(NameError, match="_check_pixels"):
        data.image_size(source)


def test_a_link_to_nothing_and_a_fifo_in_a_training_folder_get_a_skipping_line(tmp_path, capsys):
    """train, fit-prior and eval left out a symbolic link to nothing and a FIFO of the folder without a word."""
    soundfile.write(tmp_path / "a.wav", np.full(3000, 0.25, dtype=np.float32), 8000)
    (tmp_path / "x.wav").symlink_to(tmp_path / "moved.wav")
    os.mkfifo(tmp_path / "y.flac")
    os.mkfifo(tmp_path / "z.png")  # of the other kind: left out, as its files are
    passed_over = []
    assert data.find_media(tmp_path, None, None, passed_over) == ("audio", [tmp_path / "a.wav"])
    data.say_passed_over(passed_over)
    assert capsys.readouterr().err.splitlines() == [
        f"skipping {tmp_path / 'x.wav'}: broken symbolic link (to {tmp_path / 'moved.wav'})",
        f"skipping {tmp_path / 'y.flac'}: not a regular file (a pipe, a socket or a device)"]
