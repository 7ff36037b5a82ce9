"""The codes methods of the Python API (codes_to_audio, codes_to_image, codes_to_file) given codes a user made,
edited or mistook: each wrong input refused in one line that names what is wrong."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from vqcodec import VQCodecError


@pytest.mark.parametrize("given", ["codes.npy", Path("codes.npy"), None, b"\x93NUMPY", io.BytesIO(b"\x93NUMPY"),
                                   {"codes": [1, 2]}])
def test_codes_that_are_no_array_are_refused_naming_what_they_are_and_what_reads_a_file(codec, golden_image_codec,
                                                                                      given):
    """A path given for codes was refused as 'codes must be integers, not <U9' (np.asarray's 0-d array of text),
    None and a stream as 'not object', bytes as 'not |S6'."""
    for call in (codec.codes_to_audio, codec.codes_to_file, golden_image_codec.codes_to_image):
        with pytest.raises(VQCodecError, match=r"^codes are an integer array \(NumPy, a torch tensor or nested lists\), "
                                               r"not .*: vqcodec\.tokens\.read_codes_npy\(path, codec\) reads a \.npy"):
            call(given)
