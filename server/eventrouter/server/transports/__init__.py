"""The protocols the server speaks, each a thin adapter over ``eventrouter.server.handlers``.

grpc_aio.py   native gRPC (HTTP/2), the grpc.aio server
"""
