"""The Open Inference Protocol (KServe v2, Triton's HTTP API): the wire codec, which imports
nothing from the app, the model's signature on it, and the routes."""
