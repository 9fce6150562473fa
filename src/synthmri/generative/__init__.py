"""Generators, one per class: DDPM with MONAI (paper §5.1) and DCGAN (the DCGAN studies, docs/studies.md).

`train.train_generator` trains one class from the preprocess manifest (checkpoints, resume, dvclive,
DDP); `sample.generate` writes its synthetic images. `config` holds the typed params; `registry`
maps `generator.kind` to a model; device, precision and seeds come from `synthmri.runtime`.
"""
