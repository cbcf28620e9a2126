"""Placeholder: being written."""


def rank_of_candidates(*args, **kwargs):
    raise NotImplementedError("rank_of_candidates is being written")
