"""The encoder as a timm `VisionTransformer` (class token, global_pool='token', LN eps 1e-6, qkv bias).

Only the `encoder` subtree is exported (a LUT's `projector`/`predictor`, the MAE decoder and any other
top-level key are ignored). The fixed sin-cos table is written as timm's `pos_embed`. With
`num_classes=K` a fresh head is written (weight ~ trunc-normal std 2e-5, seeded; bias 0), as MAE
fine-tuning initializes it.

`save_timm` writes `model.safetensors` + a timm-style `config.json` (`architecture`, `num_classes`,
`pretrained_cfg`, `model_args`), so the directory loads with
`timm.create_model('local-dir:' + out_dir, pretrained=True)`, or by hand with
`VisionTransformer(**config['model_args'])` / `timm.create_model(config['architecture'],
pretrained=False, **config['model_args'])` and `load_state_dict(strict=True)`.
"""
from typing import Any, Mapping

import numpy as np

from mimjax import storage
from mimjax.export import common
from mimjax.export import rules as R
from mimjax.models import vit

SCOPE = ("encoder",)
BLOCK = {"norm1": "norm1", "qkv": "attn.qkv", "out": "attn.proj", "norm2": "norm2",
         "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
HEAD_STD = 2e-5
# ImageNet statistics: the mean/std normalization the MAE recipe applies to its inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm model names whose default architecture is exactly a mimjax variant (checked in the tests).
_TIMM_SIZE = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base",
              (1024, 24, 16): "large", (1280, 32, 16): "huge"}
_TIMM_NAMES = frozenset({
    "vit_tiny_patch16_224", "vit_tiny_patch16_384", "vit_small_patch8_224", "vit_small_patch16_224",
    "vit_small_patch16_384", "vit_small_patch32_224", "vit_small_patch32_384",
    "vit_base_patch8_224", "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch32_224",
    "vit_base_patch32_384", "vit_large_patch14_224", "vit_large_patch16_224",
    "vit_large_patch16_384", "vit_large_patch32_224", "vit_large_patch32_384",
    "vit_huge_patch14_224"})
# Any plain ViT name works as the architecture when `model_args` give every size.
_GENERIC_NAME = "vit_base_patch16_224"


def timm_rules(model_kwargs: Mapping[str, Any], image_size: int, num_classes: int = 0,
               head_seed: int = 0) -> list[R.Rule]:
  """The table for timm's VisionTransformer, generated for the variant's depth."""
  kwargs = common.arch_kwargs(model_kwargs)
  spec = vit.decode_variant(kwargs["variant"])
  grid = common.grid_of(kwargs, image_size)
  table = R.conv("encoder/patch_embed", "patch_embed.proj")
  table += [R.rule("encoder/cls", "cls_token"),
            R.rule((), "pos_embed", "sincos_table", width=spec.width, grid=grid)]
  for i in range(spec.depth):
    table += R.block(f"encoder/transformer/block{i}", f"blocks.{i}", BLOCK)
  table += R.layernorm("encoder/transformer/norm", "norm")
  if num_classes:
    table.append(R.rule((), ("head.weight", "head.bias"), "trunc_normal_head",
                        num_classes=int(num_classes), width=spec.width, std=HEAD_STD,
                        seed=int(head_seed)))
  return table


def timm_architecture(model_kwargs: Mapping[str, Any], image_size: int) -> str | None:
  """The timm model name whose defaults equal this encoder at this image size, if there is one."""
  spec = vit.decode_variant(common.arch_kwargs(model_kwargs)["variant"])
  size = _TIMM_SIZE.get((spec.width, spec.depth, spec.heads))
  name = f"vit_{size}_patch{spec.patch}_{image_size}"
  return name if size and name in _TIMM_NAMES else None


def timm_model_args(model_kwargs: Mapping[str, Any], image_size: int,
                    num_classes: int = 0) -> dict[str, Any]:
  """`VisionTransformer(**args)` builds the model the timm state dict loads into (strictly)."""
  spec = vit.decode_variant(common.arch_kwargs(model_kwargs)["variant"])
  common.grid_of(model_kwargs, image_size)
  return dict(img_size=int(image_size), patch_size=spec.patch, in_chans=common.CHANNELS,
              num_classes=int(num_classes), global_pool="token", class_token=True,
              embed_dim=spec.width, depth=spec.depth, num_heads=spec.heads,
              mlp_ratio=spec.mlp_dim / spec.width, qkv_bias=True, no_embed_class=False,
              pre_norm=False, final_norm=True, fc_norm=False)


def timm_config(model_kwargs: Mapping[str, Any], image_size: int,
                num_classes: int = 0) -> dict[str, Any]:
  """timm's hub/local-dir `config.json` schema: architecture, num_classes, pretrained_cfg, model_args."""
  args = timm_model_args(model_kwargs, image_size, num_classes)
  return {
      "architecture": timm_architecture(model_kwargs, image_size) or _GENERIC_NAME,
      "num_classes": args["num_classes"],
      "num_features": args["embed_dim"],
      "global_pool": args["global_pool"],
      "model_args": args,
      "pretrained_cfg": {
          "input_size": [common.CHANNELS, args["img_size"], args["img_size"]],
          "fixed_input_size": True,
          "interpolation": "bicubic",
          "crop_pct": 1.0,
          "mean": list(IMAGENET_MEAN),
          "std": list(IMAGENET_STD),
          "num_classes": args["num_classes"],
          "first_conv": "patch_embed.proj",
          "classifier": "head",
      },
      "mimjax": {"variant": common.arch_kwargs(model_kwargs)["variant"],
                 "version": common.mimjax_version()},
  }


def to_timm_state_dict(params, model_kwargs: Mapping[str, Any], image_size: int = 224,
                       num_classes: int = 0, head_seed: int = 0) -> dict[str, np.ndarray]:
  """mimjax params (MAE or LUT; only `encoder` is used) -> timm VisionTransformer state dict.

  Values are float32 numpy arrays (wrap with `torch.from_numpy` to load them).
  """
  table = timm_rules(model_kwargs, image_size, num_classes, head_seed)
  shapes = common.expected_shapes(model_kwargs, image_size, SCOPE)
  return R.to_torch(table, common.flatten(params), SCOPE, shapes)


def save_timm(params, model_kwargs: Mapping[str, Any], out_dir: str, num_classes: int = 0,
              image_size: int = 224, head_seed: int = 0) -> str:
  """Writes `out_dir/model.safetensors` and `out_dir/config.json` for timm; returns `out_dir`."""
  state = to_timm_state_dict(params, model_kwargs, image_size, num_classes, head_seed)
  config = timm_config(model_kwargs, image_size, num_classes)
  common.save_safetensors(state, storage.join(out_dir, common.WEIGHTS_FILE), {
      "layout": "timm.VisionTransformer", "producer": "mimjax.export",
      "mimjax_version": common.mimjax_version(), "variant": config["mimjax"]["variant"],
      "image_size": image_size, "num_classes": num_classes})
  common.save_json(config, storage.join(out_dir, common.CONFIG_FILE))
  return out_dir
