"""The daemon as parts with one job each, wired together by :mod:`ivr.daemon.server` (see docs/architecture.md).

Nothing is imported here, so a part (or the simulator, or the queue handoff) can import another part without
pulling in the whole daemon.
"""
