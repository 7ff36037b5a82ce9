"""vqcodec: a neural VQ-VAE codec for speech and images, with integer codes you can use."""
from .errors import ClippingWarning, VQCodecError
from .fileinfo import FileInfo, read_info
from .registry import list_models

__version__ = "0.1.0"
__all__ = ["ClippingWarning", "Codec", "FileInfo", "VQCodecError", "decode", "list_models", "read_info", "__version__"]


def __getattr__(name: str):
    # torch is imported when the codec is first wanted, so that `vqcodec info`, `models` and --help start fast
    if name in ("Codec", "decode"):
        from . import codec
        return getattr(codec, name)
    if name == "tokens":  # the README's vqcodec.tokens.code_folder, after a plain `import vqcodec`
        import importlib
        return importlib.import_module(".tokens", __name__)
    raise AttributeError(f"module 'vqcodec' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the names __getattr__ gives too, for dir() and a shell's completion
    return sorted({*globals(), "Codec", "decode", "tokens"})
