"""Fidelity of synthetic images (paper §5.1.3, §6.1): FID, IS, KID, precision/recall per class via
torch-fidelity and a memorisation check. The Inception weights file is read through
`synthmri.pretrained` (the checked registry every stage shares).

Modules: `config` (params section `fidelity`), `features` (grey -> 3-channel boundary, extractor,
content cache), `metrics`, `memorisation`, `evaluate` (the stage), `commands` (what cli.py calls).
"""
