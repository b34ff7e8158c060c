"""The sandbox that runs a submitted model: the parent side (`runner`) and the child process
(`worker`, started as ``python -m mmbench.evaluation.sandbox.worker``)."""
