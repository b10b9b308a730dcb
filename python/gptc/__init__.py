"""gptc: GPT-2-family text generation on libgptc, shaped like transformers.

    import gptc

    with gptc.Model("path/to/checkpoint") as model:
        print(model.generate("Hello, my name is", max_new_tokens=40))
        for piece in model.stream("Once upon a time", max_new_tokens=40, do_sample=True, seed=1):
            print(piece, end="", flush=True)
        ids = model.tokenizer.encode("Hello")
        print(model.perplexity(open("text.txt").read()))

Pure Python over the C library (ctypes): libgptc.so is found through
$GPTC_LIBRARY, else a copy in this package's folder, else the build/ folder of
the source checkout this package sits in (pip install -e), else the system
loader. Errors are gptc.Error subclasses carrying the library's message.
"""
from ._errors import (ArgumentError, ClosedError, Error, FileError, FormatError, OutOfMemoryError,
                      RangeError, UnsupportedError)
from ._capi import path as library_path
from ._model import Config, GenerationConfig, Model, Stream
from ._tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["Model", "Tokenizer", "Stream", "Config", "GenerationConfig", "Error", "ArgumentError",
           "FileError", "FormatError", "OutOfMemoryError", "RangeError", "UnsupportedError", "ClosedError",
           "library_path", "__version__"]
