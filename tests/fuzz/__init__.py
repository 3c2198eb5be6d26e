"""Property-based fuzzing (hypothesis) of what users send jobctl: Job files and resources, requests to a
running Job, Deployment Target files, and `jobctl` arguments. Each entry point runs at least
JOBCTL_FUZZ_CASES cases (default 1,000); see profile.py."""
