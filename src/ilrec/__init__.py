"""ilrec: causal language models as generative sequential recommenders, improved by
self-hard negatives from their own intermediate layers (ILRec)."""

__version__ = "0.1.0"
