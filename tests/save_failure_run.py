"""mimjax-train (`python -m tests.save_failure_run FLAGS...`) whose steps last as long as a save.

Each step first waits for the checkpoint save under way to end (complete or failed): a save then
ends within the step after the one that started it, as when steps are slower than saves, so that
"the run stops within two steps of a failed save" is a statement about the trainer, not about
how fast the storage fails on a busy machine. Nothing else changes: the real CLI, the real
orbax saves to the real (broken) storage.
"""
import sys
import time

from mimjax import checkpoint
from mimjax import input_wait
from mimjax import main as cli

_checkpointers = []
_save = checkpoint.Checkpointer.save
_next = input_wait.InputWaitClock.next


def _remembering_save(self, *args, **kwargs):
  _checkpointers[:] = [self]
  return _save(self, *args, **kwargs)


def _next_after_saves(self, batches):
  for ckpt in _checkpointers:
    while ckpt._manager.is_saving_in_progress():  # pylint: disable=protected-access
      time.sleep(0.01)
  return _next(self, batches)


if __name__ == "__main__":
  checkpoint.Checkpointer.save = _remembering_save
  input_wait.InputWaitClock.next = _next_after_saves
  sys.argv[0] = "mimjax-train"
  cli.main()
