"""Hot patching on a real machine (TARGET=ssh://, labgrid:): the QEMU guest's attach job
(:mod:`kedr_build.vm.attachrun`) run over the machine path.

The job, its files and its judgment are the QEMU guest's: the plain module loaded
(an in-tree one modprobed from the machine's own /lib/modules, or attached to as
it is when it is already loaded, and then left loaded), the workload, attach.sh,
the window, detach.sh --unload, the workload again, the unload. How it gets there
is the sweep's (:class:`~kedr_build.targets.trials.MachineGuest`): the machine's
release checked against both modules' vermagic and its taint before anything is
copied (a tainted machine power-cycled once where it can be, else refused), the
files in one tar stream, the output and the status apart, ``dmesg`` since the job's
mark read as the guest's console, and afterwards the machine left as found (our
modules and the in-tree one the job loaded unloaded, the directory removed). A job
that ends without a status (a crash, a hang, a link that broke) is followed by a
power cycle where the target has a power driver (labgrid), else by the cleanup it
allows, and the report says which.

No fault is injected (FAULTS= applies to ``run`` only), so no consent is asked
for (targets/spec.py's I_KNOW_THIS_MAY_CRASH): attaching registers a kprobe per
site, all or none, after reading that each site is the expected call, and never
writes kernel text itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.targets.machine import TAINT_BEFORE, lost_word
from kedr_build.targets.spec import Target
from kedr_build.targets.trials import MachineGuest, machine_guest
from kedr_build.vm.attachrun import AttachReport, attach_job, conclude_attach

if TYPE_CHECKING:
    from kedr_build.intercept.attach import AttachResult


def attach_on_machine(target: Target, ssh_config: Path | None, prepared: AttachResult,
                      ko: Path, intree: bool, logdir: Path, workload: Path | None,
                      timeout: float) -> AttachReport:
    """Attach to the driver on the machine of ``target`` as :func:`run_attach` does in
    the VM; the report adds the machine's part (taint, power cycles, left as found)."""
    guest = machine_guest(target, ssh_config)
    job = attach_job(prepared, ko, intree, logdir, workload)
    try:
        result = guest.run(job, logdir, timeout, lambda line: None)
    except KedrError as e:
        # A copy that failed (a full disk) or a machine that stopped answering: the one
        # line says how the machine was left too. (Refused before copying: nothing to
        # clean, the machine untouched.)
        if not guest.checked:
            raise
        left = guest.close()
        raise KedrError(f"{e} ({left or 'the machine was left as found'})") from None
    lost = ""
    if result.status is None:
        lost = lost_word(result)
        why = guest.recover()
        if not why and guest.restarts is not None:
            guest.done[-1] = (f"{lost}: power-cycled through {guest.power}, its kernel "
                              "checked again")
        left = why or guest.close()
    else:
        left = guest.close()
    report = conclude_attach(prepared, result, logdir)
    status = (logdir / "status.log").read_text(errors="replace").splitlines()
    before = next((int(ln[len(TAINT_BEFORE):]) for ln in status
                   if ln.startswith(TAINT_BEFORE) and ln[len(TAINT_BEFORE):].isdigit()), None)
    report = dataclasses.replace(report, machine=str(guest.conn), taint_before=before,
                                 taint=_taint(guest), power_cycles=list(guest.done),
                                 left_as_found=left)
    if lost:
        # After the runner's words (the pack's checks read them: attachkind.judge).
        report = dataclasses.replace(report, reason=f"{report.reason}; TARGET={guest.conn}: "
                                                    f"{lost} ({result.lost_why})")
    write_atomic(logdir / "result.json", report.to_json().encode())
    return report


def _taint(guest: MachineGuest) -> int | None:
    """/proc/sys/kernel/tainted now (None when the machine does not answer)."""
    try:
        text = guest.conn.check("cat /proc/sys/kernel/tainted", "reading its taint").strip()
    except KedrError:
        return None
    return int(text) if text.isdigit() else None
