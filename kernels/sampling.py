"""Placeholder: being written."""


def sample_negatives(*args, **kwargs):
    raise NotImplementedError("sample_negatives is being written")
