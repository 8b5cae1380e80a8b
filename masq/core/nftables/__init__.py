"""The nftables dataplane: ``table`` (decision -> the one table the agent owns), ``codec``
(model -> nft batch text, nft JSON listing -> model), ``plan`` (element-level ops, and a
model of the kernel applying them), ``evaluate`` (first-match with set lookups),
``traffic`` (per-CIDR counters from set elements), all pure."""
