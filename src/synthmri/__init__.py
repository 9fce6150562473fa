"""synthmri: synthetic data for brain-tumour MRI classification, reproducibly."""

__version__ = "0.1.0"

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")  # Kaggle class folders, sorted
SPLITS = {"Training": "train", "Testing": "test"}  # Kaggle split folder -> pipeline split name
