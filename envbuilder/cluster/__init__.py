"""Running jobs on a cluster (`envbuilder submit`): Slurm, Kubernetes and SkyPilot, tracked like local runs.

profiles (pure)    named cluster profiles from the user config, validated
spec (pure)        ClusterJob: the run's layout (from envbuilder.run.spec) plus resources and the GPU check
slurm (pure)       the sbatch script, and the parsers of squeue / scontrol / sacct output
kubernetes (pure)  the batch/v1 Job manifest
skypilot (pure)    the SkyPilot task
text (pure)        YAML (or JSON) text of a manifest
engines            the engines' commands and clients: submit, state, cancel (I/O through envbuilder.proc)
submit             submit_job(): profile -> image -> render -> submit -> a `queued` run
metrics            cluster runs' metrics from the local runs' channels ($ENVBUILDER_METRICS, prefixed lines, log)
track              the runs on clusters settled from the engines: status, logs, metrics, stop
"""
