"""What trained VAE layers carry and generate: per-unit diagnostics, decoding down the stack,
samples from the prior and the aggregate posterior, traversals. Built on :mod:`vaelayer_np.core`."""
