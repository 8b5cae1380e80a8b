"""The iptables dataplane: ``rules`` (decision -> Ruleset), ``codec`` (Ruleset <-> iptables
text), ``plan`` (observed -> ops, and a model of the kernel applying them), ``evaluate``
(first-match reading), ``traffic`` (per-CIDR counters), all pure."""
