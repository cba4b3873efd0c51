"""The routing core: connections, filters, registry, queues, history.

Nothing in this package imports grpc, so it can be embedded in any Python
process and tested without sockets.
"""
