"""vqcodec: a neural VQ-VAE codec for speech and images, with integer codes you can use."""
from .codec import Codec, FileInfo, read_info
from .registry import list_models
from .errors import VQCodecError

__version__ = "0.1.0"
__all__ = ["Codec", "FileInfo", "VQCodecError", "list_models", "read_info", "__version__"]
