"""Old name of :mod:`advtune.pooling`, kept only until the last importer moves (removed after the merge)."""

from .pooling import last_token_index, pooling_for, sentence_representation

__all__ = ["last_token_index", "pooling_for", "sentence_representation"]
