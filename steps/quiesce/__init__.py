"""Quiescing applications: hook templates rendered per target, the hook runtimes that hold them, the
engine that freezes many targets with a guaranteed release, and the consistency verdict.

Modules: :mod:`.hook_specs` (templates/hooks → hook specs), :mod:`.hooks` (session, paired and prepare
hooks over a runner), :mod:`.engine` (freeze all / check / release all, deadline), :mod:`.verdict`
(timeline and verdict), :mod:`.cut` (the consistent point: freeze → cut → check → release in one
process), :mod:`.hold` (freeze's hold until a signal, a release file or the deadline),
:mod:`.postgresql` (what a restore does with a stored backup_label). Commands: ``freeze``, ``thaw``,
``consistent-point``.
"""
