"""The pure core: every decision the agent makes, as functions of values (no I/O).

Internal: import the public API from ``masq``; module paths here may change.

The pipeline, one module a step (data flows one way)::

    file text --plain.load---------------> plain values        (JSON, or YAML: yaml_reader)
    plain values --fragment--------------> Fragment            (one file, validated)
    Fragments --merge.merge--------------> Merged              (MasqConfig + conflicts)
    MasqConfig --decision.decide---------> FamilyDecision      (per family; dataplane-neutral)
    FamilyDecision --iptables.rules------> Ruleset             (the chain and its jump)
    kernel listing --iptables.codec------> Ruleset             (what the agent owns now)
    (desired, observed) --iptables.plan--> ops                 (minimal, ordered)
    ops --iptables.codec.render_restore--> restore script      (one transaction)

The nftables dataplane is the same shape, beside it::

    MasqConfig --nftables.table.desired_table--> NftTable      (sets + chains, both families)
    nft -j listing --nftables.codec------------> NftTable      (elements with counters)
    (desired, observed) --nftables.plan.plan---> NftOps        (element-level, deletes first)
    NftOps --nftables.codec.render_batch-------> nft batch     (one transaction)

Beside them: ``addresses`` (CIDR/IP parsing and order), ``duration`` (Go
durations), ``nat`` (--to-ports and random-fully), ``names`` (chain names),
``config`` (the effective config and its defaults), ``traffic`` (kernel counters),
``explain`` (why one address is or is not masqueraded), ``errors`` (the one input
error type).  A dataplane is a subpackage (``iptables/``, ``nftables/``) holding its
builder, codec and planner.

Expected input errors come back as ``returns`` ``Failure`` values carrying a
``ConfigError``; an exception from this package is a bug in its caller or in it.
"""
