"""Shared pieces of the export tests.

timm needs torchvision at import time, which cannot load here: `parity.import_timm` imports it with
a stand-in torchvision (ViT never calls it) before any test module does.
"""
import pytest

from tests.export import parity

parity.import_timm()

# A tiny MAE: ViT-mu/4 (width 32, 2 blocks) on 16 px images (a 4x4 grid), decoder 16 wide, 1 block.
TINY_KWARGS = dict(variant="mu/4", mask_ratio=0.75, norm_pix_loss=True, decoder_width=16,
                   decoder_depth=1, decoder_heads=2)
TINY_SIZE = 16


@pytest.fixture
def tiny():
  """(model kwargs, image size, random params) of a tiny MAE."""
  return dict(TINY_KWARGS), TINY_SIZE, parity.random_params(TINY_KWARGS, TINY_SIZE)
