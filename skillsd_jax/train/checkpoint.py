"""Checkpoints that resume: orbax for the train state, with the loop's host state and the skill bank.

Saved together per iteration N:
  - `<dir>/<N>/state`: the `TrainState` (step, params, optimizer, teacher params, RNG, skip counter);
  - `<dir>/<N>/extras`: JSON host state (iteration, task iterator, credit tracker, counters);
  - `<dir>/skill_bank/<N>.sqlite`: a consistent snapshot of the skill bank, written BEFORE the orbax
    save starts, so every complete checkpoint has its bank.

Restore order (see `Trainer.restore`): config checks -> model graphdef -> abstract state and shardings
-> orbax state (placed directly with its shardings) -> skill bank file replaced by the snapshot ->
task iterator and credit state -> continue at iteration N + 1.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint directory is unusable (missing pieces, mismatched shapes)."""


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.bank_dir = os.path.join(self.directory, "skill_bank")
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, iteration: int, state: Any, extras: dict[str, Any], bank: Any | None = None) -> None:
        if bank is not None:
            os.makedirs(self.bank_dir, exist_ok=True)
            bank.snapshot(self.bank_path(iteration))
        self.manager.save(iteration, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             extras=ocp.args.JsonSave(extras)))
        self._prune_bank_snapshots()

    def bank_path(self, iteration: int) -> str:
        return os.path.join(self.bank_dir, f"{iteration}.sqlite")

    def restore(self, iteration: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """The state (placed with the shardings in `abstract_state`'s ShapeDtypeStructs) and extras."""
        try:
            out = self.manager.restore(iteration, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), extras=ocp.args.JsonRestore()))
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint {iteration} in {self.directory} is incomplete: {e}") from None
        except ValueError as e:  # orbax reports structure/shape mismatches as ValueError
            raise CheckpointError(f"checkpoint {iteration} in {self.directory} does not match this config "
                                  f"(model or optimizer changed?): {e}") from None
        return out["state"], dict(out["extras"])

    def restore_params(self, iteration: int, abstract_params: Any) -> Any:
        """Only the policy parameters of checkpoint `iteration` (evaluation, export): no optimizer or
        teacher state is read, so the optimizer settings of the run need not be known."""
        try:
            out = self.manager.restore(iteration, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item={"params": abstract_params}, partial_restore=True,
                                             restore_args=ocp.checkpoint_utils.construct_restore_args(
                                                 {"params": abstract_params}))))
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint {iteration} in {self.directory} is incomplete: {e}") from None
        except ValueError as e:
            raise CheckpointError(f"the parameters of checkpoint {iteration} in {self.directory} do not match "
                                  f"this model config: {e}") from None
        return out["state"]["params"]

    def restore_bank_file(self, iteration: int, live_path: str) -> None:
        """Replaces the live bank file by the snapshot of `iteration` (the bank must be closed)."""
        snap = self.bank_path(iteration)
        if not os.path.exists(snap):
            raise CheckpointError(f"checkpoint {iteration} has no skill-bank snapshot at {snap}")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(live_path + suffix):
                os.remove(live_path + suffix)
        shutil.copyfile(snap, live_path)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _prune_bank_snapshots(self) -> None:
        if not os.path.isdir(self.bank_dir) or jax.process_index() != 0:
            return
        keep = set(self.manager.all_steps())
        for name in os.listdir(self.bank_dir):
            stem = name.split(".")[0]
            if stem.isdigit() and int(stem) not in keep and name.endswith(".sqlite"):
                # The snapshot of a save still in flight is kept: it is the newest.
                if int(stem) < max(keep, default=0):
                    os.remove(os.path.join(self.bank_dir, name))
