"""Variational auto-encoder on MNIST: data, models, training, evaluation and latent figures."""
