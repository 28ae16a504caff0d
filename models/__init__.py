"""Records, normalisation and hashing: pure code with no I/O, shared by every agent."""
