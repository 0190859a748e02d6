r"""The README's "before you pay" table: mimjax-compile over recipes x TPU slices.

  python benchmarks/compile_table.py --out compile_table.jsonl \
      --methods mae,lut --variants B/16,L/16,H/14 --topologies v5litepod-16,v5p-32,v6e-16

For each cell it runs `python -m mimjax.compile` with the published recipe (batch 4096) in
bfloat16, first replicated (fsdp=1), then with fsdp over the whole slice, then with remat as
well, and stops at the first that fits. Each run's JSON report is appended to --out (a run can
be resumed: cells already there are skipped); the markdown table is printed at the end.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from mimjax import topology as topology_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ladder(num_devices: int):
  yield {"mesh.fsdp": 1}
  yield {"mesh.fsdp": num_devices, "mesh.data": 1}
  yield {"mesh.fsdp": num_devices, "mesh.data": 1, "model.remat": True}


def run_one(method, variant, topology, overrides, extra):
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, "report.json")
    cmd = [sys.executable, "-m", "mimjax.compile",
           f"--config={ROOT}/configs/{method}.py:variant={variant}", f"--topology={topology}",
           f"--report={report}", *extra,
           *[f"--config.{k}={v}" for k, v in overrides.items()]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    print(proc.stdout, flush=True)
    if proc.returncode not in (0, 1):
      raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(report) as f:
      return json.load(f)


def table(rows) -> str:
  out = ["| method | variant | slice | fits | mesh / remat | memory per chip (GiB) "
         "| GFLOP per image: model | XLA's program |",
         "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    mesh = f"fsdp={r['mesh']['fsdp']}" + (", remat" if r["remat"] else "")
    flops = f"{r['flops_per_example'] / 1e9:.0f}" if "flops_per_example" in r else "-"
    xla = (f"{r['xla_flops_per_device_step'] * r['num_devices'] / r['batch_size'] / 1e9:.0f}"
           if r.get("xla_flops_per_device_step") else "-")
    memory = r["peak_memory_bytes_per_device"] / 2 ** 30
    memory = f"{memory:.1f} of {r['hbm_bytes_per_device'] / 2 ** 30:g}"
    if not r["compiled"]:
      memory = f">= {memory}"
    out.append(f"| {r['method'].upper()} | {r['variant']} | {r['topology'].split()[-1].strip('()')}"
               f" | {'yes' if r['fits'] else 'no'} | {mesh} | {memory} | {flops} | {xla} |")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--methods", default="mae,lut")
  parser.add_argument("--variants", default="B/16,L/16,H/14")
  parser.add_argument("--topologies", default="v5litepod-16,v5p-32,v6e-16")
  args, extra = parser.parse_known_args()
  done = []
  if os.path.exists(args.out):
    with open(args.out) as f:
      done = [json.loads(line) for line in f if line.strip()]
  for topology in args.topologies.split(","):
    for method in args.methods.split(","):
      for variant in args.variants.split(","):
        cell = [r for r in done if (r["method"], r["variant"], r["cell"]) ==
                (method, variant, topology)]
        if cell and (cell[-1]["fits"] or len(cell) == 3):
          continue
        chips = topology_lib.parse(topology).num_chips
        for overrides in list(ladder(chips))[len(cell):]:
          r = run_one(method, variant, topology, overrides, extra)
          r["cell"] = topology
          with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
          done.append(r)
          if r["fits"]:
            break
  final = []
  for r in done:  # the last try of each cell
    final = [x for x in final if (x["method"], x["variant"], x["cell"]) !=
             (r["method"], r["variant"], r["cell"])] + [r]
  print(table(final))


if __name__ == "__main__":
  main()
