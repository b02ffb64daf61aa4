"""The auth state a client holds: creds saving (throttle, backup), the key store
(write log, cache, transactions), restore."""
