"""What every command runs on: processes and collectives (distributed), precision, checkpoints,
coordinated stopping, seeding, and the code's provenance. Imports nothing else of the pipeline
but the architectures (a checkpoint's generator)."""
