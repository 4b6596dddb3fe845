"""Runners: train, evaluate, fuse, export, predict (one module each)."""
