"""The cost dashboard: what the router cost, what it saved, and the newest requests, live."""
