"""Generated protobuf and gRPC modules of the ``eventrouter.v1`` contract.

Everything here except this file and ``py.typed`` is produced by ``make gen``
from ``protos/eventrouter/v1``; do not edit it by hand.
"""
