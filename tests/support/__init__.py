"""What several test modules (and the benchmarks) share: a virtual clock, test data, fault set-up.

- :mod:`.clock`: an event loop whose clock jumps to the next timer, for timing tests
  that must not depend on how busy the machine is.
- :mod:`.creds`: the small creds document the auth-state tests save.
- :mod:`.faulty`: a real store whose writes fail or wait on demand (the key-log tests).
- :mod:`.faults`: finding the local PostgreSQL cluster that fault tests restart.
"""
