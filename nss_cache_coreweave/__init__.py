"""CoreWeave IAM (SCIM 2.0) source for nsscache.

Data flows one way, one module per stage:

    config   nsscache.conf options (one table, OPTIONS) -> one frozen Config
    scim     HTTP: pagination, retry policy, page checks         (fetch)
    snapshot one consistent set of users and groups per run
    policy   allow-list, activity, validation                    -> Directory
    render   Directory -> nsscache maps, each headed by the run marker (marker)

    run      one run per process: fetch -> decide -> guard (shrink) -> record (state, report)
    source   the nsscache Source adapter (name "coreweave") over run
    cli      the operator's commands (update, check, preview, status, slurm-sync, publish) over run

Many nodes, one listing (docs/many-nodes.md):

    publish  list once, decide, guard, write a signed bundle (bundle: the files and manifest,
             sshsig: OpenSSH SSHSIG signatures) into a directory served as static files
    mirror   a node's fetch of that bundle instead of IAM (conditional, verified, kept);
             then policy.narrow (the node's own rules) -> render, as above

    convert  convert-config: a configuration of CoreWeave's nsscache fork -> ours
    errors   the exception tree; each error carries its fields
    redact   the bearer token out of every log line (ours and nsscache's)
    sshkeys  SSH public keys from IAM: parsed and checked with cryptography (policy)
    keys     the sshd AuthorizedKeysCommand; keycache is its stdlib-only lookup
             (sshd_path: may sshd run it safely?)
    slurm    slurm-sync: Slurm accounting from the same Directory
    install  is the source registered with the Python that runs nsscache?

This file imports nothing so that the registration hook stays cheap.
"""

__version__ = "0.1.0"
