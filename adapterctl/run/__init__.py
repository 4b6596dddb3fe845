"""The commands' runners: ``train``, ``evaluate``, ``predict`` (and ``export``, ``fuse`` from
their own parts). Each is thin: it builds objects from the composed config and calls the
library; the shared pieces are ``settings`` (Hydra), ``build``, ``loop``, ``checkpoint``,
``folders`` and ``loggers``."""
