"""The stages of a run, each declared next to its code (name, upstream, inputs, outputs):
``data`` → ``svf`` → ``probe`` / ``probe:activation`` → ``inject:<method>`` → ``eval``.
:mod:`.engine` decides what is done, :mod:`.opening` what a new command may reuse."""
