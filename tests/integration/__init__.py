"""Real-network tests: the agent in network namespaces, real iptables, real packets."""
