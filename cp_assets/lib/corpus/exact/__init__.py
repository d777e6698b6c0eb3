"""The exact index: a bit-packed suffix array per corpus shard (build, search kernels, split view, infini-gram peer)."""
