"""adaspec: lossless speculative decoding for Hugging Face causal LMs, no training, no second model.

Typical use::

    import adaspec
    model = adaspec.load()                      # embedded SmolLM2-135M-Instruct
    gen = adaspec.Generator(model, drafter="recycling")
    out = gen.generate("Write a haiku about caches.", max_new_tokens=64)
    print(out.text, out.stats.tokens_per_s, out.stats.mat)
"""

from adaspec.drafters import Drafter, StepFeedback, drafter_names, make_drafter
from adaspec.engine import Generation, Generator, TextStream
from adaspec.errors import AdaspecError
from adaspec.loading import load
from adaspec.models.loaded import LoadedModel
from adaspec.sampling import SamplingParams
from adaspec.stats import GenerationStats
from adaspec.tree import DraftTree, TreeBuilder

__version__ = "0.1.0"

__all__ = [
    "AdaspecError",
    "DraftTree",
    "Drafter",
    "Generation",
    "GenerationStats",
    "Generator",
    "LoadedModel",
    "StepFeedback",
    "SamplingParams",
    "TextStream",
    "TreeBuilder",
    "drafter_names",
    "load",
    "make_drafter",
]
