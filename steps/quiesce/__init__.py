"""Quiescing applications: hook templates rendered per target, the hook runtimes that hold them, the
engine that freezes many targets with a guaranteed release, and the consistency verdict.

Modules: :mod:`.render` (templates/hooks → hook specs), :mod:`.hooks` (session, paired and prepare
hooks over a runner), :mod:`.engine` (freeze all / check / release all, deadline), :mod:`.verdict`
(timeline and verdict), :mod:`.consistent_point` (freeze → cut → check → release in one process),
:mod:`.postgresql` (what a restore does with a stored backup_label). Commands: ``freeze``, ``thaw``,
``consistent-point``.
"""
