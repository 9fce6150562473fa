"""Fidelity of synthetic images (paper §5.1.3, §6.1): FID, IS, KID, precision/recall per class via
torch-fidelity, a memorisation check, and the pretrained weight files every network reads.

Modules: `config` (params section `fidelity`), `weights` (registry, fetch, safe load), `features`
(grey -> 3-channel boundary, extractor, content cache), `metrics`, `memorisation`, `evaluate` (the
stage), `commands` (what cli.py calls).
"""
