"""Fault torture: a seeded, randomized soak of the real agent, judged by real packets.

A schedule derived only from a seed and a duration (``schedule``) interleaves ConfigMap
swaps (some of them broken), SIGKILLs, a second agent on the same chain or table,
kube-proxy-like writers churning their own nat chains and (nftables) their own nft table,
and the faults each dataplane has (``dataplane``: a held xtables lock, restores or nft
batches that fail transiently).  A prober in the pod namespace sends one new UDP flow
every few milliseconds; what each destination saw is judged against a model of the config
(``checker``), as are snapshots of the node's tables and every exit of the agent.

Run alone: ``python -m tests.soak --seconds 120 --seed 7 --backend nft`` (or
``--dataplane nftables``; as root, from the repository root); in the suite:
``scripts/test.sh`` stage ``soak`` (marker ``soak``).
"""
