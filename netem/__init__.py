"""A link emulator for loopback: delay, bandwidth limit and cut connections, in a TCP proxy.

`tc netem` is missing from these kernels, so the edge talks to the cloud through this proxy
instead. It also counts the bytes that really cross the link, to check the byte accounting.
"""

from netem.proxy import LinkEmulator, LinkProfile, LinkStats

__all__ = ["LinkEmulator", "LinkProfile", "LinkStats"]
