"""Slurm as a target that schedules by itself: cible writes an sbatch script for a job's attempt
(`script.render`), submits it with `sbatch --parsable`, and reads what Slurm says of it from
`squeue`, `scontrol show job` and, where accounting is on, `sacct` (`commands`). Slurm queues and
places the job; cible maps Slurm's states onto its own (`commands.verdict`)."""
