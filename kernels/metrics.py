"""Placeholder: being written."""


def count_hits_dcg(*args, **kwargs):
    raise NotImplementedError("count_hits_dcg is being written")
