"""The encoder as a timm `VisionTransformer` (class token, LN eps 1e-6, qkv bias).

Only the `encoder` subtree is exported (a LUT's `projector`/`predictor`, the MAE decoder and any other
top-level key are ignored). The fixed sin-cos table is written as timm's `pos_embed` (a fine-tuned
classifier's trained table, `encoder/pos_embed`, where it has one). With
`num_classes=K` a fresh head is written (weight ~ trunc-normal std 2e-5, seeded; bias 0), as MAE
fine-tuning initializes it.

`global_pool='token'` classifies the [CLS] token after the final norm. `global_pool='avg'` is the
fine-tuning layout of both papers: the mean of the patch tokens, through a fresh `fc_norm`
(weight 1, bias 0), the pre-trained final norm dropped. A fine-tuned classifier (params with a
`head`, see mimjax.models.classifier) exports its own head, and fc_norm or final norm.

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


GLOBAL_POOLS = ("token", "avg")


def _check_pool(global_pool: str):
  if global_pool not in GLOBAL_POOLS:
    raise R.ConversionError(f"global_pool={global_pool!r}: use one of {GLOBAL_POOLS}")


def timm_rules(model_kwargs: Mapping[str, Any], image_size: int, num_classes: int = 0,
               head_seed: int = 0, global_pool: str = "token",
               fine_tuned: bool = False, learned_pos: bool = False) -> list[R.Rule]:
  """The table for timm's VisionTransformer, generated for the variant's depth.

  `fine_tuned`: the params are a classifier's (no final norm; `fc_norm` and `head` trained).
  `learned_pos`: they hold a trained position embedding, `encoder/pos_embed` (else the fixed
  table is written).
  """
  _check_pool(global_pool)
  kwargs = common.arch_kwargs(model_kwargs)
  spec = vit.decode_variant(kwargs["variant"])
  grid = common.grid_of(kwargs, image_size)
  table = R.conv("encoder/patch_embed", "patch_embed.proj")
  table += [R.rule("encoder/cls", "cls_token"), R.pos_embed("pos_embed", spec.width, grid,
                                                            learned_pos)]
  for i in range(spec.depth):
    table += R.block(f"encoder/transformer/block{i}", f"blocks.{i}", BLOCK)
  if fine_tuned:
    if global_pool == "avg":
      return table + R.layernorm("fc_norm", "fc_norm") + R.dense("head", "head")
    return table + R.layernorm("encoder/transformer/norm", "norm") + R.dense("head", "head")
  if global_pool == "avg":
    table += [R.rule(("encoder/transformer/norm/scale", "encoder/transformer/norm/bias"), (),
                     "drop"),
              R.rule((), ("fc_norm.weight", "fc_norm.bias"), "fresh_layernorm", width=spec.width)]
  else:
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
                    num_classes: int = 0, global_pool: str = "token") -> dict[str, Any]:
  """`VisionTransformer(**args)` builds the model the timm state dict loads into (strictly)."""
  _check_pool(global_pool)
  spec = vit.decode_variant(common.arch_kwargs(model_kwargs)["variant"])
  common.grid_of(model_kwargs, image_size)
  # With fc_norm, timm's final `norm` is an Identity: the pooled tokens go through fc_norm.
  return dict(img_size=int(image_size), patch_size=spec.patch, in_chans=common.CHANNELS,
              num_classes=int(num_classes), global_pool=global_pool, class_token=True,
              embed_dim=spec.width, depth=spec.depth, num_heads=spec.heads,
              mlp_ratio=spec.mlp_dim / spec.width, qkv_bias=True, no_embed_class=False,
              pre_norm=False, final_norm=True, fc_norm=global_pool == "avg")


def timm_config(model_kwargs: Mapping[str, Any], image_size: int,
                num_classes: int = 0, global_pool: str = "token") -> dict[str, Any]:
  """timm's hub/local-dir `config.json` schema: architecture, num_classes, pretrained_cfg, model_args."""
  args = timm_model_args(model_kwargs, image_size, num_classes, global_pool)
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


def is_classifier(params) -> bool:
  """Whether `params` are a fine-tuned classifier's (a trained head; fc_norm if global pool)."""
  return "head" in params and "encoder" in params


def classifier_pool(params) -> str:
  return "avg" if "fc_norm" in params else "token"


def to_timm_state_dict(params, model_kwargs: Mapping[str, Any], image_size: int = 224,
                       num_classes: int = 0, head_seed: int = 0,
                       global_pool: str = "token") -> dict[str, np.ndarray]:
  """mimjax params (MAE or LUT; only `encoder` is used) -> timm VisionTransformer state dict.

  A fine-tuned classifier's params export as global_pool='avg' with their own fc_norm and head
  (`num_classes` is then theirs). Values are float32 numpy arrays (`torch.from_numpy` loads them).
  """
  if is_classifier(params):
    table = timm_rules(model_kwargs, image_size, global_pool=classifier_pool(params),
                       fine_tuned=True,
                       learned_pos=common.has_learned_pos(params, model_kwargs, image_size))
    return R.to_torch(table, common.flatten(params), ("encoder", "fc_norm", "head"))
  table = timm_rules(model_kwargs, image_size, num_classes, head_seed, global_pool)
  shapes = common.expected_shapes(model_kwargs, image_size, SCOPE)
  return R.to_torch(table, common.flatten(params), SCOPE, shapes)


def save_timm(params, model_kwargs: Mapping[str, Any], out_dir: str, num_classes: int = 0,
              image_size: int = 224, head_seed: int = 0, global_pool: str = "token") -> str:
  """Writes `out_dir/model.safetensors` and `out_dir/config.json` for timm; returns `out_dir`."""
  if is_classifier(params):
    global_pool, num_classes = classifier_pool(params), int(params["head"]["bias"].shape[0])
  state = to_timm_state_dict(params, model_kwargs, image_size, num_classes, head_seed,
                             global_pool)
  config = timm_config(model_kwargs, image_size, num_classes, global_pool)
  common.save_safetensors(state, storage.join(out_dir, common.WEIGHTS_FILE), {
      "layout": "timm.VisionTransformer", "producer": "mimjax.export",
      "mimjax_version": common.mimjax_version(), "variant": config["mimjax"]["variant"],
      "image_size": image_size, "num_classes": num_classes})
  common.save_json(config, storage.join(out_dir, common.CONFIG_FILE))
  return out_dir
