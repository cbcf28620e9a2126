"""Training loops shared by every stage (see loop.py) and the one-model train job (static.py)."""
