"""The netns test's servers and clients.

    endpoints.py serve ADDRESS PORT      TCP and UDP on ADDRESS:PORT; each
                                         connection or datagram is answered
                                         with "ADDRESS PEER_ADDRESS"
    endpoints.py connect HOST PORT N [tcp|udp]
                                         N connections (or datagrams), one
                                         line each: the answer, "refused" or
                                         "timeout", then the seconds it took
"""
import socket
import sys
import threading
import time


def serve(address, port):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))

    def answer_udp():
        while True:
            _, peer = udp.recvfrom(512)
            udp.sendto(f"{address} {peer[0]}\n".encode(), peer)

    threading.Thread(target=answer_udp, daemon=True).start()
    while True:
        connection, peer = tcp.accept()
        connection.sendall(f"{address} {peer[0]}\n".encode())
        connection.close()


def connect(host, port, count, protocol):
    for _ in range(count):
        started = time.monotonic()
        try:
            if protocol == "udp":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.settimeout(2)
                sock.sendto(b"hello", (host, port))
                answer = sock.recvfrom(512)[0].decode().strip()
            else:
                sock = socket.create_connection((host, port), timeout=2)
                answer = sock.makefile().readline().strip()
            sock.close()
        except ConnectionRefusedError:
            answer = "refused"
        except (socket.timeout, TimeoutError):
            answer = "timeout"
        except OSError as error:
            answer = f"error {error.errno}"
        print(f"{answer} {time.monotonic() - started:.3f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        protocol = sys.argv[5] if len(sys.argv) > 5 else "tcp"
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), protocol)
