r"""The by-op table of a jax.profiler trace: where a step's time goes, top ops first.

  python benchmarks/top_ops.py TRACE_DIR [--top 25]

TRACE_DIR is what `benchmarks/train_step.py --profile_dir`, `config.profile` (WORKDIR/profile)
or any `jax.profiler.trace` wrote; every `*.xplane.pb` under it is read. Each XLA op's events
are summed over the threads and devices that ran them: on a CPU XLA's threads (`tf_XLAEigen`,
`tf_XLAPjRtCpuClient` lines), on a GPU or TPU the device planes' `XLA Ops` line. Printed per
op: total milliseconds, share of all op time and number of events; then the same summed by kind
(the op name's stem: `ynn_fusion.12` -> `ynn_fusion`). On a CPU, ops overlap (an op's own
threads are not traced apart from it), so the shares say where time goes, not how busy the
cores were. Reads traces with jax.profiler.ProfileData, as the tests do (no TensorFlow).
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import re

from jax import profiler


def is_op_line(plane_name: str, line_name: str) -> bool:
  """Lines whose events are XLA ops: the CPU's XLA threads (its workers, and the client's own
  thread, which runs small programs inline), an accelerator's op line."""
  if plane_name == "/host:CPU":
    return line_name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient"))
  return plane_name.startswith("/device:") and line_name == "XLA Ops"


def read_planes(trace_dir: str) -> list:
  files = sorted(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
  if not files:
    raise SystemExit(f"top_ops: error: no *.xplane.pb under {trace_dir}: pass the folder a "
                     "jax.profiler trace was written to")
  return [plane for path in files
          for plane in profiler.ProfileData.from_serialized_xspace(path.read_bytes()).planes]


def op_times(planes) -> dict[str, list[float]]:
  """op name -> [total nanoseconds, event count], over every op line of every plane."""
  totals = collections.defaultdict(lambda: [0.0, 0])
  for plane in planes:
    for line in plane.lines:
      if not is_op_line(plane.name, line.name):
        continue
      for event in line.events:
        if "::" in event.name:  # the runtime's own spans (ThunkExecutor::Execute) enclose the ops
          continue
        entry = totals[event.name]
        entry[0] += event.duration_ns
        entry[1] += 1
  return totals


def kind_of(name: str) -> str:
  """The op's stem: 'ynn_fusion.12' -> 'ynn_fusion', 'convolution.3' -> 'convolution'."""
  return re.sub(r"[._]\d+$", "", name)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("trace_dir")
  parser.add_argument("--top", type=int, default=25, help="ops to list (default 25)")
  args = parser.parse_args()
  if args.top < 1:
    parser.error("--top must be at least 1")
  totals = op_times(read_planes(args.trace_dir))
  if not totals:
    raise SystemExit(f"top_ops: error: the trace under {args.trace_dir} has no XLA op events")
  all_ns = sum(t for t, _ in totals.values())
  by_kind = collections.Counter()
  for name, (ns, _) in totals.items():
    by_kind[kind_of(name)] += ns
  print(f"{len(totals)} ops, {all_ns / 1e6:.1f} ms of op time in all (summed over threads)")
  print(f"{'ms':>10} {'share':>6} {'events':>7}  op")
  for name, (ns, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
    print(f"{ns / 1e6:10.1f} {ns / all_ns:6.1%} {count:7d}  {name}")
  print("\nby kind:")
  for kind, ns in by_kind.most_common(10):
    print(f"{ns / 1e6:10.1f} {ns / all_ns:6.1%}  {kind}")


if __name__ == "__main__":
  main()
