"""The codes methods of the Python API (codes_to_audio, codes_to_image, codes_to_file) given codes a user made,
edited or mistook: each wrong input refused in one line that names what is wrong."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vqcodec import VQCodecError


@pytest.mark.parametrize("given", ["codes.npy", Path("codes.npy"), b"\x93NUMPY", io.BytesIO(b"\x93NUMPY")])
def test_codes_that_are_no_array_are_refused_naming_what_they_are_and_what_reads_a_file(codec, golden_image_codec,
                                                                                      given):
    """A path given for codes was refused as 'codes must be integers, not <U9' (np.asarray's 0-d array of text),
    None and a stream as 'not object', bytes as 'not |S6'."""
    for call in (codec.codes_to_audio, codec.codes_to_file, golden_image_codec.codes_to_image):
        with pytest.raises(VQCodecError, match=r"^codes are an integer array \(NumPy, a torch tensor or nested "
                                               r"lists\), "
                                               r"not .*: vqcodec\.tokens\.read_codes_npy\(path, codec\) reads a \.npy"):
            call(given)


@pytest.mark.parametrize("given, named", [(None, "None"), ({"codes": [1, 2]}, "a dict")])
def test_codes_of_none_or_a_dict_are_refused_naming_them_alone(codec, given, named):
    """None and a dict were 'codes must be integers, not object'; they are no file, so no reader is named."""
    for call in (codec.codes_to_audio, codec.codes_to_file):
        with pytest.raises(VQCodecError, match=rf"^codes are an integer array \(NumPy, a torch tensor or nested "
                                               rf"lists\), "
                                               rf"not {named}$"):
            call(given)


@pytest.mark.parametrize("shape, fault", [
    ((3, 5), r"int16 \(3, 5\): 2-D, as one channel's codes are \(codes\[None\] adds that axis\)"),
    ((2, 1, 3, 5), r"int16 \(2, 1, 3, 5\): 4-D, as a batch of codes is \(decode each: codes\[i\]\)"),
    ((5,), r"int16 \(5,\): 1-D"),
    ((1, 3, 0), r"int16 \(1, 3, 0\): it has no frames"),
    ((0, 3, 5), r"int16 \(0, 3, 5\): it has no channels"),
    ((1, 0, 5), r"int16 \(1, 0, 5\): it has no levels"),
    ((1, 7, 5), r"int16 \(1, 7, 5\): it has 7 levels"),
    ((1, 30, 3), r"int16 \(1, 30, 3\): it has 30 levels \(where its last axis holds the levels, "
                 r"np\.moveaxis\(codes, -1, 1\), or a tensor's movedim\(-1, 1\), puts them in place\)"),
])
def test_codes_of_a_wrong_shape_are_refused_naming_their_shape_and_its_fault(codec, shape, fault):
    """Codes of a shape the model cannot take were refused saying the layout wanted alone, the same line for an empty
    time axis, a level too many, one channel's 2-D codes and a batch: the user was left to find which."""
    message = (r"^codes must be a non-empty integer array \(channels, quality, frames\) of at most 4 levels, each an "
               rf"index below 16 or -1, not {fault}$")
    for call in (codec.codes_to_audio, codec.codes_to_file):
        with pytest.raises(VQCodecError, match=message):
            call(np.zeros(shape, np.int16))
    with pytest.raises(VQCodecError, match=message):
        codec.check_codes_shape(shape, np.int16)


def test_image_codes_of_a_wrong_shape_name_the_image_axes(golden_image_codec):
    for shape, fault in (((3, 5), "2-D, as one level's codes are"), ((2, 0, 5), "it has no rows"),
                         ((40, 30, 3), r"it has 40 levels \(where its last axis holds the levels, "
                                       r"np\.moveaxis\(codes, -1, 0\)")):
        with pytest.raises(VQCodecError, match=rf"^codes must be .* \(quality, rows, cols\) .*, not int16 "
                                               rf"\({shape[0]}, {shape[1]}.*\): {fault}"):
            golden_image_codec.codes_to_image(np.zeros(shape, np.int16))


def test_codes_that_leave_a_level_out_below_one_they_hold_are_refused_naming_the_first_such_place(
        codec, golden_image_codec):
    """Codes edited to leave a level out (-1) below one they still hold were refused as 'codes must be present from
    the first level up to a cell's depth, then -1' alone: of thousands of frames, the user was not told which."""
    codes = np.full((2, 4, 30), 5, np.int16)
    codes[:, 3, 20:] = -1  # left out from some level up to the top: taken
    codes[1, 1, 12] = -1
    codes[1, 0, 15] = -1
    message = (r"^codes must be present from the first level up to a cell's depth, then -1: channel 1, frame 12 "
               r"leaves level 1 out \(-1\) and holds level 2 \(5\)$")
    for call in (codec.codes_to_audio, codec.codes_to_file):
        with pytest.raises(VQCodecError, match=message):
            call(codes)
    image_codes = np.full((3, 2, 4), 9, np.int16)
    image_codes[0, 1, 2] = -1
    with pytest.raises(VQCodecError, match=r"then -1: row 1, col 2 leaves level 0 out \(-1\) and holds level 1 \(9\)$"):
        golden_image_codec.codes_to_image(image_codes)


def test_settings_of_the_other_kind_of_media_are_refused_naming_what_the_model_codes(codec, golden_image_codec):
    """codes_to_file of an image model given audio's settings said 'model golden_image codes image: ...'."""
    with pytest.raises(VQCodecError, match=r"^model golden_image codes images: a width and height are for images, a "
                                           r"sample rate, sample count, gain and channel count for audio$"):
        golden_image_codec.codes_to_file(np.zeros((2, 3, 4), np.int16), sample_rate=16000)
    with pytest.raises(VQCodecError, match=r"^model tiny codes audio: a width and height are for images"):
        codec.codes_to_file(np.zeros((1, 2, 4), np.int16), width=32)


def test_the_codec_says_what_its_codes_are_as_attributes_that_hold_it(codec, golden_image_codec):
    """help(vqcodec.Codec) named none of the attributes a user of the codes needs (the codebook size, the levels,
    the hop): they were found by reading the source."""
    import vqcodec

    for attribute in ("kind", "name", "model_id", "num_codebooks", "codebook_size", "hop", "sample_rate",
                      "code_dtype"):
        assert f"`{attribute}`" in vqcodec.Codec.__doc__, attribute
    second = np.random.default_rng(0).standard_normal(codec.sample_rate).astype(np.float32) * 0.1
    codes = codec.audio_to_codes(second, codec.num_codebooks)
    assert codes.shape == (1, codec.num_codebooks, codec.sample_rate // codec.hop)
    assert codes.dtype == codec.code_dtype and 0 <= codes.min() and codes.max() < codec.codebook_size
    assert (codec.kind, codec.name, len(codec.model_id)) == ("audio", "tiny", 8)
    assert golden_image_codec.sample_rate == 0
    image_codes = golden_image_codec.image_to_codes(np.zeros((40, 24, 3), np.uint8), 2)
    assert image_codes.shape == (2, -(-40 // golden_image_codec.hop), -(-24 // golden_image_codec.hop))


def test_a_list_of_files_given_as_one_medium_is_refused_as_a_batch(codec, golden_image_codec, tmp_path):
    """A list of paths given to media_to_codes or encode, to code several files at once, was taken for an array of
    samples: 'audio given as an array needs its sample_rate', then, given one, 'audio must be a float or integer PCM
    array, not <U36'; an image model said 'an image array must be uint8 ..., not <U33 (1,)'."""
    from PIL import Image

    message = (r"^media is one file, stream, image or array, not a list of 2 items \(the first {}\): code each in "
               r"turn \(a folder: vqcodec\.folders' encode_tree and codes_of_media_tree\)$")
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for given, first in (([str(path) for path in paths], "a str"), (paths, f"a {type(paths[0]).__name__}"),
                         ([io.BytesIO(), io.BytesIO()], "a BytesIO")):
        for call in (codec.media_to_codes, codec.encode):
            with pytest.raises(VQCodecError, match=message.format(first)):
                call(given, sample_rate=16000)
    with pytest.raises(VQCodecError, match=message.format("an Image")):
        golden_image_codec.media_to_codes([Image.new("RGB", (8, 8))] * 2)
    assert codec.media_to_codes([0.25, -0.25] * 8, sample_rate=16000)[0].shape[1:] == (4, 2)  # samples: taken


def test_the_codes_methods_docstrings_give_the_layout_and_sizes_they_take(codec, golden_image_codec):
    """help(codec.media_to_codes) said neither the axes of the codes it gives nor their frame rate, and
    codes_to_image neither what height and width default to nor the range they take."""
    from vqcodec import Codec

    assert "audio's (channels, quality, frames), sample_rate / hop frames a second" in " ".join(
        Codec.media_to_codes.__doc__.split())
    assert "an image's (quality, rows, cols)" in " ".join(Codec.media_to_codes.__doc__.split())
    assert "of 1 to num_codebooks levels" in " ".join(Codec.codes_to_audio.__doc__.split())
    assert "or (samples,) for mono, -> (channels, quality, frames) codes, frames = ceil(samples / hop)" in " ".join(
        Codec.audio_to_codes.__doc__.split())
    assert codec.audio_to_codes(np.zeros(2 * codec.hop + 1, np.float32), 1).shape == (1, 1, 3)
    assert "(rows - 1) x hop + 1 up to rows x hop" in " ".join(Codec.codes_to_image.__doc__.split())
    codes, restore = codec.media_to_codes(np.zeros((2, 3 * codec.hop), np.float32), sample_rate=codec.sample_rate)
    assert codes.shape == (2, codec.num_codebooks, 3) and restore["channels"] == 2
    image, hop = golden_image_codec, golden_image_codec.hop
    cells = np.zeros((2, 3, 4), np.int16)
    assert image.codes_to_image(cells).shape == (3 * hop, 4 * hop, 3)
    assert image.codes_to_image(cells, 2 * hop + 1, 3 * hop + 1).shape == (2 * hop + 1, 3 * hop + 1, 3)
    with pytest.raises(VQCodecError, match=rf"^height must be an integer from {2 * hop + 1} to {3 * hop}, "
                                           rf"not {2 * hop}$"):
        image.codes_to_image(cells, 2 * hop)


def test_an_image_tensor_as_torchvision_gives_it_is_refused_saying_how_to_make_it_uint8_channels_last(
        golden_image_codec):
    """A (3, height, width) float tensor of 0..1, torchvision's image, or a batch of them, or an int64 image, was
    refused naming its type and shape alone: the fixes (channels last, uint8 of 0..255, one image) were the user's
    to find."""
    import torch

    image = torch.rand(3, 20, 24)
    channels = r"channels last, not first: a tensor's permute\(1, 2, 0\) or np\.moveaxis\(image, 0, -1\)"
    floats = (r"uint8 of 0\.\.255, not floats: \(image \* 255\)\.round\(\) as uint8 for floats of 0\.\.1, "
              r"as torchvision's")
    batch = r"one image at a time, not a batch: image\[i\]"
    for given, fixes in ((image, f"{channels}; {floats}"), (image[None], f"{batch}; {channels}; {floats}"),
                         ((image * 255).long().permute(1, 2, 0),
                          r"uint8 of 0\.\.255: image\.astype\(np\.uint8\) or a tensor's to\(torch\.uint8\)")):
        shape = re.escape(str(tuple(given.shape)))
        with pytest.raises(VQCodecError, match=rf"^an image's RGB is a uint8 array \(height, width, 3\), "
                                               rf"not \w+ {shape} \({fixes}\): encode\(\) also takes uint8 grey"):
            golden_image_codec.image_to_codes(given)
        with pytest.raises(VQCodecError, match=rf"^an image array must be uint8 .*, not \w+ {shape} \({fixes}\)$"):
            golden_image_codec.media_to_codes(given)
    taken = (image.permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert golden_image_codec.image_to_codes(taken, 2).shape[0] == 2


def test_another_models_file_names_the_installed_model_that_decodes_it(codec, other_codec, other_model_path, signal,
                                                                       monkeypatch):
    """read_codes and decode of a file another model wrote said 'decode it with a Codec of the model that wrote it',
    naming that model by its id alone, where an installed model of that id decodes it (the command line named it)."""
    data = other_codec.encode_audio(signal(1, 160, 16000), 16000, 2)
    wrote = f"^file was written by model {other_codec.model_id.hex()}, not tiny \\({codec.model_id.hex()}\\); "
    with pytest.raises(VQCodecError, match=wrote + "decode it with a Codec of the model that wrote it$"):
        codec.read_codes(data)
    monkeypatch.setenv("VQCODEC_MODEL_PATH", str(other_model_path.parent))
    for call in (codec.read_codes, codec.decode):
        with pytest.raises(VQCodecError, match=wrote + r"Codec\.load\('other'\) decodes it$"):
            call(data)


def test_codes_of_another_model_name_the_installed_model_that_made_them(codec, other_codec, other_model_path,
                                                                        golden_image_codec, monkeypatch):
    """Codes another model made, or an image model's given to an audio model, were refused saying 'decode them with
    the model that made them', naming that model by its id alone where it is installed."""
    from conftest import GOLDEN

    made = r"decode them with the model that made them"
    audio_codes = other_codec.audio_to_codes(np.zeros(64, np.float32), 2)
    image_codes = golden_image_codec.image_to_codes(np.zeros((8, 8, 3), np.uint8), 2)
    with pytest.raises(VQCodecError, match=rf": {made} \(or a decoder-only fine-tune of it\)$"):
        codec.codes_to_audio(audio_codes)
    monkeypatch.setenv("VQCODEC_MODEL_PATH", os.pathsep.join([str(other_model_path.parent), str(GOLDEN)]))
    with pytest.raises(VQCodecError, match=rf": {made}, Codec\.load\('other'\) \(or a decoder-only fine-tune of it\)$"):
        codec.codes_to_audio(audio_codes)
    with pytest.raises(VQCodecError, match=rf"^these are the codes of an image, .*: {made}, "
                                           rf"Codec\.load\('golden_image'\)$"):
        codec.codes_to_file(image_codes)


@pytest.mark.parametrize("given, message", [
    ([[[1, None]]], r"^codes must be integers, not None \(at \[0, 0, 1\]\)$"),
    ([[[1, 2], [3, "4"]]], None),  # NumPy makes text of it: 'not <U21', as before
    (np.array([[[3, 2.5]]], dtype=object), r"^codes must be integers, not a float \(2\.5 at \[0, 0, 1\]\)$"),
    (np.array([[[3, True]]], dtype=object), r"^codes must be integers, not a bool \(True at \[0, 0, 1\]\)$"),
    (np.array([[[3, "4"]]], dtype=object), r"^codes must be integers, not a str \('4' at \[0, 0, 1\]\)$"),
    ([[[1, 2 ** 70]]], r"^codes hold 1180591620717411303424 \(at \[0, 0, 1\]\), which is no code$"),
])
def test_nested_lists_that_numpy_makes_objects_of_are_refused_naming_the_first_item_that_is_no_code(
        codec, given, message):
    """Codes as nested lists holding None, or an int beyond int64, were refused as 'codes must be integers, not
    object', naming neither the item nor where it is."""
    for call in (codec.codes_to_audio, codec.codes_to_file):
        with pytest.raises(VQCodecError, match=message or r"^codes must be integers, not <U21$"):
            call(given)


def test_codes_of_numpys_object_type_holding_ints_are_taken_as_those_ints(codec):
    """np.array(codes, dtype=object) of Python ints (as pandas gives them) was refused as 'codes must be integers,
    not object', though nested lists of the same ints were taken."""
    codes = [[[1, 2, 3], [4, 5, -1]]]
    np.testing.assert_array_equal(codec.codes_to_audio(np.array(codes, dtype=object)), codec.codes_to_audio(codes))
    whole = [[[1, 2, 3], [4, 5, 6]]]  # the tiny model has no prior to code a -1 with
    assert codec.codes_to_file(np.array(whole, dtype=object)) == codec.codes_to_file(whole)


def test_a_million_codes_of_numpys_object_type_are_taken_at_once(codec, monkeypatch):
    """Codes of NumPy's object type were read one by one in Python (0.6 s a million here): ints, Python's and
    NumPy's, are taken at once, as int64 would hold them; items are read one by one only to name one that is none."""
    monkeypatch.setattr(np, "ndenumerate", lambda array: pytest.fail("the items were read one by one"))
    values = np.random.default_rng(0).integers(0, codec.codebook_size, (1, 4, 250_000))
    codes = values.astype(object)
    codes[0, 1, 7], codes[0, 2, 9] = np.int32(values[0, 1, 7]), np.uint8(values[0, 2, 9])
    header, read = codec.read_codes(codec.codes_to_file(codes))
    np.testing.assert_array_equal(read, values)


def test_codes_of_numpys_object_type_are_refused_for_their_shape_and_size_before_their_items_are_read(
        codec, monkeypatch):
    """A broadcast object array of a few bytes was read item by item (30 s for 30 levels of 10^6 frames here)
    before its shape or size was refused, and check_codes_shape of dtype object read as many stand-ins."""
    import vqcodec.codec

    monkeypatch.setattr(vqcodec.codec, "_object_codes_as_int64", lambda array: pytest.fail("the items were read"))
    shape = (1, 30, 10 ** 6)
    wrong_shape = r"^codes must be .*, not int64 \(1, 30, 1000000\): it has 30 levels"
    for call in (codec.codes_to_audio, codec.codes_to_file):
        with pytest.raises(VQCodecError, match=wrong_shape):
            call(np.broadcast_to(np.array(0, dtype=object), shape))
    with pytest.raises(VQCodecError, match=wrong_shape):
        codec.check_codes_shape(shape, object)
    years = np.broadcast_to(np.array(0, dtype=object), (1, 4, 10 ** 11))
    with pytest.raises(VQCodecError, match=r"^1 channel of 800000000000 samples of decoded audio .* do not fit"):
        codec.codes_to_audio(years)
    with pytest.raises(VQCodecError, match=r"^audio longer than 24 hours is not supported$"):
        codec.codes_to_file(years)


def test_codes_to_audios_memory_check_counts_the_int64_copy_of_codes_of_numpys_object_type(codec, monkeypatch):
    """Codes of NumPy's object type are taken as int64 (8 bytes a code) before the copy as int16: the memory
    check counted the int16 copy alone beside the audio."""
    import vqcodec.audioblocks

    codes = np.broadcast_to(np.array(0, dtype=object), (1, 4, 1000))
    audio_bytes, copies_bytes = 1000 * codec.hop * 4, codes.size * (2 + 8)
    monkeypatch.setattr(codec, "_decode_frames", lambda *args: pytest.fail("decoding started"))
    monkeypatch.setattr(vqcodec.audioblocks, "memory_bound", lambda: audio_bytes + copies_bytes - 1)
    with pytest.raises(VQCodecError, match=r"do not fit in memory"):
        codec.codes_to_audio(codes)
    monkeypatch.setattr(vqcodec.audioblocks, "memory_bound", lambda: audio_bytes + copies_bytes)
    with pytest.raises(pytest.fail.Exception, match="decoding started"):
        codec.codes_to_audio(codes)


def test_codes_given_where_media_is_wanted_are_refused_naming_what_takes_codes(codec, golden_image_codec):
    """Codes from audio_to_codes given back to encode, encode_audio, media_to_codes or audio_to_codes were refused as
    3-D audio ('audio must be (channels, samples) or (samples,), not 3-D'), an image's codes as an image of another
    type."""
    audio_codes = codec.audio_to_codes(np.zeros(64, np.float32), 2)
    image_codes = golden_image_codec.image_to_codes(np.zeros((8, 8, 3), np.uint8), 3)
    audio = r"^these are codes \(of audio\), not media: codes_to_file makes a \.vq file of them, codes_to_audio decodes"
    for call in (lambda: codec.encode(audio_codes, sample_rate=16000), lambda: codec.media_to_codes(audio_codes),
                 lambda: codec.audio_to_codes(audio_codes), lambda: codec.encode_audio(audio_codes, 16000, 2)):
        with pytest.raises(VQCodecError, match=audio):
            call()
    for call in (golden_image_codec.encode, golden_image_codec.media_to_codes, golden_image_codec.image_to_codes,
                 lambda codes: golden_image_codec.encode_image(codes, 3)):
        with pytest.raises(VQCodecError, match=r"^these are codes \(of an image\), not media: .* codes_to_image decodes"):
            call(image_codes)


def test_codes_given_where_a_vq_file_is_wanted_are_refused_naming_what_takes_codes(codec, golden_image_codec):
    """Codes given to decode were refused as not bytes, a path or a stream, with no word of what takes them."""
    audio_codes = codec.audio_to_codes(np.zeros(64, np.float32), 2)
    image_codes = golden_image_codec.image_to_codes(np.zeros((8, 8, 3), np.uint8), 3)
    given = r"^a \.vq file is given as bytes, a path or a binary stream, not an? \w+ \(codes: "
    made = r" decodes them, codes_to_file makes a \.vq file of them\)$"
    with pytest.raises(VQCodecError, match=given + "codes_to_audio" + made):
        codec.decode(audio_codes)
    with pytest.raises(VQCodecError, match=given + "codes_to_image" + made):
        golden_image_codec.decode(image_codes)
    for plain in (np.asarray(audio_codes), torch.from_numpy(np.asarray(audio_codes))):
        with pytest.raises(VQCodecError, match=given + "codes_to_audio or codes_to_image" + made):
            codec.decode(plain)
    with pytest.raises(VQCodecError, match=r"binary stream, not an int$"):
        codec.decode(5)
