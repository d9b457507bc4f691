#!/usr/bin/env python3
"""Opens N idle TCP connections to HOST:PORT and prints the growth of PID's resident memory.

    idle_connections.py HOST:PORT N PID
"""
import socket, sys, time, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
addr = sys.argv[1].rsplit(":",1); n=int(sys.argv[2]); pid=sys.argv[3]
def rss(): 
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
before=rss(); socks=[]
for i in range(n):
    s=socket.create_connection((addr[0],int(addr[1]))); socks.append(s)
time.sleep(2)
after=rss()
print(f"{n} idle connections: RSS {before} KiB -> {after} KiB, {(after-before)*1024/n:.0f} bytes each")
