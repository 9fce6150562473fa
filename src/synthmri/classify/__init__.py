"""Classification under the paper's scenarios (paper §5.2, §6.2): models, mixtures, training, statistics."""
