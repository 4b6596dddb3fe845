"""The method- and family-agnostic core: the model facade, the method registry, configs,
composition blocks and their composer, per-call setups, training policy and summaries."""
