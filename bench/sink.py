# Counts a Content-Length request body without keeping it and answers "received N" (for bench/large-bodies.sh).
import sys
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
while True:
    c,_=s.accept(); data=b""
    while b"\r\n\r\n" not in data: data+=c.recv(65536)
    head,rest=data.split(b"\r\n\r\n",1)
    n=int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    got=len(rest)
    while got<n:
        chunk=c.recv(1<<20)
        if not chunk: break
        got+=len(chunk)
    body=b"received %d\n"%got
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"%len(body)+body); c.close()
