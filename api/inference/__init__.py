"""Serving a model: the served version and its hot reload, other versions on demand, the
decode budget, the batcher, and the path an image takes to its answer."""
