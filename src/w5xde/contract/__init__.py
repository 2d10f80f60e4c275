"""The worker↔operator contract: the report a worker serves, how it is authenticated,
the ports and environment names, and the one fold of reports into cluster figures.

The operator, the worker and `w5xde local` all import these; nothing here talks to
the network or the API server.
"""
