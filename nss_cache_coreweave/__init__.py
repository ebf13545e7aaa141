"""CoreWeave IAM (SCIM 2.0) source for nsscache.

Data flows one way, one module per stage:

    config   nsscache.conf options -> one frozen Config
    scim     HTTP: pagination, retries, page checks        (fetch)
    snapshot one consistent set of users and groups per run
    policy   allow-list, activity, validation              -> Directory
    render   Directory -> nsscache maps, each headed by the run marker (marker)
    source   the nsscache Source adapter (name "coreweave")
    cli      the operator's commands (update, check, preview, status, slurm-sync)
    redact   the bearer token out of every log line (ours and nsscache's)
    keys     the sshd AuthorizedKeysCommand (sshd_path: may sshd run it safely?)
    slurm    slurm-sync: Slurm accounting from the same Directory

This file imports nothing so that the registration hook stays cheap.
"""

__version__ = "0.1.0"
