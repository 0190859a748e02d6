"""The hardware table, checked by hand against the vendors' data sheets and the Cloud TPU docs:
chips' peaks and memory, and TPU slices' chips, hosts and names."""
import pytest

from mimjax import hardware


@pytest.mark.parametrize("kind,name,bf16,fp32,hbm", [
    ("TPU v4", "TPU v4", 275e12, 275e12, 32 * 2 ** 30),
    ("TPU v5 lite", "TPU v5e", 197e12, 197e12, 16 * 2 ** 30),
    ("TPU v5", "TPU v5p", 459e12, 459e12, 95 * 2 ** 30),
    ("TPU v6 lite", "TPU v6e", 918e12, 918e12, 32 * 2 ** 30),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312e12, 156e12, 40e9),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312e12, 156e12, 80e9),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12, 494.7e12, 80e9),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756e12, 378e12, 80e9),
    ("NVIDIA H200", "H200", 989e12, 494.7e12, 141e9),
])
def test_chip_table(kind, name, bf16, fp32, hbm):
  spec = hardware.chip(kind)
  assert (spec.name, spec.hbm_bytes) == (name, hbm)
  assert spec.peak_flops("bfloat16") == pytest.approx(bf16)
  assert spec.peak_flops("float32") == pytest.approx(fp32)


def test_unknown_kinds_have_no_peak():
  assert hardware.chip("cpu") is None and hardware.chip("NVIDIA GeForce GTX 1080") is None


@pytest.mark.parametrize("accelerator_type,chips,hosts,per_host,shape", [
    ("v5litepod-1", 1, 1, 1, (1, 1)), ("v5litepod-8", 8, 1, 8, (2, 4)),
    ("v5litepod-16", 16, 4, 4, (4, 4)), ("v6e-8", 8, 1, 8, (2, 4)), ("v6e-256", 256, 64, 4, (16, 16)),
    ("v4-8", 4, 1, 4, (2, 2, 1)), ("v4-32", 16, 4, 4, (2, 2, 4)), ("v5p-16", 8, 2, 4, (2, 2, 2)),
    # v4-1536 is 8x8x12: no power of two, so no standard shape, but its hosts are known.
    ("v4-1536", 768, 192, 4, None),
])
def test_gcloud_slices(accelerator_type, chips, hosts, per_host, shape):
  s = hardware.gcloud_slice(accelerator_type)
  assert (s.num_chips, s.hosts, s.devices_per_host, s.shape) == (chips, hosts, per_host, shape)
  assert s.gcloud_name == accelerator_type


def test_each_name_in_its_own_form_and_counts_no_slice_has():
  assert hardware.gcloud_slice("v5e-16") is None and hardware.jax_slice("v5litepod:4x4") is None
  assert hardware.jax_slice("v5p:2x4x4") == hardware.gcloud_slice("v5p-64")
  with pytest.raises(hardware.SliceError, match="not a whole number of 4-chip hosts"):
    hardware.gcloud_slice("v4-10")  # 5 chips
  with pytest.raises(hardware.SliceError, match="two per chip"):
    hardware.gcloud_slice("v5p-7")
