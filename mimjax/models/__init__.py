"""Flax linen models: the ViT encoder, MAE and LUT."""
