"""The experiment layer: what runs agents over envs and records it.

The search loop (:mod:`.search`) and its command line (:mod:`.runner`), the run folder
(:mod:`.run_folder`), the depth curriculum, the incumbent rule, the Ray backends
(:mod:`.distributed`) and the tools: ``nasrl-compare`` (:mod:`.compare`), ``nasrl-agent-bench``
(:mod:`.agent_bench`), ``nasrl-tabulate`` (:mod:`.tabulate`) and ``nasrl-train-final`` (:mod:`.final`).
Nothing under :mod:`nas_env` or the agents' own modules imports from here.
"""
