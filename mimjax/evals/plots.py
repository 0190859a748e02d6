"""Figures of mimjax-analyze (matplotlib, Agg backend: no display needed).

Each function takes the per-model results of `analysis_runner.analyze_model` ({name: result}) and
writes one PNG.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _layers_plot(ax, results, key, ylabel):
  for (name, r), colour in zip(results.items(), _COLOURS):
    values = np.asarray(r[key])  # (layers, heads)
    layers = np.arange(1, len(values) + 1)
    for h in range(values.shape[1]):
      ax.scatter(layers, values[:, h], s=12, color=colour, alpha=0.5)
    ax.plot(layers, values.mean(1), color=colour, label=name)
  ax.set_xlabel("layer")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_ylabel(ylabel)
  ax.legend()


def _spectrum_plot(ax, results):
  for (name, r), colour in zip(results.items(), _COLOURS):
    s = np.asarray(r["singular_values"])
    s = s[s > 1e-12]  # drop the numerically zero tail (LayerNorm removes one direction)
    ax.semilogy(np.arange(1, len(s) + 1), s, color=colour,
                label=f"{name} (effective rank {r['effective_rank']:.1f})")
  ax.set_xlabel("singular value index")
  ax.set_ylabel("normalized singular value")
  ax.legend()


def comparison(results, path):
  """The LUT paper's two comparisons: attention distance per layer and head, and the spectrum."""
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
  _layers_plot(a, results, "attention_distance", "mean attention distance (px)")
  a.set_title("attention distance (dots: heads)")
  _spectrum_plot(b, results)
  b.set_title("singular values of pooled features")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def entropy(results, path):
  fig, ax = plt.subplots(figsize=(5, 3.8))
  _layers_plot(ax, results, "attention_entropy", "attention entropy (nats)")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def token_norms(results, path):
  """Per model and layer: median, 99th percentile and max patch-token norm; cls and registers."""
  fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.5), squeeze=False)
  for ax, (name, r) in zip(axes[0], results.items()):
    stats = r["token_norms"]
    layers = np.arange(1, len(stats) + 1)
    for key, style in (("patch_median", "-"), ("patch_p99", "--"), ("patch_max", ":")):
      ax.plot(layers, [s[key] for s in stats], style, color="k", label=key.replace("_", " "))
    ax.plot(layers, [s["cls"] for s in stats], "o-", color="tab:red", label="cls")
    if "registers" in stats[0]:
      ax.plot(layers, [s["registers"] for s in stats], "s-", color="tab:green",
              label="registers")
    ax.set_title(f"{name}: token norms")
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def attention_maps(name, result, path):
  """Rows: images; columns: the chosen heads' cls attention over the patches, overlaid."""
  images, maps, heads = result["images"], result["maps"], result["heads"]
  n, cols = len(images), len(heads)
  fig, axes = plt.subplots(n, cols + 1, figsize=(1.6 * (cols + 1), 1.6 * n), squeeze=False)
  for i in range(n):
    axes[i, 0].imshow(images[i])
    for j, (layer, head) in enumerate(heads):
      m = maps[i, j]
      up = np.kron(m, np.ones((images.shape[1] // m.shape[0], images.shape[2] // m.shape[1])))
      axes[i, j + 1].imshow(images[i])
      axes[i, j + 1].imshow(up, cmap="inferno", alpha=0.6)
      if i == 0:
        axes[i, j + 1].set_title(f"L{layer} H{head}", fontsize=8)
  for ax in axes.ravel():
    ax.axis("off")
  fig.suptitle(f"{name}: cls attention", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
